"""``preempt bench``: measurements that ship with the library."""
from __future__ import annotations

from pathlib import Path

import typer

from ..errors import PreemptError, UsageError
from ..vocab import Norm
from .common import budget_option, err_console, mapped, print_json

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that ship with preempt (results as Markdown, JSON, PNG).")


@bench_app.command("defenses")
@mapped
def defenses_cmd(
    n: int = typer.Option(1000, min=1, help="Fashion-MNIST test images (the first N)."),
    norm: Norm = typer.Option("linf", help="linf | l2 (rows with no ℓ2 version are left out and the report says why)."),
    eps: float | None = budget_option(None, "Attack budget ε (default 0.1 for linf, 1.5 for l2; δ = ε for the "
                                            "robustified rows)."),
    rows: str | None = typer.Option(None, help="Comma-separated rows to measure (default: all that apply to --norm): "
                                       "standard, magnet, magnet-jsd, magnet-both, defense-gan, pgd-at, fast-at, "
                                       "pgd-at-d, rst, smoothing, adv-ours, ours-ours, rst-ours."),
    out: Path = typer.Option(Path("defenses"), "--out", "-o", help="Output prefix: writes PREFIX.md, .json, .png."),
    force: bool = typer.Option(False, help="Recompute rows already stored in PREFIX.json."),
    data: str | None = typer.Option(None, help="Fashion-MNIST folder (default: Debian's dataset-fashion-mnist)."),
    seed: int = typer.Option(0),
    threads: int | None = typer.Option(None, help="CPU threads."),
    json_out: bool = typer.Option(False, "--json", help="The whole result document as JSON on stdout."),
) -> None:
    """MagNet, Defense-GAN, adversarial training, randomized smoothing and preemptive robustification:
    clean, non-adaptive and adaptive accuracy and costs on the same images.  Resumes: rows already
    stored in PREFIX.json with the same models and settings are kept."""
    import torch

    from ..bench.defenses import BenchConfig, Row, run

    if threads:
        torch.set_num_threads(threads)
    picked = [r.strip() for r in rows.split(",") if r.strip()] if rows else None

    def show(row: Row) -> None:
        adv = "not evaluated" if row.adaptive is None else f"{100 * row.adaptive:.1f}%"
        err_console.print(f"{row.name}: clean {100 * row.clean:.1f}%  non-adaptive {100 * row.non_adaptive:.1f}%  "
                          f"adaptive {adv}  ({row.seconds:.0f} s)", highlight=False)

    try:  # the rows are checked by run(): a UsageError names the bad one
        doc = run(picked, out=out, config=BenchConfig.for_norm(norm, n=n, eps=eps, seed=seed), data=data, force=force,
                  on_row=show)
    except OSError as e:
        raise PreemptError(f"{out}: {e}") from e
    err_console.print(f"wrote {out.with_suffix('.md')}, {out.with_suffix('.json')}"
                      + (f", {out.with_suffix('.png')}" if out.with_suffix(".png").exists() else ""))
    if json_out:
        print_json(doc)


@bench_app.command("tradeoff")
@mapped
def tradeoff_cmd(
    dims: str = typer.Option("50,100,400,1600", help="Numbers of weak features d, comma-separated (ε = 2η < 1 needs d > 36)."),
    n: int = typer.Option(20_000, min=100, help="Samples per d."),
    p: float = typer.Option(0.95, min=0.5, max=1.0, help="Probability that the robust feature x₁ equals y."),
    out: Path = typer.Option(Path("tradeoff"), "--out", "-o", help="Output prefix: writes PREFIX.md, .json (and .png with matplotlib)."),
    seed: int = typer.Option(0),
    json_out: bool = typer.Option(False, "--json", help="The rows as JSON on stdout."),
) -> None:
    """The robustness–accuracy trade-off of Tsipras et al. (2019), sampled beside its closed forms: the
    accurate linear classifier (average of the weak features) is not robust, the robust one (the robust
    feature) is 95% accurate."""
    import json

    from ..bench.tradeoff import markdown, plot, tradeoff

    try:
        ds = [int(v) for v in dims.split(",") if v.strip()]
        if not ds or min(ds) < 1:
            raise ValueError
    except ValueError:
        raise UsageError(f"--dims {dims}: give whole numbers >= 1 separated by commas") from None
    rows = tradeoff(ds, n=n, p=p, seed=seed)
    table = markdown(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("# Robustness may be at odds with accuracy (Tsipras et al. 2019), sampled\n\n"
                                      f"`preempt bench tradeoff --dims {dims} --n {n} --p {p} --seed {seed}`\n\n" + table)
    out.with_suffix(".json").write_text(json.dumps({"command": f"preempt bench tradeoff --dims {dims} --n {n} --p {p} "
                                                    f"--seed {seed}", "rows": rows}, indent=1) + "\n")
    try:
        plot(rows, out.with_suffix(".png"))
    except ImportError:
        pass
    err_console.print(table, highlight=False, markup=False)
    if json_out:
        print_json(rows)
