"""``preempt robustify``: robustified copies of photos, judged as saved."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..algorithms.robustify import RobustifyConfig
from ..errors import EXIT_ERROR, EXIT_NOT_ROBUST, EXIT_OK, PreemptError, UsageError
from ..models.protocol import Model
from ..vocab import BudgetMap, CheckPreset, Format, Goal, Init, InnerLoss, LoopPrecision, Norm, Resolution, Retry
from .common import (
    CardOpt,
    ChannelsOpt,
    InputSizeOpt,
    MeanOpt,
    ModelSpec,
    PolicyOpt,
    ResizeSizeOpt,
    SaveJsonOpt,
    ShardOpt,
    StdOpt,
    WeightsOpt,
    budget_option,
    colour_notice,
    err_console,
    interrupted_exit,
    load_named,
    model_and_budgets,
    print_json,
    report_error,
    resolve_shard,
    save_json,
    share_exit,
    state,
)
from .tables import summary_table

# options whose help does not fit on one line of the signature
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder; NAME.ext becomes OUT/[sub-folders/]NAME.robust.png.")]
ModelsOpt = Annotated[list[str] | None, typer.Option(
    "--model", "-m", help="Bundled name (preempt models; default efficientnet-lite0), torchvision:NAME, or a model file. "
    "Repeat it to be robust for several models at once (--model efficientnet-lite0 --model efficientnet-lite1): the other "
    "flags describe the first.")]
InnerStepsOpt = Annotated[int | None, typer.Option(
    help="Steps of the unrolled inner attack (T; default 10, or what the model card recommends).")]
CheckOpt = Annotated[CheckPreset | None, typer.Option(
    help="What decides 'robust' (default: the model card's, else strong; with the APGD-T targets the card recommends; "
         "the ImageNet cards name strong-once with 9 targets): strong = PGD-20 "
         "twice, then APGD-CE and APGD-T from 2 random starts; strong-once = APGD from one start; thorough = "
         "AutoAttack's 100 APGD iterations and 9 targets; pgd = one PGD-20. It steers the loop; the final verdict "
         "decides 'robust' (docs/cli.md).")]
SettleOpt = Annotated[int | None, typer.Option(
    min=0, help="Outer steps more after a photo first passes its check, then checked again (kept only if it passes "
    "too; the ImageNet cards leave that second check to the final verdict, the first photo judged where it breaks "
    "the later one): a deeper point for more passes (default: 0, or the card's). --settle 30 runs every step of "
    "--steps 30.")]
GiveUpOpt = Annotated[int | None, typer.Option(
    min=0, help="A photo whose inner attack never failed in its first N outer steps stops there, not robust; with "
    "--max-delta it moves on to the next δ, and the last δ runs in full (0: never; default: the card's).")]
FinalSlackOpt = Annotated[float | None, typer.Option(
    min=0, help="Logits the final verdict's attacks must leave between a photo and a wrong label for 'robust' (a "
    "photo they bring nearer is not robust: another start would likely cross). Default: 0, or the card's (0.5).")]
LoopPrecisionOpt = Annotated[LoopPrecision | None, typer.Option(
    help="margin-mt: the attackers' passes in bfloat16 where the CPU or GPU runs it natively (else float32); the "
         "check that decides 'robust' always runs in float32. Default: float32, or the model card's.")]
LeastChangeOpt = Annotated[bool | None, typer.Option(
    "--least-change/--no-least-change", help="Write the least change (ℓ2) with the same model input: what the "
    "model's resize discards is dropped, for a higher PSNR and the same verdict (ℓ∞, one model; default: the card's).")]
InnerLossOpt = Annotated[InnerLoss | None, typer.Option(
    help="The inner attack: ce (the paper's unrolled PGD), ce+dlr-t (every other outer step AutoAttack's targeted DLR "
         "towards the 3 likeliest wrong classes), margin-mt (persistent attackers on the --inner-targets likeliest wrong "
         "classes, for standard classifiers). Default: ce, or the model card's.")]
RetryOpt = Annotated[Retry, typer.Option(
    help="rmsprop: photos the loop could not verify run once more with the reference code's tanh-box RMSprop (ℓ∞; "
         "photos robustified at full resolution).")]
InitOpt = Annotated[Init, typer.Option(
    help="Start: auto (what the model card recommends, else original), original, descent or random.")]
GoalOpt = Annotated[Goal, typer.Option(
    help="least-visible: once verified, shrink the change while it stays robust (a few more checks).")]
WhereOpt = Annotated[Resolution, typer.Option(
    help="Where robustify works: auto/model = at the model's input resolution, lifted to the photo (fast for large "
         "photos); full = every pass on every pixel (the reference path).")]
CheckWhereOpt = Annotated[Resolution | None, typer.Option(
    help="Where the loop's check attacks: full = the file's own pixels (what an attacker who edits the file reaches; "
         "what preempt verify and the final verdict attack); model = the model input over the image of the ε-ball "
         "(a larger, stricter ball); auto = model for photos the model resizes. Default: --resolution's, or the card's.")]
SurviveOpt = Annotated[str | None, typer.Option(
    help="Stay robust through what a service does to uploads, e.g. 'jpeg:75-95,resize:1080,2048' or 'worst' "
         "(expectation over these in the loss; the check runs them through the real codec). Works on the photo's own "
         "pixels.")]
FormatOpt = Annotated[Format, typer.Option(
    "--format", help="auto: JPEG for JPEG inputs when --survive includes jpeg (at the highest quality robustified for), "
    "else PNG; png: lossless; jpeg: kept inside δ or reported over-budget, verified again as decoded.")]
QualityOpt = Annotated[int | None, typer.Option(
    min=1, max=100, help="JPEG quality (default: the highest in --survive, else 95).")]
SigmaOpt = Annotated[float | None, typer.Option(
    "--smoothing-sigma", help="Robustify the randomized-smoothing classifier with Gaussian noise σ (loss averaged over "
    "--noise-samples draws).")]
BudgetMapOpt = Annotated[BudgetMap, typer.Option(
    help="Where δ may be spent, pixel by pixel (ℓ∞, photos robustified on their own pixels): taper = fading to nothing "
         "at the edge of what the model sees (no crop rectangle); taper+jnd = also less on smooth areas, where a change "
         "shows first; uniform = δ everywhere the model looks.")]
BatchOpt = Annotated[int, typer.Option(
    help="Photos of the same size robustified together (and at most 2 megapixels of photos per batch: seven 512×512 "
         "photos, one 12 MP photo).")]


_D = RobustifyConfig()  # the library's defaults are the CLI's: declared once, in RobustifyConfig


def robustify_cmd(
    paths: list[Path] = typer.Argument(..., help="Photos and/or folders (walked for images)."),
    out: OutOpt = Path("robustified"),
    model: ModelsOpt = None,
    weights: WeightsOpt = None,
    card: CardOpt = None,
    input_size: InputSizeOpt = None,
    resize_policy: PolicyOpt = None,
    resize_size: ResizeSizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    channels: ChannelsOpt = None,
    norm: Norm | None = typer.Option(None, help="linf | l2 (default: the model's threat model)."),
    delta: float | None = budget_option(None, "Robustification budget δ (default: the model's)."),
    eps: float | None = budget_option(None, "Attack budget ε to be robust against (default: the model's)."),
    steps: int = typer.Option(_D.steps, help="Outer steps at most."),
    inner_steps: InnerStepsOpt = None,
    check_steps: int = typer.Option(_D.check.steps, help="Steps of the PGD check that decides 'robust'."),
    check: CheckOpt = None,
    settle: SettleOpt = None,
    final_slack: FinalSlackOpt = None,
    inner_loss: InnerLossOpt = None,
    inner_targets: int | None = typer.Option(None, min=1, help="margin-mt: attackers per photo (default 4, or the card's)."),
    loop_precision: LoopPrecisionOpt = None,
    least_change: LeastChangeOpt = None,
    max_delta: float | None = budget_option(None, "δ escalation: photos not robust at --delta run again at 2δ, 4δ, … "
                                            "up to this (default: none, or the card's)."),
    give_up: GiveUpOpt = None,
    retry: RetryOpt = _D.retry,  # type: ignore[assignment]
    init: InitOpt = _D.init,  # type: ignore[assignment]
    goal: GoalOpt = _D.goal.name,  # type: ignore[assignment]
    resolution: WhereOpt = _D.resolution,  # type: ignore[assignment]
    check_resolution: CheckWhereOpt = None,
    survive: SurviveOpt = None,
    budget_map: BudgetMapOpt = _D.budget_map,  # type: ignore[assignment]
    fmt: FormatOpt = "auto",
    quality: QualityOpt = None,
    overwrite: bool = typer.Option(False, help="Replace existing outputs (default: skip them, so reruns resume)."),
    strip_metadata: bool = typer.Option(False, help="Drop EXIF and ICC profile."),
    sigma: SigmaOpt = None,
    noise_samples: int = typer.Option(8, help="Noise draws per pass with --smoothing-sigma."),
    batch_size: BatchOpt = 64,
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    seed: int = typer.Option(_D.seed),
    shard: ShardOpt = None,
    json_out: bool = typer.Option(False, "--json", help="Per-file results as JSON on stdout."),
    json_file: SaveJsonOpt = None,
) -> None:
    """Robustify photos so that no ε-perturbation changes the classifier's answer.

    Exit codes: 0 every photo robust, 1 a file failed, 2 usage, 3 a photo is not robust or over budget (a skipped
    output counts as robust only if it was written robust for the same model, norm, δ, ε and --survive)."""
    import time

    from ..verdict.upload import parse

    try:
        parse(survive)
    except UsageError as e:
        raise UsageError(f"--survive: {e}") from e
    share = resolve_shard(shard)
    spec = ModelSpec(model[0] if model else None, weights, card, input_size, resize_policy, resize_size, mean, std, channels)
    dev, clf, norm, eps, delta = model_and_budgets(spec, device, norm, eps, delta)
    clf, others = _models(paths, clf, model, dev, sigma, noise_samples, seed, check_steps)
    cfg = _config(clf, check, dict(inner_steps=inner_steps, inner_loss=inner_loss, inner_targets=inner_targets,
                                   max_delta=max_delta, check_resolution=check_resolution, give_up=give_up,
                                   loop_precision=loop_precision, least_change=least_change, settle=settle,
                                   final_slack=final_slack), init, norm=norm, delta=delta, eps=eps, steps=steps,
                  check_steps=check_steps, retry=retry, seed=seed, goal=goal, resolution=resolution,
                  survive=survive, budget_map=budget_map)
    err_console.print(_header(share, [clf, *others], dev, cfg), highlight=False,
                      soft_wrap=True)  # one line, however long: logs are grepped
    done: list = []
    t0, interrupted = time.perf_counter(), False
    try:
        _run(paths, out, [clf, *others] if others else clf, cfg, done, fmt=fmt, quality=quality, overwrite=overwrite,
             strip_metadata=strip_metadata, batch_size=batch_size, device=dev, shard=share)
    except KeyboardInterrupt:  # the photos finished so far still get their table and JSON
        interrupted = True
    _finish(paths, out, [clf, *others], dev, cfg, done, share, json_out, json_file, interrupted, time.perf_counter() - t0)


def _models(paths: list[Path], clf, names: list[str] | None, dev: str, sigma: float | None, noise_samples: int,
            seed: int, check_steps: int):
    """(the first model, smoothed with --smoothing-sigma, and the other --model models); refuses ONNX
    and a check without steps."""
    import torch

    others = [load_named(name, dev) for name in (names or [])[1:]]
    if not clf.differentiable:
        raise PreemptError(f"{clf.name}: an ONNX model has no gradients, so it cannot be robustified against; use the "
                         "torch model it was exported from (or its TorchScript/state_dict file) here, and the ONNX "
                         "file with preempt verify")
    if check_steps < 1:
        raise UsageError("--check-steps must be >= 1: robust means a check found no attack")
    colour_notice(paths, clf, given=bool(names))
    for p in paths:
        if not p.exists():
            report_error(f"{p}: no such file or folder")
    if not any(p.exists() for p in paths):  # each was reported as missing: nothing to do
        raise typer.Exit(EXIT_ERROR)
    if sigma is not None:
        from ..defenses.smoothing import Smoothed

        if others:
            raise UsageError("--smoothing-sigma smooths one model; robustify for several models without it")
        try:
            clf = Smoothed(clf, sigma, noise_samples, generator=torch.Generator(device=dev).manual_seed(seed))
        except UsageError as e:
            raise UsageError(f"--smoothing-sigma / --noise-samples: {e}") from e
    return clf, others


def _config(clf, check: str | None, given: dict, init: str, **kw):
    """The RobustifyConfig, resolved by the library (:meth:`RobustifyConfig.for_model`): the card, then the flags."""
    from ..algorithms.robustify import RobustifyConfig

    given = {k: v for k, v in given.items() if v is not None}  # a flag not given: the card's, else the default
    return RobustifyConfig.for_model(clf, check=check, check_steps=kw.pop("check_steps"), init=init, **given, **kw)


def _finish(paths: list[Path], out: Path, models: list, dev: str, cfg, done: list, share, json_out: bool,
            json_file, interrupted: bool, wall: float) -> None:
    """The summary table, the JSON (stdout and/or file), the exit code."""
    from ..pipeline.merge import shard_doc
    from ..pipeline.results import in_input_order
    from ..pipeline.robustify_job import model_name

    results = in_input_order(done)
    missing = sum(not p.exists() for p in paths)
    title = (f"interrupted: {len(results)} finished, " if interrupted else "") + f"robustified into {out}/"
    err_console.print(summary_table(results, title=title, wall=wall))
    doc = shard_doc({"model": model_name(models), "device": dev, "config": cfg.record(), "out": str(out),
                     "files": [r.to_dict() for r in results], **({"interrupted": True} if interrupted else {})}, share, results)
    if json_out:
        print_json(doc)
    save_json(json_file, doc, share)
    if interrupted:
        interrupted_exit()
    failed = missing + sum(r.status == "failed" for r in results)
    code = EXIT_ERROR if failed else EXIT_NOT_ROBUST if any(r.breaks_claim for r in results) else EXIT_OK
    raise typer.Exit(share_exit(code, share))


def _header(share, models: list, dev: str, cfg) -> str:
    """The one line robustify starts with: the share, the models and device, then the config's own description."""
    from ..pipeline.robustify_job import model_name

    return (f"share {share}: " if share else "") + f"model {model_name(models)} on {dev}; " + cfg.describe(dev)


