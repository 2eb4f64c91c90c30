"""Helpers shared by the commands: consoles, devices, error lines."""
from __future__ import annotations

import json
import sys
import traceback
from dataclasses import dataclass
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_ROBUST = 0, 1, 2, 3
err_console = Console(stderr=True)


@dataclass
class _State:
    debug: bool = False


state = _State()


def fail(message: str, code: int = EXIT_ERROR, exc: BaseException | None = None) -> NoReturn:
    """Print one line (a traceback too with --debug) and exit."""
    if state.debug and exc is not None:
        traceback.print_exception(exc, file=sys.stderr)
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def report_error(message: str, exc: BaseException | None = None, console: Console | None = None) -> None:
    """One line on stderr (never wrapped), a traceback first with --debug."""
    if state.debug and exc is not None:
        traceback.print_exception(exc, file=sys.stderr)
    (console or err_console).print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda: no CUDA device is available", EXIT_USAGE)
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        fail(f"--device {device}: choose auto, cpu or cuda", EXIT_USAGE)
    return device


def load_model_or_fail(name: str | None, device: str):
    from ..models import ModelError, load_model

    try:
        return load_model(name, device=device)
    except ModelError as e:
        fail(str(e), EXIT_ERROR, e)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def model_and_budgets(model: str | None, device: str, norm: str | None, eps: float | None,
                      delta: float | None = None):
    """Load the model on the chosen device and fill norm, ε and δ from its card where not given.
    Returns (device, model, norm, eps, delta)."""
    dev = pick_device(device)
    clf = load_model_or_fail(model, dev)
    tm = clf.card.get("threat_model", {})
    norm = norm or tm.get("norm", "linf")
    if norm not in ("linf", "l2"):
        fail(f"--norm {norm}: choose linf or l2", EXIT_USAGE)
    delta = delta if delta is not None else tm.get("delta", tm.get("eps", 0.1))
    eps = eps if eps is not None else tm.get("eps", delta)
    if delta < 0 or eps < 0:
        fail("--delta and --eps must be >= 0", EXIT_USAGE)
    return dev, clf, norm, eps, delta
