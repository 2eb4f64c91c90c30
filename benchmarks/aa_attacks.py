"""Which of the reference AutoAttack's four attacks breaks a photo: each run alone (pyautoattack, custom version,
the standard version's settings per attack, seed 0) on the file as written, through the model wrapper.

    python benchmarks/aa_attacks.py runs/fv/test-256-fp32/foolbox-imagenet_14_129.png [--eps 1/255]

Prints one line per attack: broken or held, and seconds.  Answers "is it APGD, or FAB-T and Square?" for a
claim the reference AutoAttack broke.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from harness import reference_autoattack  # the one reference-AutoAttack wrapper (run from benchmarks/)

from preempt import load_model
from preempt.budget import parse_budget
from preempt.pipeline.photos import load_photo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photos", type=Path, nargs="+")
    ap.add_argument("--eps", default="1/255")
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    model = load_model(args.model)
    eps = parse_budget(args.eps)
    for f in args.photos:
        x = load_photo(f).tensor()[None]
        with torch.inference_mode():
            y = model.predict(x)
        for attack in ("apgd-ce", "apgd-t", "fab-t", "square"):
            t0 = time.perf_counter()
            robust, _ = reference_autoattack(model, x, y, eps, seed=args.seed, attacks=(attack,))
            broken = not bool(robust.item())
            print(f"{f.name} {attack:<8} {'broken' if broken else 'held'} {time.perf_counter() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
