"""Is `preempt verify --suite final` as strong as the reference AutoAttack on real photos, and how much cheaper?

    python benchmarks/final_suite.py --rows benchmarks/results/final-verdict-settle10.jsonl \
        --save runs/fv/test-256-settle10-fp32 --folder corpus/test-256

For every row of a final-verdict run (``final_verdict.py``) whose written file is in ``--save``: verify's ``final``
suite (APGD-CE from 3 random starts, APGD-T on 9 targets, 100 iterations each, on the file's own pixels; verify's
own seed) on the written file, and on its original from ``--folder``, each timed; its verdict beside the reference
AutoAttack's recorded in the row (robustified files the claim was judged on), and beside a fresh reference
AutoAttack run on the original (``--aa-originals``).  Rows go to ``--out`` (JSONL, stamped); ``--summary``
prints the agreement and the seconds per robust photo.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from harness import RESULTS, append, read_rows, reference_autoattack, saved_file_args, saved_files

from preempt import Linf, load_model
from preempt.pipeline.photos import load_photo
from preempt.verdict import run_suite


def _suite(model, x, y, eps: float, seed: int) -> tuple[bool, float, int]:
    t0 = time.perf_counter()
    r = run_suite(model, x, y, threat=Linf(eps), suite="final", generator=torch.Generator().manual_seed(seed))
    return bool(r.robust.item()), time.perf_counter() - t0, int(sum(r.passes.values()))


def run(args: argparse.Namespace) -> None:
    model = load_model(args.model)
    for r, f, original in saved_files(args):
        y = torch.tensor([r["label"]])
        x_w, x_o = load_photo(f).tensor()[None], load_photo(original).tensor()[None]
        ok_w, s_w, p_w = _suite(model, x_w, y, r["eps"], args.seed)
        ok_o, s_o, p_o = _suite(model, x_o, y, r["eps"], args.seed)
        row = {"rows": args.rows.name, "photo": r["photo"], "claimed": r["claimed"], "aa_written": r.get("aa"),
               "final_suite_written": ok_w, "seconds_written": s_w, "passes_written": p_w,
               "final_suite_original": ok_o, "seconds_original": s_o, "passes_original": p_o}
        if args.aa_originals:
            t0 = time.perf_counter()
            robust, _ = reference_autoattack(model, x_o, y, r["eps"], seed=0, verbose=False)
            row["aa_original"], row["aa_original_seconds"] = bool(robust.item()), time.perf_counter() - t0
        append(args.out, row)
        print(f"{r['photo']:<32} written: final suite {'robust' if ok_w else 'broken'} ({s_w:.0f}s), AA "
              f"{r.get('aa', '-')}; original: final suite {'robust' if ok_o else 'broken'}", flush=True)


def summary(path: Path) -> None:
    rows = read_rows(path)
    judged = [r for r in rows if r["aa_written"] is not None]
    agree = sum(r["final_suite_written"] == r["aa_written"] for r in judged)
    orig = [r for r in rows if "aa_original" in r]
    robust_s = [r["seconds_written"] for r in rows if r["final_suite_written"]]
    print(f"written files judged by both: {len(judged)}, same verdict {agree}; originals: final suite robust on "
          f"{sum(r['final_suite_original'] for r in rows)} of {len(rows)}"
          + (f", same verdict as the reference on {sum(r['aa_original'] == r['final_suite_original'] for r in orig)} "
             f"of {len(orig)}" if orig else "")
          + (f"; seconds per robust photo: median {statistics.median(robust_s):.1f}, max {max(robust_s):.1f}"
             if robust_s else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    saved_file_args(ap, RESULTS / "final-suite.jsonl")
    ap.add_argument("--seed", type=int, default=7, help="verify's seed (not the final verdict's)")
    ap.add_argument("--aa-originals", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    summary(args.out) if args.summary else run(args)


if __name__ == "__main__":
    main()
