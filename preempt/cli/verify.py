"""``preempt verify``: attack photos with PGD and report per image and in total."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..budget import format_budget
from ..errors import EXIT_ERROR, EXIT_NOT_ROBUST, EXIT_OK, PreemptError, UsageError
from ..pipeline.verify_job import VerifyConfig
from ..verdict.check import suite_help
from ..vocab import Norm, Resolution, SuiteName
from .common import (
    CardOpt,
    ChannelsOpt,
    InputSizeOpt,
    MeanOpt,
    ModelOpt,
    ModelSpec,
    PolicyOpt,
    ResizeSizeOpt,
    SaveJsonOpt,
    ShardOpt,
    StdOpt,
    WeightsOpt,
    budget_option,
    err_console,
    load_named,
    model_and_budgets,
    print_json,
    report_error,
    resolve_shard,
    save_json,
    share_exit,
    state,
)
from .tables import attack_table, verify_table

_V = VerifyConfig()  # the library's defaults are the CLI's: declared once, in VerifyConfig

OriginalOpt = Annotated[list[Path] | None, typer.Option(
    "--original", help="The originals, one per photo in the same order (files or folders); attacked too, for before vs after.")]
ResolutionOpt = Annotated[Resolution, typer.Option(
    help="full (default): attack the file's own pixels through the model's resize, the ball an attacker who edits the "
         "file reaches (what 'robust' means); auto/model: attack a large photo at the model's input over the image of "
         "its ε-ball, a larger ball (stricter; much cheaper per pass on a large photo).")]
ReencodeOpt = Annotated[str | None, typer.Option(
    help="Also attack each photo as a service would receive it: through the real codec, before and after the attack, "
         "e.g. 'jpeg:85', 'jpeg:95,jpeg:75' or 'worst' (q 95/85/75/60, long side 1080/2048, double compression).")]
ResizeOpt = Annotated[str | None, typer.Option(
    help="Service resize before --reencode: long side in px (or P%), e.g. '1080' or '1080,2048'.")]
SurrogateOpt = Annotated[str | None, typer.Option(
    help="blackbox suite: a torch model to craft transfer attacks on (default: fmnist-linf-preempt-d3 for grey models, "
         "efficientnet-lite0 for colour ones).")]
AdaptiveOpt = Annotated[bool, typer.Option(
    help="Also run the adaptive white-box attack that first tries to undo robustification.")]


def verify_cmd(
    paths: list[Path] = typer.Argument(..., help="Photos and/or folders to attack."),
    original: OriginalOpt = None,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    card: CardOpt = None,
    input_size: InputSizeOpt = None,
    resize_policy: PolicyOpt = None,
    resize_size: ResizeSizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    channels: ChannelsOpt = None,
    resolution: ResolutionOpt = "full",
    reencode: ReencodeOpt = None,
    resize: ResizeOpt = None,
    norm: Norm | None = typer.Option(None, help="linf | l2 (default: the model's)."),
    eps: float | None = budget_option(None, "Attack budget ε (default: the model's)."),
    suite: SuiteName = typer.Option(_V.suite, help=suite_help() + "."),
    steps: int = typer.Option(20, help="PGD steps (suites pgd and strong)."),
    restarts: int = typer.Option(1, help="PGD random restarts."),
    adaptive: AdaptiveOpt = False,
    certify: bool = typer.Option(False, help="Randomized-smoothing certificate (CERTIFY) per image."),
    sigma: float = typer.Option(0.25, help="Smoothing noise σ for --certify."),
    n0: int = typer.Option(100, help="CERTIFY: samples that pick the class."),
    n: int = typer.Option(10000, help="CERTIFY: samples that bound its probability."),
    alpha: float = typer.Option(0.001, help="CERTIFY: failure probability."),
    surrogate: SurrogateOpt = None,
    checks: bool = typer.Option(True, help="Honesty checks (randomized model, softmax, zero gradients, ...)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    seed: int = typer.Option(0),
    shard: ShardOpt = None,
    json_out: bool = typer.Option(False, "--json", help="JSON on stdout."),
    json_file: SaveJsonOpt = None,
    report: Path | None = typer.Option(None, help="Also write an HTML report to this file."),
) -> None:
    """Attack photos (by default with the attacks of robustify's check, from other random starts); exit code 3 if
    any is not robust."""
    from ..pipeline.merge import shard_doc
    from ..pipeline.report import summarize

    share = resolve_shard(shard)
    spec = ModelSpec(model, weights, card, input_size, resize_policy, resize_size, mean, std, channels)
    dev, clf, norm, eps, _ = model_and_budgets(spec, device, norm, eps)
    cfg = _config(clf, dev, suite, surrogate, reencode, resize, norm=norm, eps=eps, steps=steps, restarts=restarts,
                  seed=seed, adaptive=adaptive, checks=checks, certify=certify, sigma=sigma, n0=n0, n=n, alpha=alpha,
                  resolution=resolution)
    missing = [p for p in [*paths, *(original or [])] if not p.exists()]
    for p in missing:
        report_error(f"{p}: no such file or folder")
    if missing:
        raise typer.Exit(EXIT_ERROR)
    outcome = _attack_files(paths, original, clf, cfg, dev, share)
    results = outcome.files
    summary = shard_doc(summarize(results, cfg.describe(), model=clf.name, device=dev, flags=outcome.flags), share, results)
    _render(outcome, summary, cfg, clf, share, with_orig=bool(original))
    if json_out:  # before the report: an unwritable report path must not lose the JSON
        print_json(summary)
    save_json(json_file, summary, share)
    _write_report(report, summary, results)
    s = summary["summary"]
    code = EXIT_ERROR if s["failed"] else EXIT_NOT_ROBUST if s["not_robust"] else EXIT_OK
    raise typer.Exit(share_exit(code, share))


def _config(clf, dev: str, suite: str, surrogate: str | None, reencode: str | None, resize: str | None, **kw):
    """The VerifyConfig: the suite the model allows (blackbox for ONNX, with a bundled surrogate of
    its kind), the service transforms; usage errors exit 2."""
    from ..pipeline import VerifyConfig
    from ..pipeline.verify_job import suite_for
    from ..verdict.upload import service_spec

    run, note = suite_for(clf, suite)
    if note:
        err_console.print(note, highlight=False)
    if run == "blackbox" and surrogate is None:  # a bundled model of the same kind (grey clothing or ImageNet)
        from ..models import FMNIST_MODEL, IMAGENET_MODEL

        surrogate = FMNIST_MODEL if clf.pre.channels == 1 else IMAGENET_MODEL
    sur = load_named(surrogate, dev) if run == "blackbox" else None
    cfg = VerifyConfig(suite=run, surrogate=sur, **kw)
    try:
        cfg.uploads = service_spec(reencode, resize)
    except UsageError as e:
        raise UsageError(f"--reencode/--resize: {e}") from e
    return cfg


def _attack_files(paths: list[Path], original: list[Path] | None, clf, cfg, dev: str, share):
    """verify_files under a progress bar (on stderr, gone when done)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..pipeline import verify_files

    with Progress(TextColumn("[bold]verify"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[last]}"),
                  TimeElapsedColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task("", total=None, last="reading…")

        def on_file(r) -> None:
            state.done += 1
            bar.update(task, advance=1, last=Path(r.src).name)

        def on_attack(name: str, left: int) -> None:
            bar.update(task, last=f"{name} on {left} still robust…")

        return verify_files(paths, clf, originals=original or None, config=cfg, device=dev, shard=share,
                            on_file=on_file, on_plan=lambda n: bar.update(task, total=n), on_attack=on_attack)


def _render(outcome, summary: dict, cfg, clf, share, *, with_orig: bool) -> None:
    """The per-photo table, the per-attack table, warnings, honesty flags, certificates (stderr)."""
    results, run = outcome.files, cfg.suite
    what = (f"PGD-{cfg.steps}" if run == "pgd" else f"suite {run}") + (f", uploads {cfg.uploads}" if cfg.uploads else "")
    t = verify_table(results, (f"share {share}: " if share else "")
                     + f"{what} {cfg.norm} ε={format_budget(cfg.eps)} on {clf.name}", with_orig)
    s = summary["summary"]
    t.caption = (f"robust accuracy {s['robust_accuracy']:.1%} ({s['robust']}/{s['verified']})"
                 + (f", originals {s['original_robust_accuracy']:.1%}" if "original_robust_accuracy" in s else "")
                 + (f"; {s['failed']} failed" if s["failed"] else ""))
    err_console.print(t)
    if s.get("per_attack"):
        err_console.print(attack_table(s, with_orig))
    for w in outcome.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
    for f in outcome.flags:
        mark = "[yellow]⚠ flag:[/]" if f.raised else "[green]✓ passed:[/]"
        err_console.print(f"{mark} {f.verdict} ({f.name}: {f.detail})", highlight=False)
    if s.get("certified"):
        c = s["certified"]
        err_console.print(f"randomized smoothing σ={cfg.sigma:g}: {c['abstain']} abstained, mean certified ℓ2 radius "
                          f"{c['mean_radius']:.3f}, {c['certified_at_eps']} certified at ε", highlight=False)


def _write_report(report: Path | None, summary: dict, results) -> None:
    from ..pipeline.photos import PhotoError
    from ..pipeline.report import write_html

    if not report:
        return
    try:
        write_html(report, summary, results)
    except (OSError, PhotoError) as e:
        raise PreemptError(f"{report}: cannot write the report ({getattr(e, 'strerror', None) or e})") from e
    err_console.print(f"report written to {report}", highlight=False)
