"""The final verdict with APGD-T's targets in turn (the reference's batch shape) or all of a photo's at once, side by
side in one process, on the written files of a final-verdict run (issue 42: same attacks, fewer seconds?).

    PREEMPT_FORCE_FLOAT32=1 python benchmarks/final_at_once.py --rows benchmarks/results/final-verdict-settle10.jsonl \\
        --save runs/fv/test-256-settle10-fp32 --folder corpus/test-256 --photos 6 --out benchmarks/results/final-at-once.jsonl
    python benchmarks/final_at_once.py --summary --out benchmarks/results/final-at-once.jsonl

For each written file robustify claimed: :func:`preempt.algorithms.robustify.final.final_verdict` with
``CHECKS["final"]`` as shipped (targets in turn, the reference's batch shape) and with ``apgd_at_once=9`` (the 9
targets of one photo in one batch of 9 rows), the order alternating photo by photo so that neither always runs first; the same
seed (robustify's final seed for seed 0).  Each target keeps its own random start and 100 iterations either way, so
the two are the same attacks; only the random draws differ (a batch draws its starts together).
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

from harness import RESULTS, append, read_rows, saved_file_args, saved_files

from preempt import load_model
from preempt.algorithms.robustify.final import Final, final_verdict
from preempt.core.threat import Linf
from preempt.pipeline.photos import load_photo
from preempt.verdict.check import CHECKS

SHAPES = {"in turn": None, "at once": 9}


def summary(out: Path) -> None:
    rows = read_rows(out)
    print("| photo | precision of the run | verdict in turn / at once | passes | s in turn | s at once | ratio |")
    print("|---|---|---|---:|---:|---:|---:|")
    ratios = []
    for r in rows:
        a, b = r["in turn"], r["at once"]
        ratios.append(a["seconds"] / b["seconds"])
        print(f"| {r['photo']} | {r['run_precision']} | {'held' if a['robust'] else 'broken'} / "
              f"{'held' if b['robust'] else 'broken'} | {a['passes']} / {b['passes']} | {a['seconds']:.1f} | "
              f"{b['seconds']:.1f} | {ratios[-1]:.2f}× |")
    if ratios:
        print(f"\nmedian {statistics.median(ratios):.2f}× faster at once over {len(ratios)} files; seconds in all "
              f"{sum(r['in turn']['seconds'] for r in rows):.0f} → {sum(r['at once']['seconds'] for r in rows):.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    saved_file_args(ap, RESULTS / "final-at-once.jsonl")
    ap.add_argument("--photos", type=int, default=0, help="at most this many files (0: all)")
    args = ap.parse_args()
    if args.summary:
        return summary(args.out)
    model = load_model(args.model)
    done = 0
    for row, written, original in saved_files(args):
        if not row.get("claimed") or (args.photos and done >= args.photos):
            continue
        x = load_photo(written).tensor()[None]
        y = model.predict(load_photo(original).tensor()[None])
        res = {}
        order = list(SHAPES) if done % 2 == 0 else list(SHAPES)[::-1]
        for name in order:
            check = replace(CHECKS["final"], apgd_at_once=SHAPES[name])
            t = time.perf_counter()
            fv = final_verdict(Final(check=check), [model], [y], x, Linf(row["eps"]), seed=0)
            res[name] = {"robust": bool(fv.robust[0]), "passes": int(fv.passes[0]),
                         "seconds": time.perf_counter() - t, "closest": float(fv.closest[0])}
        append(args.out, {"rows": args.rows.name, "photo": row["photo"], "run_precision": row["precision"],
                          "first": order[0], **res})
        print(row["photo"], {k: (v["robust"], v["passes"], round(v["seconds"], 1)) for k, v in res.items()}, flush=True)
        done += 1


if __name__ == "__main__":
    main()
