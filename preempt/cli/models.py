"""``preempt models``: what models there are and which device would run them."""
from __future__ import annotations

import typer
from rich.table import Table

from .common import out_console, pick_device, print_json


def models_cmd(json_out: bool = typer.Option(False, "--json", help="JSON on stdout.")) -> None:
    """List the bundled models with their threat model and metrics."""
    from ..models import ModelError, bundled, default_model_name

    have = bundled()
    try:
        default = default_model_name()
    except ModelError:
        default = None
    device = pick_device("auto")
    rows = []
    for name, info in have.items():
        c = info.card
        rows.append({"name": name, "default": name == default, "path": str(info.path),
                     "dataset": c.get("dataset"), "method": c.get("training", {}).get("method"),
                     "threat_model": c.get("threat_model"), "input": c.get("preprocessing", {}).get("input_size"),
                     "metrics": c.get("metrics", {})})
    if json_out:
        print_json({"device": device, "default": default, "models": rows})
        return
    t = Table(title=f"bundled models (device: {device})")
    for col in ("name", "method", "threat model", "input", "clean", "PGD-20"):
        t.add_column(col, overflow="fold", min_width=20 if col == "name" else None)
    for r in rows:
        tm = r["threat_model"] or {}
        test = r["metrics"].get("test", {}) or r["metrics"].get("labelled_photos", {})
        pct = lambda v: f"{100 * v:.1f}%" if isinstance(v, (int, float)) else "–"
        t.add_row(r["name"] + (" (default)" if r["default"] else ""), str(r["method"]),
                  f"{tm.get('norm')} ε={_b(tm.get('eps'))} δ={_b(tm.get('delta'))}",
                  "×".join(map(str, r["input"] or [])), pct(test.get("clean", test.get("top1"))), pct(test.get("pgd20")))
    t.caption = ("fmnist-*: test accuracy on Fashion-MNIST, clean on 10,000 images, PGD-20 (the card's ε) on the first "
                 "1,000; efficientnet-lite0: ImageNet top-1 on labelled photos (benchmarks/results/photos.md)")
    out_console.print(t)  # the listing is this command's output: stdout, so it can be piped


def _b(v) -> str:
    from ..budget import format_budget

    return format_budget(v) if isinstance(v, (int, float)) else str(v)