def _run(paths: list[Path], out: Path, model: Model | Sequence[Model], cfg, done: list, **kw) -> None:
    """robustify_files under a progress bar that moves within a batch (outer steps); each result is appended to
    ``done`` as it is written, so an interrupted run still knows what it finished."""
    from ..pipeline import robustify_files

    with Progress(TextColumn("[bold]robustify"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[last]}"),
                  TimeElapsedColumn(), console=err_console) as bar:
        task = bar.add_task("", total=None, last="")

        def on_file(r) -> None:
            done.append(r)
            state.done += 1
            bar.update(task, completed=len(done), last=Path(r.src).name)
            if r.status == "failed":
                report_error(f"{r.src}: {r.error}", console=bar.console)
            elif r.breaks_claim and r.status == "skipped":
                bar.console.print(f"[yellow]{escape(r.src)}: {escape(r.error or '')}[/]", highlight=False)

        def on_step(files, k: int, steps: int, verified: int) -> None:
            what = files[0].name if len(files) == 1 else f"{len(files)} photos"
            bar.update(task, completed=len(done) + len(files) * min(k, steps) / max(steps, 1),
                       last=f"{what}: step {k}/{steps}, {verified} verified")

        robustify_files([p for p in paths if p.exists()], out, model, config=cfg, on_file=on_file,
                        on_plan=lambda n: bar.update(task, total=n), on_step=on_step, **kw)
