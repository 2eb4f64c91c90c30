"""Choosing the bundled architecture by measurement: width against accuracy and time, and the
BatchNorm mode (train or eval) while crafting training attacks.

    python benchmarks/archive/architecture.py            # fast-at ℓ∞ ε=0.1, 2 epochs on 20,000 images each

For each candidate it trains with the same recipe and prints seconds per epoch (per 10,000
images), clean and PGD-10 validation accuracy, and parameter count.  Output committed in
benchmarks/results/architecture.{txt,json}.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from preempt.models import build
from preempt.train import TrainConfig, train

HERE = Path(__file__).resolve().parent
CANDIDATES = [("mlp", 256, "train"), ("cnn", 16, "train"), ("cnn", 32, "train"), ("cnn", 64, "train"),
              ("cnn-bn", 32, "train"), ("cnn-bn", 32, "eval")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(HERE / "results" / "architecture.json"))
    a = ap.parse_args()
    rows = []
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"fast-at linf eps=0.1, {a.epochs} epochs on {a.limit} images; {torch.get_num_threads()} threads; "
          f"torch {torch.__version__}", flush=True)
    print(f"{'arch':>6} {'width':>5} {'BN mode':>7} {'params':>9} {'s/epoch/10k':>12} {'val clean':>9} {'val PGD-10':>10}")
    for arch, width, bn in CANDIDATES:
        cfg = TrainConfig(method="fast-at", arch=arch, width=width, epochs=a.epochs, limit=a.limit,
                          val_size=2000, val_attack_size=500, threads=a.threads, attack_bn=bn)
        params = sum(p.numel() for p in build(arch, in_channels=1, num_classes=10, width=width,
                                              input_size=28).parameters())
        t0 = time.perf_counter()
        res = train(cfg)
        secs = res.history[-1]["seconds"] / a.epochs / (a.limit / 10000)
        last = res.history[-1]
        rows.append({"arch": arch, "width": width, "attack_bn": bn, "params": params, "seconds_per_epoch_per_10k": secs,
                     "val_clean": last["val_clean"], "val_pgd10": last["val_pgd10"],
                     "wall_s": time.perf_counter() - t0})
        print(f"{arch:>6} {width:>5} {bn if arch.endswith('bn') else '-':>7} {params:>9,} {secs:>12.1f} {last['val_clean']:>9.3f} {last['val_pgd10']:>10.3f}",
              flush=True)
    Path(a.out).write_text(json.dumps({"command": "python " + " ".join(sys.argv), "rows": rows,
                                       "machine": f"{platform.machine()}, torch {torch.__version__}"}, indent=2) + "\n")


if __name__ == "__main__":
    main()
