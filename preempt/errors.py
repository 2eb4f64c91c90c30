"""The one error type preempt reports to a person: :class:`PreemptError`, carrying its exit code.

The library raises it (or a subclass) with a message that names the file or the setting and the cause;
the command line maps it once (``preempt.cli.common.mapped``): one line on stderr, the exit code, a traceback
only with ``--debug``.  Anything else that escapes is an internal error (exit 1)."""
from __future__ import annotations

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_ROBUST = 0, 1, 2, 3


class PreemptError(Exception):
    """Something a person can act on: a file that cannot be read, a model not found (exit 1)."""

    exit_code: int = EXIT_ERROR


class UsageError(PreemptError, ValueError):
    """A setting that cannot run or cannot mean what it says (exit 2); a ValueError too, for the library's callers."""

    exit_code = EXIT_USAGE
