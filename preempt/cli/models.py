"""``preempt models``: what models there are and which device would run them."""
from __future__ import annotations

import typer
from rich.table import Table

from .common import err_console, pick_device, print_json


def models_cmd(json_out: bool = typer.Option(False, "--json", help="JSON on stdout.")) -> None:
    """List the bundled models with their threat model and metrics."""
    from ..models import bundled, default_model_name, ModelError

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
    for col in ("name", "method", "threat model", "input", "metrics"):
        t.add_column(col)
    for r in rows:
        tm = r["threat_model"] or {}
        test = r["metrics"].get("test", r["metrics"].get("validation", {}))
        t.add_row(r["name"] + (" (default)" if r["default"] else ""), str(r["method"]),
                  f"{tm.get('norm')} ε={tm.get('eps')} δ={tm.get('delta')}",
                  "×".join(map(str, r["input"] or [])),
                  "  ".join(f"{k}={v:.3f}" for k, v in test.items() if isinstance(v, (int, float))))
    err_console.print(t)
