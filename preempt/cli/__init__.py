"""The ``preempt`` command line: thin wrappers that parse, call the library and print.

Exit codes: 0 ok, 1 an error (some file failed), 2 usage, 3 verification found a non-robust image.
Tables and progress go to stderr; ``--json`` output goes to stdout.
"""
from __future__ import annotations

import sys

import typer

from ..errors import EXIT_ERROR, EXIT_OK, EXIT_USAGE
from .common import mapped, report_error, state

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Preemptive robustification of photos against adversarial man-in-the-middle attacks.")


def _version(value: bool) -> None:
    if value:
        from ..version import __version__

        print(f"preempt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    state.debug = debug


# the commands register after the app exists
from . import export as _export  # noqa: E402
from . import merge as _merge  # noqa: E402
from . import models as _models  # noqa: E402
from . import robustify as _robustify  # noqa: E402
from . import train as _train  # noqa: E402
from . import verify as _verify  # noqa: E402
from .bench import bench_app  # noqa: E402

app.command("robustify")(mapped(_robustify.robustify_cmd))
app.command("verify")(mapped(_verify.verify_cmd))
app.command("models")(mapped(_models.models_cmd))
app.command("train")(mapped(_train.train_cmd))
app.command("export")(mapped(_export.export_cmd))
app.command("merge")(mapped(_merge.merge_cmd))
app.add_typer(bench_app, name="bench")


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt  # `kill` (SIGTERM) ends a run as Ctrl-C does: finished photos reported, then exit 130


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminated)
    try:  # Ctrl-C: typer exits 130 itself; robustify reports what it finished first (common.interrupted_exit)
        app(standalone_mode=True)
    except Exception as e:
        if state.debug:
            raise
        report_error(f"internal error: {type(e).__name__}: {e} (run with --debug for the traceback)")
        sys.exit(EXIT_ERROR)


__all__ = ["app", "main", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE"]
