"""Robustify options side by side on images the paper's table does not use for AA.

    python benchmarks/archive/robustify_options.py linf 200 "base,settle=5,early_stop=0"
    python benchmarks/archive/robustify_options.py l2 200 "base,settle=30,settle=30;inner_loss=ce+dlr-t"

Fashion-MNIST test images 500 .. 500+n (benchmarks/results/reproduce.md runs AA on the first 500 only), robustified
against the ADV (pgd-at) model of the norm with δ = ε and each variant's RobustifyConfig fields
(``key=value;key=value``; ``base`` = the defaults).  Then the standard suite (APGD-CE, APGD-T, FAB-T,
Square, seed 7) attacks the images robustify claimed robust that the model classifies correctly; the
count it leaves robust is a lower bound of AA accuracy (the unclaimed ones failed robustify's own check).
Used to choose the ADV / Ours rows' options before running them once on the table's images.  Threads:
$THREADS (default 2).  Prints one line per variant.
"""
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # archived: its sibling modules are in benchmarks/
from reproduce import SETTINGS, variant  # (run as a script from benchmarks/, like reproduce.py)

from preempt import RobustifyConfig, load_model, robustify, threat_model
from preempt.data import fashion_mnist
from preempt.verdict import run_suite
from preempt.verdict.check import CHECKS

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
norm, n = sys.argv[1], int(sys.argv[2])
variants = sys.argv[3].split(",")
adv, eps = SETTINGS[norm]["adv"], SETTINGS[norm]["eps"]  # the table's ADV model and budget
x, y = fashion_mnist("test")
x, y = x[500:500 + n], y[500:500 + n]
m = load_model(adv)
th = threat_model(norm, eps)
correct = m.predict(x) == y


for v in variants:
    kw = variant(v)
    m.passes = 0
    t = time.perf_counter()
    # the committed lines used the strong check of the time (APGD from one start)
    r = robustify(m, x, config=RobustifyConfig.of(norm=norm, eps=eps, delta=eps, seed=0, **{"check": CHECKS["strong-once"], **kw}))
    p = m.passes / n
    dt = time.perf_counter() - t
    claim = r.robust & correct
    i = claim.nonzero().squeeze(1)
    rob = torch.zeros(n, dtype=torch.bool)
    t2 = time.perf_counter()
    rob[i] = run_suite(m, r.x[i], y[i], threat=th, suite="standard", generator=torch.Generator().manual_seed(7)).robust
    print(f"{norm} n={n} {v}: clean-correct {int(correct.sum())} claimed&correct {len(i)} AA-robust {int(rob.sum())} "
          f"false {len(i) - int(rob.sum())} passes/img {p:.0f} robustify {dt:.0f}s AA {time.perf_counter() - t2:.0f}s",
          flush=True)
