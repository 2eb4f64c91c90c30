"""Cross-check our `standard` suite against the reference AutoAttack code (PyPI `pyautoattack`,
a packaging of fra31/auto-attack; install with `pip install -e ".[crosscheck]"`).

    python benchmarks/crosscheck.py                 # fmnist-linf-pgdat, 500 Fashion-MNIST test images

Both run AutoAttack's "standard" version (APGD-CE, APGD-T, FAB-T, Square; 100 iterations,
9 targets, 5,000 queries) on the same model and images, one after the other in one process.
Printed and written to benchmarks/results/crosscheck.json: robust accuracy of each, the
difference in points (goal: ours ≤ theirs + 0.3), wall time of each and the ratio (goal ≤ 0.8).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from preempt import load_model, threat_model
from preempt.data import fashion_mnist
from preempt.verdict import run_suite

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--model", default="fmnist-linf-pgdat", help="an adversarially trained model, so that most points survive to the late attacks")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None, help="our suite's worker threads (default: one per torch thread)")
    ap.add_argument("--out", default=str(HERE / "results" / "crosscheck.json"))
    a = ap.parse_args()
    try:
        from harness import reference_autoattack
    except ImportError:
        sys.exit("pyautoattack is not installed: pip install -e '.[crosscheck]'")
    model = load_model(a.model)
    tm = model.card["threat_model"]
    x, y = fashion_mnist("test")
    x, y = x[:a.n], y[:a.n]
    threat = threat_model(tm["norm"], tm["eps"])
    from preempt.attacks.suite import default_workers
    w = a.workers if a.workers is not None else default_workers(model)
    print(f"model {model.name}, {tm['norm']} ε={tm['eps']}, {a.n} Fashion-MNIST test images, "
          f"{torch.get_num_threads()} torch threads; ours splits the points between {w} worker thread(s), "
          "the reference runs one batch on all torch threads", flush=True)

    t0 = time.perf_counter()
    ours = run_suite(model, x, y, threat=threat, suite="standard", generator=torch.Generator().manual_seed(a.seed),
                     workers=a.workers)
    t_ours = time.perf_counter() - t0
    acc_ours = ours.robust.float().mean().item()
    print(f"ours:      robust accuracy {100 * acc_ours:.2f}%  {t_ours:.0f}s  per attack "
          + ", ".join(f"{k} {100 * v:.2f}" for k, v in ours.per_attack.items())
          + "; seconds " + ", ".join(f"{k} {v:.0f}" for k, v in ours.seconds.items()), flush=True)

    t0 = time.perf_counter()
    robust_ref, x_adv = reference_autoattack(model, x, y, tm["eps"], norm=tm["norm"], seed=a.seed, batch_size=500)
    t_ref = time.perf_counter() - t0
    acc_ref = robust_ref.float().mean().item()
    assert (threat.distance(x_adv, x) <= threat.eps + 1e-5).all() and (threat.distance(ours.x_adv, x) <= threat.eps + 1e-5).all()
    # every point one of them breaks: does the other break it too?
    ours_only = int((~ours.robust & (model.predict(x_adv) == y)).sum())
    ref_only = int((ours.robust & (model.predict(x_adv) != y)).sum())
    print(f"reference: robust accuracy {100 * acc_ref:.2f}%  {t_ref:.0f}s", flush=True)
    res = {"model": model.name, "threat_model": tm, "n": a.n, "seed": a.seed,
           "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
           "workers": a.workers, "broken_by_ours_only": ours_only, "broken_by_reference_only": ref_only,
           "command": "python " + " ".join(sys.argv),
           "ours": {"robust_accuracy": acc_ours, "seconds": t_ours, "per_attack": ours.per_attack,
                    "seconds_per_attack": ours.seconds},
           "reference": {"package": "pyautoattack", "robust_accuracy": acc_ref, "seconds": t_ref},
           "difference_points": 100 * (acc_ours - acc_ref), "time_ratio": t_ours / t_ref}
    print(f"points broken by ours only: {ours_only}, by the reference only: {ref_only}")
    print(f"ours − reference: {res['difference_points']:+.2f} points (goal ≤ +0.3); "
          f"time ratio {res['time_ratio']:.2f} (goal ≤ 0.8)")
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
