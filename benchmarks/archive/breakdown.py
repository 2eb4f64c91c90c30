"""Where robustify's time goes on a real photo: the outer loop against the checks, and which attack ends a check.

    python benchmarks/corpus.py --out corpus/                 # the photos
    python benchmarks/archive/breakdown.py --split dev --photos 4     # → benchmarks/results/breakdown.{json,md}

Each photo is robustified with the ImageNet card's defaults (persistent attackers on 9 targets,
δ from 2/255 escalating to 16/255, the strong check with APGD-T on 9 targets) at ε = 1/255 against
``efficientnet-lite0``; the loop (``_Joint.outer``) and every check (``Check.judge``) are timed from
outside, and each check's verdict is kept: robust, or the attack that broke it and how far in.
``--at-once`` compares APGD-T's targets in turn (1, the default) with several at once (9: all of one
photo's) in the same process, side by side: the ratio is the point (run it alone; 2 shared cores).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from unittest.mock import patch

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # archived: its sibling modules are in benchmarks/
from real_photos import parse_variant

from preempt import RobustifyConfig, load_model, robustify
from preempt.algorithms.robustify import loop as rmod
from preempt.budget import parse_budget
from preempt.pipeline.photos import load_photo
from preempt.verdict import check as cmod

HERE = Path(__file__).resolve().parent
DEFAULT = ("default:inner_loss=margin-mt;inner_steps=2;inner_targets=9;inner_eps_scale=1.5;"
           "check_apgd_targets=9;max_delta=16/255")


class Meter:
    """Seconds and passes of the loop and of the checks, and each check's verdict."""

    def __init__(self) -> None:
        self.loop_s = 0.0
        self.checks: list[dict] = []
        self.trace: list[dict] = []  # per outer step: δ of the stage, outer loss, whether every inner attacker failed

    @contextmanager
    def installed(self):
        """The loop and the check timed from outside for the block (patched, then restored)."""
        outer, judge = rmod._Joint.outer, cmod.Check.judge
        meter = self

        def timed_outer(self, *a, **k):
            t = time.perf_counter()
            r = outer(self, *a, **k)
            meter.loop_s += time.perf_counter() - t
            meter.trace.append({"delta": round(self.cfg.delta * 255, 3), "k": a[3] if len(a) > 3 else k.get("k"),
                                "loss": float(r[1].sum()), "survived": bool(r[2].all())})
            return r

        def timed_judge(self, model, x, *a, **k):
            t = time.perf_counter()
            v = judge(self, model, x, *a, **k)
            meter.checks.append({"step": len(meter.trace), "robust": bool(v.robust.all()), "broken_by": list(v.broken_by),
                                 "seconds": time.perf_counter() - t, "passes": dict(v.passes),
                                 "attack_seconds": {n: round(s, 3) for n, s in v.seconds.items()}})
            return v

        with patch.object(rmod._Joint, "outer", timed_outer), patch.object(cmod.Check, "judge", timed_judge):
            yield self


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=Path("corpus"))
    ap.add_argument("--split", default="dev")
    ap.add_argument("--photos", type=int, default=4)
    ap.add_argument("--names", default="")
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--eps", default="1/255")
    ap.add_argument("--delta", default="2/255")
    ap.add_argument("--variant", default=DEFAULT)
    ap.add_argument("--at-once", default="1,9", help="APGD-T targets at once, compared in turn (comma-separated)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "breakdown.json")
    args = ap.parse_args()
    model = load_model(args.model)
    files = sorted((args.corpus / args.split).glob("*.png"))
    if args.names:
        files = [f for f in files if f.stem in args.names.split(",")]
    files = files[: args.photos or None]
    eps, delta = parse_budget(args.eps), parse_budget(args.delta)
    rows = []
    for f in files:
        x = load_photo(f).tensor()[None]
        with torch.inference_mode():
            y = model.predict(x)
        for a in args.at_once.split(","):
            _, kw = parse_variant(args.variant + f";check_apgd_at_once={a}")
            m = Meter()
            t0 = time.perf_counter()
            with m.installed():
                res = robustify(model, x, y, config=RobustifyConfig.of(norm="linf", eps=eps, delta=delta, **kw))
            total = time.perf_counter() - t0
            im = res.images[0]
            failed = [c for c in m.checks if not c["robust"]]
            row = {"photo": f.stem, "at_once": a, "robust": im.robust, "delta": im.delta, "psnr": im.psnr,
                   "passes": im.passes, "seconds": total, "loop_seconds": m.loop_s, "outer_steps": len(m.trace),
                   "check_seconds": sum(c["seconds"] for c in m.checks), "checks": len(m.checks),
                   "checks_failed": len(failed),
                   "failed_check_seconds": sum(c["seconds"] for c in failed),
                   "passed_check_seconds": sum(c["seconds"] for c in m.checks if c["robust"]),
                   "broken_by": dict(Counter(b for c in failed for b in c["broken_by"] if b)),
                   "check_list": m.checks, "trace": m.trace}
            rows.append(row)
            print(f"{f.stem:<30} at_once={a:<4} robust {im.robust!s:<5} δ {im.delta * 255:.0f}/255 {total:6.1f}s "
                  f"loop {m.loop_s:6.1f}s ({len(m.trace)} steps) checks {row['check_seconds']:6.1f}s "
                  f"({len(m.checks)}, {len(failed)} failed, {row['failed_check_seconds']:.1f}s) {row['broken_by']}", flush=True)
    out = {"command": "python " + " ".join(sys.argv),
           "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}", "rows": rows}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    lines = ["# Where robustify's time goes (ImageNet defaults, ε = 1/255, efficientnet-lite0)", "",
             f"`{out['command']}` on {out['machine']}.  Seconds from outside: the loop (`_Joint.outer`), every check "
             "(`Check.judge`), split into checks that passed and checks that failed; `at once`: APGD-T's targets per batch "
             "(1: in turn, as the reference and the default; 9: all of a photo's targets in one batch).", "",
             "| photo | at once | robust | δ | total s | loop s | checks | failed | passed-check s | failed-check s | broken by |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['photo']} | {r['at_once']} | {'yes' if r['robust'] else 'no'} | {r['delta'] * 255:.0f}/255 | "
                     f"{r['seconds']:.1f} | {r['loop_seconds']:.1f} | {r['checks']} | {r['checks_failed']} | "
                     f"{r['passed_check_seconds']:.1f} | {r['failed_check_seconds']:.1f} | "
                     f"{', '.join(f'{k} {v}' for k, v in r['broken_by'].items())} |")
    for a in args.at_once.split(","):
        rs = [r for r in rows if r["at_once"] == a]
        if rs:
            lines.append(f"\nat once = {a}: median {statistics.median(r['seconds'] for r in rs):.1f} s per photo, "
                         f"robust {sum(r['robust'] for r in rs)}/{len(rs)}")
    base = {r["photo"]: r["seconds"] for r in rows if r["at_once"] == args.at_once.split(",")[0]}
    ratios = [base[r["photo"]] / r["seconds"] for r in rows if r["at_once"] != args.at_once.split(",")[0] and r["photo"] in base]
    if ratios:
        lines.append(f"\nspeed-up over at once = {args.at_once.split(',')[0]}: " + ", ".join(f"{v:.2f}×" for v in ratios)
                     + f" (median {statistics.median(ratios):.2f}×)")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
