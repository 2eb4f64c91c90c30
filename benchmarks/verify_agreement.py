"""Per photo: robustify's claim, ``preempt verify --suite standard`` and the reference AutoAttack, on the written files.

    python benchmarks/verify_agreement.py --rows benchmarks/results/final-verdict-settle10.jsonl \
        --save runs/fv/test-256-settle10-fp32 --folder corpus/test-256

For the rows of a final-verdict run (``final_verdict.py``) whose written file is in ``--save``: the function
``preempt verify`` wraps (``preempt.pipeline.verify_files``, ``--suite standard``: APGD-CE, APGD-T, FAB-T, Square, each
on what the ones before left; ``--original`` the photo in ``--folder``, so the label is the model's on the original;
verify's default seed), one file at a time, timed; beside the row's claim and the reference AutoAttack's verdict
recorded there.  Rows go to ``--out`` (JSONL, stamped, a rerun skips what is there); ``--summary`` prints the
per-photo table and the agreement.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness import RESULTS, append, read_rows, saved_file_args, saved_files

from preempt import load_model
from preempt.pipeline import VerifyConfig, verify_files


def run(args: argparse.Namespace) -> None:
    model = load_model(args.model)
    for r, f, original in saved_files(args):
        if args.claims_only and not r["claimed"]:
            continue
        t0 = time.perf_counter()
        rep = verify_files([f], model, originals=[original],
                           config=VerifyConfig(suite="standard", eps=r["eps"], checks=False))
        res = rep.files[0]
        row = {"rows": args.rows.name, "photo": r["photo"], "folder": r["folder"], "precision": r["precision"],
               "margin": r["margin"], "delta_used": r["delta_used"], "claimed": r["claimed"], "aa": r.get("aa"),
               "verify_standard": res.status == "robust", "verify_label_ok": res.label == r["label"],
               "verify_seconds": time.perf_counter() - t0,
               "verify_broken_by": res.metrics.get("broken_by"), "verify_original": res.metrics.get("original_robust")}
        append(args.out, row)
        print(f"{r['photo']:<32} {r['precision']:<9} claimed {r['claimed']!s:<5} verify standard "
              f"{'robust' if row['verify_standard'] else 'broken':<6} AA {r.get('aa', '-')!s:<5} "
              f"({row['verify_seconds']:.0f}s)", flush=True)


def summary(path: Path) -> None:
    rows = read_rows(path)
    print("| photo | folder | precision | margin | δ | robustify claims | verify --suite standard | reference AutoAttack "
          "| verify s |\n|---|---|---|---:|---:|---|---|---|---:|")
    for r in rows:
        aa = "—" if r["aa"] is None else ("robust" if r["aa"] else "broken")
        print(f"| {r['photo']} | {r['folder']} | {r['precision']} | {r['margin']:.2f} | {round(r['delta_used'] * 255)}/255 "
              f"| {'robust' if r['claimed'] else 'not robust'} | {'robust' if r['verify_standard'] else 'broken'} "
              f"| {aa} | {r['verify_seconds']:.0f} |")
    judged = [r for r in rows if r["aa"] is not None]
    print(f"\nverify --suite standard = robustify's claim on {sum(r['verify_standard'] == r['claimed'] for r in rows)} "
          f"of {len(rows)}; = the reference AutoAttack on {sum(r['verify_standard'] == r['aa'] for r in judged)} "
          f"of the {len(judged)} it judged; labels as the row's on {sum(r['verify_label_ok'] for r in rows)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    saved_file_args(ap, RESULTS / "verify-agreement.jsonl")
    ap.add_argument("--claims-only", action="store_true", help="only the files robustify claimed robust")
    args = ap.parse_args()
    summary(args.out) if args.summary else run(args)


if __name__ == "__main__":
    main()
