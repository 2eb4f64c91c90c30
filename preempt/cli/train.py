"""``preempt train``: the training code behind the bundled weights."""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import PreemptError, UsageError
from ..train.config import TrainConfig
from ..train.generative import DefenseTrainConfig
from ..vocab import Norm, Schedule
from .common import budget_option, err_console, pick_device, print_json

# options whose help does not fit on one line of the signature
MethodOpt = Annotated[str, typer.Option("--method", "-m", help="preempt | pgd-at | fast-at | free-at | fgsm | gaussian | "
                                        "standard (classifiers); magnet | defense-gan (the defenses' networks, see "
                                        "--classifier)")]
ScheduleOpt = Annotated[Schedule, typer.Option(
    help="cosine | constant | step (×0.1 at 50% and 75% of the epochs, as in Rice et al. 2020).")]
CurveOpt = Annotated[int, typer.Option(min=0, help="Log clean and robust accuracy of the first N training and N test "
                                                   "images every epoch (robust overfitting's learning curves).")]
LabelledOpt = Annotated[int | None, typer.Option(min=1, help="Keep the labels of the first N training images only (D, "
                                                 "as --limit N picks them); the rest get --pseudo-labeller's labels "
                                                 "(adversarial training with unlabelled data).")]
LabellerOpt = Annotated[str | None, typer.Option(help="With --labelled: the model (name or file), trained on D alone "
                                                 "(--method standard --limit N), whose predictions label the rest.")]
RecalibrateOpt = Annotated[bool, typer.Option(help="magnet: only recompute the detectors' thresholds of the weights at "
                                                   "--out (on the validation split they were trained with).")]
PreemptDirOpt = Annotated[str, typer.Option(help="preempt: descent (the paper) or ascent (reference code).")]


_T = TrainConfig()  # the library's defaults are the CLI's: declared once, in TrainConfig
_G = DefenseTrainConfig()  # and in DefenseTrainConfig for the defenses' networks


