"""The paper's result table, with our code, on Fashion-MNIST.

    python benchmarks/reproduce.py            # ℓ∞ (ε = δ = 0.1) and ℓ2 (ε = δ = 1.5), 1,000 test images

Rows per threat model: ADV (pgd-at weights) on the original test images, ADV on images
robustified with our `robustify` (δ = ε) against the ADV model, and Ours (preempt weights) on
images robustified against itself.  Columns: clean accuracy and PGD-20 accuracy (true labels,
step ε/4, random start, one restart, a seed robustify never used).  AA (the AutoAttack-style
ensemble, `--suite standard`) is "–" until it is run at this size.

Writes results/reproduce.md and results/reproduce.json (every number, the command, seed, times).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from preempt import RobustifyConfig, load_model, robustify, threat_model
from preempt.attacks import pgd
from preempt.data import fashion_mnist

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {"linf": {"eps": 0.1, "adv": "fmnist-linf-pgdat", "ours": "fmnist-linf-preempt"},
            "l2": {"eps": 1.5, "adv": "fmnist-l2-pgdat", "ours": "fmnist-l2-preempt"}}


def evaluate(model, x, y, threat, seed: int, bs: int = 250) -> dict:
    gen = torch.Generator().manual_seed(seed)
    clean = rob = 0
    for i in range(0, len(x), bs):
        xb, yb = x[i:i + bs], y[i:i + bs]
        clean += (model.predict(xb) == yb).sum().item()
        rob += pgd(model, xb, yb, threat=threat, steps=20, generator=gen).robust.sum().item()
    return {"clean": clean / len(x), "pgd20": rob / len(x), "aa": None}


def robustified(model, x, norm: str, eps: float, seed: int, bs: int = 250) -> tuple[torch.Tensor, dict]:
    cfg = RobustifyConfig(norm=norm, eps=eps, delta=eps, seed=seed)
    t0, outs = time.perf_counter(), []
    model.passes = 0
    for i in range(0, len(x), bs):
        outs.append(robustify(model, x[i:i + bs], config=cfg).x)
    return torch.cat(outs), {"seconds": time.perf_counter() - t0, "passes_per_image": model.passes / len(x)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--norms", default="linf,l2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "results" / "reproduce"))
    a = ap.parse_args()
    x, y = fashion_mnist("test")
    x, y = x[:a.n], y[:a.n]
    doc = {"command": "python " + " ".join(sys.argv), "seed": a.seed, "n": a.n,
           "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
           "attack": "PGD-20, step eps/4, random start, 1 restart, true labels", "tables": {}}
    md = ["# The paper's table on Fashion-MNIST, with preempt's code", "",
          f"`{doc['command']}` — {a.n} test images, seed {a.seed}, {doc['machine']}. "
          "Accuracies in %, against the true labels. AA = AutoAttack-style ensemble (`preempt verify --suite standard`; not yet run for this table: –).", ""]
    for norm in a.norms.split(","):
        s = SETTINGS[norm]
        threat = threat_model(norm, s["eps"])
        adv, ours = load_model(s["adv"]), load_model(s["ours"])
        t0 = time.perf_counter()
        rows = {"ADV / None": evaluate(adv, x, y, threat, a.seed + 100)}
        xr, info_a = robustified(adv, x, norm, s["eps"], a.seed)
        rows["ADV / Ours"] = {**evaluate(adv, xr, y, threat, a.seed + 100), "robustify": info_a}
        xr, info_o = robustified(ours, x, norm, s["eps"], a.seed)
        rows["Ours / Ours"] = {**evaluate(ours, xr, y, threat, a.seed + 100), "robustify": info_o}
        base, rob = rows["ADV / None"], rows["ADV / Ours"]
        gap = base["clean"] - base["pgd20"]
        checks = {
            "adv_ours_closes_gap_pgd20": (rob["pgd20"] - base["pgd20"]) / gap if gap > 0 else None,
            "robustified_keep_clean_pgd20_ours": rows["Ours / Ours"]["pgd20"] / rows["Ours / Ours"]["clean"],
            "robustified_keep_clean_pgd20_adv": rob["pgd20"] / rob["clean"],
            "ours_clean_vs_adv_clean_points": 100 * (rows["Ours / Ours"]["clean"] - base["clean"]),
        }
        doc["tables"][norm] = {"eps": s["eps"], "delta": s["eps"], "models": {"ADV": s["adv"], "Ours": s["ours"]},
                               "rows": rows, "checks": checks, "seconds": time.perf_counter() - t0}
        label = "ℓ∞" if norm == "linf" else "ℓ2"
        md += [f"## {label}, ε = δ = {s['eps']:g}", "", "| Model | Preempt. | Clean | PGD-20 | AA |", "|---|---|---|---|---|"]
        for name, r in rows.items():
            m, p = name.split(" / ")
            md.append(f"| {m} | {p} | {100 * r['clean']:.2f} | {100 * r['pgd20']:.2f} | – |")
        md += ["", f"- ADV/Ours closes {100 * checks['adv_ours_closes_gap_pgd20']:.1f}% of the gap between ADV/None's "
               f"PGD-20 accuracy and clean accuracy (goal ≥ 80%, to be judged under AA).",
               f"- Robustified images keep {100 * checks['robustified_keep_clean_pgd20_ours']:.1f}% (Ours/Ours) and "
               f"{100 * checks['robustified_keep_clean_pgd20_adv']:.1f}% (ADV/Ours) of their clean accuracy under "
               "PGD-20 (goal ≥ 90% under AA).",
               f"- Ours − ADV clean accuracy: {checks['ours_clean_vs_adv_clean_points']:+.2f} points (goal ≥ 0).",
               f"- Robustify cost: {info_a['passes_per_image']:.0f} (ADV) and {info_o['passes_per_image']:.0f} (Ours) "
               "classifier passes per image.", ""]
        print("\n".join(md[-12:]), flush=True)
    Path(a.out + ".json").parent.mkdir(parents=True, exist_ok=True)
    Path(a.out + ".json").write_text(json.dumps(doc, indent=2) + "\n")
    Path(a.out + ".md").write_text("\n".join(md) + "\n")
    print(f"wrote {a.out}.md and {a.out}.json")


if __name__ == "__main__":
    main()
