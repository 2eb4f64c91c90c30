"""Rich tables the commands print on stderr."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from ..pipeline.report import after_attack, broken_by


def summary_table(results, title: str, wall: float | None = None) -> Table:
    """robustify's table; ``s`` per photo is from its batch's start until it was done, the caption's the run's
    wall time (``wall``) or, without it, the photos' seconds added up."""
    from ..budget import format_budget

    t = Table(title=title, show_footer=False)
    shrunk = any(r.metrics.get("scale", 1.0) != 1.0 for r in results)
    for col in ("file", "status", "label", "final verdict", "steps", "passes", "δ", "ℓ∞", "PSNR", "SSIM",
                *(["kept"] if shrunk else []), "s"):
        t.add_column(col, justify="left" if col in ("file", "status", "label", "final verdict") else "right",
                     overflow="fold", min_width={"file": 16, "label": 8}.get(col))
    style = {"robust": "green", "not-robust": "yellow", "over-budget": "bold red", "failed": "red", "skipped": "dim"}
    for r in results:
        m = r.metrics
        status = f"[{style[r.status]}]{r.status}[/]"
        if r.status == "skipped" and r.breaks_claim:
            status = "[yellow]skipped, not known robust[/]"
        t.add_row(escape(Path(r.src).name), status, r.label_name or ("" if r.label is None else str(r.label)),
                  _final(m), str(m.get("steps", "")), str(m.get("passes", "")),
                  format_budget(m["delta"]) if isinstance(m.get("delta"), float) and m["delta"] == m["delta"] else "",
                  f"{m['linf']:.3f}" if "linf" in m else "",
                  f"{m['psnr']:.1f}" if "psnr" in m else "", f"{m['ssim']:.3f}" if "ssim" in m else "",
                  *([f"{m['scale']:.2f}" if "scale" in m else ""] if shrunk else []),
                  f"{m['seconds']:.2f}" if "seconds" in m else "")
    c = Counter(r.status for r in results)
    total = wall if wall is not None else sum(r.metrics.get("seconds", 0) for r in results)
    unknown = sum(r.status == "skipped" and r.breaks_claim for r in results)
    t.caption = (f"robust {c['robust']}, not robust {c['not-robust']}, "
                 + (f"over budget {c['over-budget']}, " if c["over-budget"] else "") + f"failed {c['failed']}, "
                 f"skipped {c['skipped']}" + (f" ({unknown} not known robust)" if unknown else "") + f"; {total:.1f}s")
    return t


def _final(m: dict) -> str:
    """What the final verdict said of a photo: held, broken by an attack, or not run (the loop's check failed)."""
    if "final" not in m:
        return ""
    if m["final"] == "held":
        return "held"
    return f"broken ({escape(m['final'])})" if m["final"] else ("–" if not m.get("checked") else "")


def verify_table(results, title: str, with_original: bool) -> Table:
    t = Table(title=title)
    cols = ["file", "label", "clean", "robust", "broken by", "label after"] + (["original robust", "ℓ∞ Δ"] if with_original else [])
    for col in cols:
        t.add_column(col, overflow="fold", min_width={"file": 16, "label": 8}.get(col))
    yes = lambda b: "[green]yes[/]" if b else "[red]no[/]"
    for r in results:
        if r.status == "failed":
            t.add_row(escape(Path(r.src).name), "[red]failed[/]", escape(r.error or ""), "", "", "",
                      *([""] * 2 if with_original else []))
            continue
        m = r.metrics
        row = [escape(Path(r.src).name), r.label_name or str(r.label), yes(m["clean_correct"]), yes(m["robust"]),
               escape(broken_by(m)), escape(after_attack(m))]
        if with_original:
            row += [yes(m["original_robust"]), f"{m['linf_to_original']:.3f}"]
        t.add_row(*row)
    return t


def attack_table(summary: dict, with_original: bool) -> Table:
    """Robust accuracy after each attack in turn (cumulative, worst case per image)."""
    t = Table(title="robust accuracy after each attack")
    t.add_column("attack")
    t.add_column("robustified", justify="right")
    if with_original:
        t.add_column("originals", justify="right")
    orig = summary.get("original_per_attack", {})
    for name, acc in summary["per_attack"].items():
        row = [name, f"{acc:.1%}"] + ([f"{orig.get(name, float('nan')):.1%}"] if with_original else [])
        t.add_row(*row)
    return t