def train_cmd(
    method: MethodOpt = _T.method,
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the weights (.safetensors) and card (.json)."),
    dataset: str = typer.Option(_T.dataset, help="fashion-mnist | cifar10 | folder"),
    data: str | None = typer.Option(None, help="Dataset folder (default: Debian's Fashion-MNIST files)."),
    norm: Norm = typer.Option(_T.norm, help="linf | l2"),
    eps: float = budget_option(_T.eps, "Attack budget ε used while training."),
    delta: float | None = budget_option(None, "Robustification budget δ (preempt; default ε)."),
    steps: int = typer.Option(_T.steps, help="Attack steps while training (pgd-at, preempt)."),
    step_size: float | None = typer.Option(None, help="Attack step size (default ε/4; fast-at 1.25ε)."),
    delta_steps: int = typer.Option(_T.delta_steps, help="preempt: descent steps that find x̂_r."),
    preempt_direction: PreemptDirOpt = _T.preempt_direction,
    sigma: float = typer.Option(_T.sigma, help="gaussian: noise σ."),
    replays: int = typer.Option(_T.replays, help="free-at: minibatch replays."),
    epochs: int | None = typer.Option(None, min=1, help=f"Default: {_T.epochs} (classifiers), {_G.epochs} (magnet, defense-gan)."),
    batch_size: int = typer.Option(_T.batch_size),
    lr: float | None = typer.Option(None, help=f"Learning rate. Default: {_T.lr} (classifiers), the method's (magnet 1e-3, "
                                     "defense-gan 2e-4)."),
    schedule: ScheduleOpt = _T.schedule,  # type: ignore[assignment]
    curve_size: CurveOpt = _T.curve_size,
    arch: str = typer.Option(_T.arch),
    width: int | None = typer.Option(None, help=f"Channels. Default: {_T.width} (classifiers), the method's (magnet 3, defense-gan 256)."),
    early_stop: bool = typer.Option(_T.early_stop, help="Keep the epoch with the best robust validation accuracy."),
    attack_bn: str = typer.Option(_T.attack_bn, help="BatchNorm mode while crafting training attacks: train | eval."),
    image_size: int = typer.Option(_T.image_size, help="ImageFolder: resize images to this."),
    channels: int = typer.Option(_T.channels, help="ImageFolder: 1 (grey) or 3 (colour)."),
    limit: int | None = typer.Option(None, help="Train on the first N images only."),
    labelled: LabelledOpt = None,
    unlabelled: int | None = typer.Option(None, min=0, help="With --labelled: use at most M unlabelled images."),
    pseudo_labeller: LabellerOpt = None,
    val_size: int = typer.Option(_T.val_size),
    seed: int = typer.Option(_T.seed),
    threads: int | None = typer.Option(None, help="CPU threads."),
    run_dir: Path | None = typer.Option(None, help="Checkpoints and log.jsonl (default: <out>.run/)."),
    resume: bool = typer.Option(False, help="Continue from run_dir/checkpoint.pt."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    json_out: bool = typer.Option(False, "--json", help="Print the history as JSON on stdout."),
    classifier: str = typer.Option(_G.classifier, help="magnet / defense-gan: the bundled classifier defended."),
    noise: float = typer.Option(_G.noise, help="magnet: denoising noise σ of the auto-encoder."),
    fpr: float = typer.Option(_G.fpr, help="magnet: detector false-positive rate on held-out clean images."),
    temperature: float = typer.Option(_G.jsd_temperature, help="magnet: softmax temperature T of the divergence (JSD) detector."),
    recalibrate: RecalibrateOpt = False,
    z_dim: int = typer.Option(_G.z_dim, help="defense-gan: latent dimension."),
) -> None:
    """Train a classifier (preemptively robust, adversarial baselines, or standard)."""
    from ..train import METHODS
    from ..train.generative import GENERATIVE

    o = SimpleNamespace(**locals())
    if method not in METHODS + GENERATIVE:
        raise UsageError(f"--method {method}: choose one of {', '.join(METHODS + GENERATIVE)}")
    argv = sys.argv[sys.argv.index("train") + 1:] if "train" in sys.argv else None
    o.command = "preempt train " + " ".join(shlex.quote(a) for a in argv) if argv is not None else None
    if recalibrate:
        _recalibrate(o)
    elif method in GENERATIVE:
        _train_defense(o)
    else:
        _train_classifier(o)


def _recalibrate(o: SimpleNamespace) -> None:
    from ..train.generative import recalibrate_magnet

    if o.method != "magnet":
        raise UsageError("--recalibrate: only with --method magnet")
    try:
        card = recalibrate_magnet(o.out, temperature=o.temperature, fpr=o.fpr, data=o.data, command=o.command)
    except (PreemptError, OSError, KeyError) as e:
        raise PreemptError(f"{o.out}: {e}") from e
    det, jsd = card["detector"], card["jsd_detector"]
    err_console.print(f"recalibrated {Path(o.out).with_suffix('.json')}: ℓ1 error > {det['threshold']:.4g}, "
                      f"JSD (T={jsd['temperature']:g}) > {jsd['threshold']:.4g} at {100 * o.fpr:g}% false positives "
                      f"on {det['n_val']} held-out images")
    if o.json_out:
        print_json(card)


def _train_defense(o: SimpleNamespace) -> None:
    from ..train.generative import DefenseTrainConfig, train_defense

    given = {k: v for k, v in dict(epochs=o.epochs, lr=o.lr, width=o.width).items() if v is not None}
    gcfg = DefenseTrainConfig(method=o.method, classifier=o.classifier, dataset=o.dataset, data=o.data,
                              batch_size=o.batch_size, noise=o.noise, fpr=o.fpr, jsd_temperature=o.temperature,
                              z_dim=o.z_dim, val_size=o.val_size, limit=o.limit, seed=o.seed, threads=o.threads,
                              device=pick_device(o.device), **given)

    def show(rec: dict) -> None:
        if rec.get("end_of_epoch"):
            err_console.print(f"epoch {rec['epoch']}: loss={rec['loss']:.4f}  ({rec['seconds']:.0f}s)")

    try:
        card = train_defense(gcfg, out=o.out, run_dir=o.run_dir or Path(str(o.out) + ".run"), resume=o.resume,
                             command=o.command, on_step=show)
    except OSError as e:
        raise PreemptError(str(e)) from e
    err_console.print(f"wrote {o.out} and {Path(o.out).with_suffix('.json')} ({card['training']['wall_time_s']:.0f}s)")
    if o.json_out:
        print_json(card)


def _train_classifier(o: SimpleNamespace) -> None:
    from dataclasses import fields

    from ..train import TrainConfig, train

    known = {f.name for f in fields(TrainConfig)} - {"device"}
    cfg = TrainConfig(**{k: v for k, v in vars(o).items() if k in known and v is not None}, device=pick_device(o.device))
    quiet = os.environ.get("RANK", "0") != "0"  # under torchrun only rank 0 reports
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), console=err_console, transient=False, disable=quiet) as bar:
        task = bar.add_task(f"{o.method} epoch 1/{cfg.epochs}", total=None, info="")

        def on_step(rec: dict) -> None:
            if quiet:
                return
            if rec.get("end_of_epoch"):
                vals = "  ".join(f"{k}={v:.3f}" for k, v in rec.items() if k.startswith("val_"))
                bar.console.print(f"epoch {rec['epoch']}: loss={rec['loss']:.4f}  {vals}  ({rec['seconds']:.0f}s)")
                return
            bar.update(task, description=f"{o.method} epoch {rec['epoch']}/{cfg.epochs}", completed=rec["batch"],
                       total=rec["batches"], info=f"loss {rec['loss']:.4f}")

        try:
            res = train(cfg, run_dir=o.run_dir or Path(str(o.out) + ".run"), out=o.out, resume=o.resume,
                        command=o.command, on_step=on_step)
        except OSError as e:
            raise PreemptError(str(e)) from e
    if quiet:
        return
    err_console.print(f"wrote {o.out} and {Path(o.out).with_suffix('.json')} ({res.seconds:.0f}s)")
    if o.json_out:
        print_json({"out": str(o.out), "history": res.history, "seconds": res.seconds})
