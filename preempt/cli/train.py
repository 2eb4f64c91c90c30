"""``preempt train``: the training code behind the bundled weights."""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Literal

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .common import EXIT_USAGE, budget_option, err_console, fail, pick_device, print_json


def train_cmd(
    method: str = typer.Option("standard", "--method", "-m",
                               help="preempt | pgd-at | fast-at | free-at | fgsm | gaussian | standard "
                               "(classifiers); magnet | defense-gan (the defenses' networks, see --classifier)"),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the weights (.safetensors) and card (.json)."),
    dataset: str = typer.Option("fashion-mnist", help="fashion-mnist | cifar10 | folder"),
    data: str | None = typer.Option(None, help="Dataset folder (default: Debian's Fashion-MNIST files)."),
    norm: str = typer.Option("linf", help="linf | l2"),
    eps: float = budget_option(0.1, "Attack budget ε used while training."),
    delta: float | None = budget_option(None, "Robustification budget δ (preempt; default ε)."),
    steps: int = typer.Option(10, help="Attack steps while training (pgd-at, preempt)."),
    step_size: float | None = typer.Option(None, help="Attack step size (default ε/4; fast-at 1.25ε)."),
    delta_steps: int = typer.Option(2, help="preempt: descent steps that find x̂_r."),
    preempt_direction: str = typer.Option("descent", help="preempt: descent (the paper) or ascent (reference code)."),
    sigma: float = typer.Option(0.25, help="gaussian: noise σ."),
    replays: int = typer.Option(4, help="free-at: minibatch replays."),
    epochs: int = typer.Option(5),
    batch_size: int = typer.Option(128),
    lr: float = typer.Option(0.05),
    schedule: Literal["cosine", "constant", "step"] = typer.Option("cosine", help="cosine | constant | step (×0.1 at "
                                                                  "50% and 75% of the epochs, as in Rice et al. 2020)."),
    curve_size: int = typer.Option(0, min=0, help="Log clean and robust accuracy of the first N training and N test "
                                                  "images every epoch (robust overfitting's learning curves)."),
    arch: str = typer.Option("cnn"),
    width: int = typer.Option(32),
    early_stop: bool = typer.Option(False, help="Keep the epoch with the best robust validation accuracy."),
    attack_bn: str = typer.Option("train", help="BatchNorm mode while crafting training attacks: train | eval."),
    image_size: int = typer.Option(32, help="ImageFolder: resize images to this."),
    channels: int = typer.Option(3, help="ImageFolder: 1 (grey) or 3 (colour)."),
    limit: int | None = typer.Option(None, help="Train on the first N images only."),
    labelled: int | None = typer.Option(None, min=1, help="Keep the labels of the first N training images only (D, "
                                        "as --limit N picks them); the rest get --pseudo-labeller's labels "
                                        "(adversarial training with unlabelled data)."),
    unlabelled: int | None = typer.Option(None, min=0, help="With --labelled: use at most M unlabelled images."),
    pseudo_labeller: str | None = typer.Option(None, help="With --labelled: the model (name or file), trained on D "
                                               "alone (--method standard --limit N), whose predictions label the rest."),
    val_size: int = typer.Option(2000),
    seed: int = typer.Option(0),
    threads: int | None = typer.Option(None, help="CPU threads."),
    run_dir: Path | None = typer.Option(None, help="Checkpoints and log.jsonl (default: <out>.run/)."),
    resume: bool = typer.Option(False, help="Continue from run_dir/checkpoint.pt."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    json_out: bool = typer.Option(False, "--json", help="Print the history as JSON on stdout."),
    classifier: str = typer.Option("fmnist-standard", help="magnet / defense-gan: the bundled classifier defended."),
    noise: float = typer.Option(0.1, help="magnet: denoising noise σ of the auto-encoder."),
    fpr: float = typer.Option(0.01, help="magnet: detector false-positive rate on held-out clean images."),
    temperature: float = typer.Option(10.0, help="magnet: softmax temperature T of the divergence (JSD) detector."),
    recalibrate: bool = typer.Option(False, help="magnet: only recompute the detectors' thresholds of the weights "
                                                 "at --out (on the validation split they were trained with)."),
    z_dim: int = typer.Option(64, help="defense-gan: latent dimension."),
) -> None:
    """Train a classifier (preemptively robust, adversarial baselines, or standard)."""
    from ..data import DataError
    from ..models import ModelError
    from ..train import METHODS, TrainConfig, train
    from ..train.generative import GENERATIVE, DefenseTrainConfig, train_defense

    if method not in METHODS + GENERATIVE:
        fail(f"--method {method}: choose one of {', '.join(METHODS + GENERATIVE)}", EXIT_USAGE)
    argv = sys.argv[sys.argv.index("train") + 1:] if "train" in sys.argv else None
    command = "preempt train " + " ".join(shlex.quote(a) for a in argv) if argv is not None else None
    if recalibrate:
        if method != "magnet":
            fail("--recalibrate: only with --method magnet", EXIT_USAGE)
        from ..train.generative import recalibrate_magnet

        try:
            card = recalibrate_magnet(out, temperature=temperature, fpr=fpr, data=data, command=command)
        except (DataError, ModelError, ValueError, OSError, KeyError) as e:
            fail(f"{out}: {e}", exc=e)
        det, jsd = card["detector"], card["jsd_detector"]
        err_console.print(f"recalibrated {Path(out).with_suffix('.json')}: ℓ1 error > {det['threshold']:.4g}, "
                          f"JSD (T={jsd['temperature']:g}) > {jsd['threshold']:.4g} at {100 * fpr:g}% false positives "
                          f"on {det['n_val']} held-out images")
        if json_out:
            print_json(card)
        return
    if method in GENERATIVE:
        gcfg = DefenseTrainConfig(method=method, classifier=classifier, dataset=dataset, data=data, epochs=epochs,
                                  batch_size=batch_size, lr=None if lr == 0.05 else lr, noise=noise, fpr=fpr,
                                  jsd_temperature=temperature,
                                  width=None if width == 32 else width, z_dim=z_dim, val_size=val_size, limit=limit,
                                  seed=seed, threads=threads, device=pick_device(device))

        def show(rec: dict) -> None:
            if rec.get("end_of_epoch"):
                err_console.print(f"epoch {rec['epoch']}: loss={rec['loss']:.4f}  ({rec['seconds']:.0f}s)")

        try:
            card = train_defense(gcfg, out=out, run_dir=run_dir or Path(str(out) + ".run"), resume=resume,
                                 command=command, on_step=show)
        except (DataError, ModelError, ValueError, OSError) as e:
            fail(str(e), exc=e)
        err_console.print(f"wrote {out} and {Path(out).with_suffix('.json')} ({card['training']['wall_time_s']:.0f}s)")
        if json_out:
            print_json(card)
        return
    try:
        cfg = TrainConfig(method=method, dataset=dataset, data=data, arch=arch, width=width, norm=norm, eps=eps,
                          delta=delta, steps=steps, step_size=step_size, delta_steps=delta_steps,
                          preempt_direction=preempt_direction, sigma=sigma, replays=replays, epochs=epochs,
                          batch_size=batch_size, lr=lr, schedule=schedule, early_stop=early_stop, limit=limit,
                          labelled=labelled, unlabelled=unlabelled, pseudo_labeller=pseudo_labeller,
                          image_size=image_size, channels=channels, attack_bn=attack_bn,
                          val_size=val_size, curve_size=curve_size, seed=seed, threads=threads, device=pick_device(device))
    except ValueError as e:
        fail(str(e), EXIT_USAGE, exc=e)
    quiet = os.environ.get("RANK", "0") != "0"  # under torchrun only rank 0 reports
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), console=err_console, transient=False, disable=quiet) as bar:
        task = bar.add_task(f"{method} epoch 1/{epochs}", total=None, info="")

        def on_step(rec: dict) -> None:
            if quiet:
                return
            if rec.get("end_of_epoch"):
                vals = "  ".join(f"{k}={v:.3f}" for k, v in rec.items() if k.startswith("val_"))
                bar.console.print(f"epoch {rec['epoch']}: loss={rec['loss']:.4f}  {vals}  ({rec['seconds']:.0f}s)")
                return
            bar.update(task, description=f"{method} epoch {rec['epoch']}/{epochs}", completed=rec["batch"],
                       total=rec["batches"], info=f"loss {rec['loss']:.4f}")

        try:
            res = train(cfg, run_dir=run_dir or Path(str(out) + ".run"), out=out, resume=resume,
                        command=command, on_step=on_step)
        except (DataError, ModelError, ValueError, OSError) as e:
            fail(str(e), exc=e)
    if quiet:
        return
    err_console.print(f"wrote {out} and {Path(out).with_suffix('.json')} ({res.seconds:.0f}s)")
    if json_out:
        print_json({"out": str(out), "history": res.history, "seconds": res.seconds})
