"""Budgets as people write them: ``1/255``, ``4/255``, ``0.5/255``, ``0.1``, ``1.5``.

``parse_budget`` reads a plain float or a fraction ``A/B`` (A and B plain numbers, B > 0) and refuses
anything else with one line; ``format_budget`` writes a budget back the way it was most likely meant:
``k/255`` when it is a whole or half number of 8-bit levels, else the plain number.
"""
from __future__ import annotations

import math

from .errors import UsageError


def parse_budget(text: str | float | int) -> float:
    """``"1/255"`` → 0.00392…, ``"0.1"`` → 0.1; ValueError (one line) for anything else."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip()
        num, sep, den = s.partition("/")
        try:
            value = float(num) / float(den) if sep else float(s)
        except ZeroDivisionError:
            raise UsageError(f"{s!r}: the denominator is 0") from None
        except ValueError:
            raise UsageError(f"{s!r} is not a budget: write a number (0.1) or a fraction (4/255)") from None
    if not (math.isfinite(value) and value >= 0):
        raise UsageError(f"{text!r}: a budget must be a finite number >= 0")
    return value


def format_budget(value: float) -> str:
    """0.00392… → ``"1/255"``, 0.00196… → ``"0.5/255"``, 0.1 → ``"0.1"``."""
    levels = value * 255
    for step in (1.0, 0.5):
        k = round(levels / step) * step
        if k > 0 and abs(levels - k) < 1e-6 and not _plain_short(value):
            return f"{k:g}/255"
    return f"{value:g}"


def _plain_short(value: float) -> bool:
    """True for values that read better as they are (0.1, 1.5, 2: not a multiple of 1/255 by intent)."""
    return len(f"{value:g}") <= 4
