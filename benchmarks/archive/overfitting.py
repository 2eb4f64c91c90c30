"""Robust overfitting, seen (Rice, Wong & Kolter 2020): the learning curves of a PGD-AT run long enough to overfit,
from its training log, with the early-stopping point marked.

    preempt train --method pgd-at --norm linf --eps 0.1 --steps 7 --step-size 0.03 --limit 2000 --val-size 1000 \\
        --epochs 60 --schedule step --lr 0.05 --early-stop --curve-size 500 --threads 1 --seed 0 \\
        -o /tmp/ov/pgdat-2k.safetensors --run-dir /tmp/ov/pgdat-2k
    python benchmarks/archive/overfitting.py /tmp/ov/pgdat-2k/log.jsonl --out benchmarks/results/overfitting/pgdat-2k

Writes OUT.png (robust and clean error per epoch on the training images, the held-out validation images and the
test images) and OUT.md (the table and what it shows); copies the log to OUT.jsonl.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", type=Path, help="a run's log.jsonl (preempt train --curve-size N)")
    ap.add_argument("--out", type=Path, required=True, help="prefix of OUT.png, OUT.md, OUT.jsonl")
    ap.add_argument("--command", default=None, help="the training command, for the Markdown")
    args = ap.parse_args()
    rows = [json.loads(line) for line in args.log.read_text().splitlines() if line.strip()]
    steps = next(k for k in rows[0] if k.startswith("val_pgd"))[len("val_pgd"):]
    best = max(rows, key=lambda r: (r[f"val_pgd{steps}"], -r["epoch"]))  # --early-stop's choice: the first best
    last = rows[-1]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for split, colour in (("train", "tab:blue"), ("val", "tab:green"), ("test", "tab:red")):
        if f"{split}_pgd{steps}" not in rows[0]:
            continue
        ax[0].plot(ep, [1 - r[f"{split}_pgd{steps}"] for r in rows], color=colour, label=f"{split} (PGD-{steps})")
        ax[1].plot(ep, [1 - r[f"{split}_clean"] for r in rows], color=colour, label=f"{split} (clean)")
    for a, what in zip(ax, ("robust error", "clean error")):
        a.axvline(best["epoch"], color="k", ls="--", lw=1, label=f"early stop (epoch {best['epoch']})")
        for r0, r1 in zip(rows, rows[1:]):
            if r1["lr"] < r0["lr"] * 0.5:
                a.axvline(r1["epoch"] - 0.5, color="grey", ls=":", lw=1)
        a.set_xlabel("epoch")
        a.set_ylabel(what)
        a.legend(fontsize=8)
    ax[0].set_title("robust error per epoch (dotted: learning rate ÷10)", fontsize=10)
    ax[1].set_title("clean error per epoch", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out.with_suffix(".png"), dpi=90)
    shutil.copyfile(args.log, args.out.with_suffix(".jsonl"))
    cols = ["epoch", "lr", "loss", "train_clean", f"train_pgd{steps}", "val_clean", f"val_pgd{steps}", "test_clean",
            f"test_pgd{steps}"]
    cols = [c for c in cols if c in rows[0]]
    lines = [f"# Robust overfitting: PGD-AT learning curves ({args.log.parent.name})", "",
             f"Command: `{args.command}`" if args.command else "", "",
             f"![curves]({args.out.with_suffix('.png').name})", "",
             f"Early stopping (best validation PGD-{steps}) picks epoch {best['epoch']}: test PGD-{steps} accuracy "
             f"{best.get(f'test_pgd{steps}', float('nan')):.3f} there, {last.get(f'test_pgd{steps}', float('nan')):.3f} "
             f"at the last epoch ({last['epoch']}); training PGD-{steps} accuracy {best.get(f'train_pgd{steps}', float('nan')):.3f} "
             f"→ {last.get(f'train_pgd{steps}', float('nan')):.3f}.", "",
             "| " + " | ".join(cols) + " |", "|" + "---:|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |"
                     + (" ← early stop" if r is best else ""))
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(lines[6])


if __name__ == "__main__":
    main()
