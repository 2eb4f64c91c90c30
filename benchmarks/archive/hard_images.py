"""Robustify variants on the images robustify could not verify ("hard" images), which the paper's table never uses.

    python benchmarks/archive/hard_images.py linf 1000 "base,seed=1,steps=100,optimizer=rmsprop,optimizer=rmsprop;seed=1"

Fashion-MNIST test images 1000 .. 1000+n (benchmarks/results/reproduce.md uses the first 1,000 only) are robustified against
the ADV (pgd-at) model of the norm, δ = ε, with the table's ADV / Ours options (ℓ∞: settle 30; ℓ2: settle 30,
inner loss ce+dlr-t).  The images it classifies correctly but could not verify are the hard set (cached in
runs/hard-<norm>-<n>.json).  Each variant (RobustifyConfig fields ``key=value;key=value`` over those options;
``base`` = the options alone, rerun on the hard set) then robustifies the hard set afresh, and the standard suite
(APGD-CE, APGD-T, FAB-T, Square, seed 7) attacks what it verified; each line names the test images it
left robust, so variants can be compared image by image.  This is how ``--retry rmsprop`` was chosen:
the retry is exactly such a second run on the images the first loop left unverified.  Threads: $THREADS
(default 2).  Appends one JSON line per variant to benchmarks/results/hard-images.jsonl.
"""
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # archived: its sibling modules are in benchmarks/
from reproduce import ROOT, SETTINGS, variant  # (run from benchmarks/, like reproduce.py)

from preempt import RobustifyConfig, load_model, robustify, threat_model
from preempt.data import fashion_mnist
from preempt.verdict import run_suite
from preempt.verdict.check import CHECKS

# the table's ADV / Ours rows, with the check they were made with (APGD from one start)
OPTIONS = {"linf": {"settle": 30, "check": CHECKS["strong-once"]},
           "l2": {"settle": 30, "inner_loss": "ce+dlr-t", "check": CHECKS["strong-once"]}}


def hard_set(m, norm: str, n: int, eps: float) -> dict:
    cache = ROOT / "runs" / f"hard-{norm}-{n}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    x, y = fashion_mnist("test")
    x, y = x[1000:1000 + n], y[1000:1000 + n]
    correct = m.predict(x) == y
    t = time.perf_counter()
    claim = torch.cat([robustify(m, x[i:i + 250], config=RobustifyConfig.of(norm=norm, eps=eps, delta=eps, seed=0,
                                                                          **OPTIONS[norm])).robust
                       for i in range(0, n, 250)])
    hard = ((correct & ~claim).nonzero().squeeze(1) + 1000).tolist()
    doc = {"n": n, "correct": int(correct.sum()), "verified_and_correct": int((claim & correct).sum()), "hard": hard,
           "seconds": round(time.perf_counter() - t)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(doc))
    return doc


def main() -> None:
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    norm, n, variants = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
    eps = SETTINGS[norm]["eps"]
    m = load_model(SETTINGS[norm]["adv"])
    doc = hard_set(m, norm, n, eps)
    hard = doc["hard"]
    x, y = fashion_mnist("test")
    x, y = x[hard], y[hard]
    out = Path(__file__).parent / "results" / "hard-images.jsonl"
    for v in variants:
        kw = {**OPTIONS[norm], **variant(v)}
        m.passes = 0
        t = time.perf_counter()
        r = robustify(m, x, y, config=RobustifyConfig.of(norm=norm, eps=eps, delta=eps, **kw))
        dt, passes = time.perf_counter() - t, m.passes / len(hard)
        i = r.robust.nonzero().squeeze(1)
        kept = run_suite(m, r.x[i], y[i], threat=threat_model(norm, eps), suite="standard",
                         generator=torch.Generator().manual_seed(7)).robust if len(i) else torch.zeros(0, dtype=bool)
        aa = int(kept.sum())
        line = {"norm": norm, "model": m.name, "images": f"test 1000..{1000 + n}", "correct": doc["correct"],
                "verified_by_the_table_options": doc["verified_and_correct"], "hard": len(hard), "variant": v,
                "verified": len(i), "aa_robust": aa,
                "aa_robust_images": [hard[j] for j in i[kept].tolist()], "passes_per_image": round(passes), "seconds": round(dt),
                "command": "python benchmarks/archive/hard_images.py " + " ".join(sys.argv[1:])}
        print(json.dumps(line), flush=True)
        with out.open("a") as f:
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
