"""Where a robust photo's passes and seconds go, with the shipped card: per δ stage the loop's outer steps, the
loop's checks (passed, failed), and the final verdict (issue 42: what there is to cut).

    python benchmarks/corpus.py --out corpus/
    PREEMPT_FORCE_FLOAT32=1 python benchmarks/where_passes.py --folder corpus/dev-256 --photos 4 \\
        --out benchmarks/results/where-passes.jsonl

One photo at a time (so every pass is that photo's), ``preempt.robustify(model, x)`` with the card of
``--model`` (what ``preempt robustify`` runs) at ε = 1/255; ``_Joint.outer``, ``_Joint.check`` and the final
verdict are timed and counted from outside.  ``--variant NAME:KEY=VALUE,…`` (repeatable): each photo runs each
variant in turn, in one process, the order alternating photo by photo (a change's ratio side by side), e.g.

    PREEMPT_FORCE_FLOAT32=1 python benchmarks/where_passes.py --folder corpus/dev-256 --photos 5 \\
        --variant before:recheck=check --variant after:recheck=final --out benchmarks/results/recheck.jsonl

One JSONL row per photo and variant (stamped by the harness); ``--summary`` prints the table of a results file and,
with two variants or more, each one's ratio of seconds and passes against the first.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from unittest.mock import patch

import torch
from final_verdict import _setting
from harness import append

from preempt import load_model, robustify
from preempt.algorithms.robustify import drivers as dmod
from preempt.algorithms.robustify import loop as lmod
from preempt.algorithms.robustify.precision import bfloat16_native
from preempt.budget import parse_budget
from preempt.pipeline.photos import load_photo


class Meter:
    """Passes and seconds per (δ stage, part), part one of outer, check-passed, check-failed, final."""

    def __init__(self) -> None:
        self.parts: dict[tuple[int, str], list[float]] = defaultdict(lambda: [0, 0.0, 0])  # passes, seconds, calls

    def add(self, delta: float, part: str, passes: int, seconds: float) -> None:
        cell = self.parts[(int(round(delta * 255)), part)]
        cell[0] += passes
        cell[1] += seconds
        cell[2] += 1

    @contextmanager
    def installed(self):
        outer, check, final = lmod._Joint.outer, lmod._Joint.check, dmod.final_verdict
        meter = self

        def timed_outer(self, leaf, xr, idx, k, gen):
            t = time.perf_counter()
            r = outer(self, leaf, xr, idx, k, gen)
            meter.add(self.cfg.delta, "outer", int(r[3]) * len(idx), time.perf_counter() - t)
            return r

        def timed_check(self, photo, idx, gen, extra_restarts=0):
            t = time.perf_counter()
            ok, p, det = check(self, photo, idx, gen, extra_restarts)
            meter.add(self.cfg.delta, "check-passed" if bool(ok.all()) else "check-failed", int(p),
                      time.perf_counter() - t)
            return ok, p, det

        def timed_final(fin, models, ys, photos, threat, seed, on=None):
            t = time.perf_counter()
            fv = final(fin, models, ys, photos, threat, seed, on=on)
            meter.add(meter.delta_hint, "final", int(fv.passes.sum()), time.perf_counter() - t)
            return fv

        self.delta_hint = 0.0
        run = lmod.run_at_delta

        def hinted_run(models, x_o, y, cfg, on_step):
            self.delta_hint = cfg.delta
            return run(models, x_o, y, cfg, on_step)

        with patch.object(lmod._Joint, "outer", timed_outer), patch.object(lmod._Joint, "check", timed_check), \
                patch.object(dmod, "final_verdict", timed_final), patch.object(dmod, "run_at_delta", hinted_run):
            yield self


def attackers_precision(config: dict, device: torch.device) -> str:
    """The attackers' precision in this run: bfloat16 where the config asked for it and the CPU has it natively."""
    return "bfloat16" if config.get("loop_precision") == "bfloat16" and bfloat16_native(device) else "float32"


def summary(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    print("| photo | variant | precision | robust | δ | passes | s | outer passes (share) | check passes: passed / failed | "
          "final passes (share) | final s |")
    print("|---|---|---|---|---:|---:|---:|---:|---|---:|---:|")
    for r in rows:
        p = defaultdict(int)
        s = defaultdict(float)
        for c in r["parts"]:
            p[c["part"]] += c["passes"]
            s[c["part"]] += c["seconds"]
        tot = max(sum(p.values()), 1)
        print(f"| {r['photo']} | {r.get('variant', '')} | {r['precision']} | {'yes' if r['robust'] else 'no'} | {r['delta'] * 255:.0f}/255 | "
              f"{r['passes']} | {r['seconds']:.0f} | {p['outer']} ({p['outer'] / tot:.0%}) | "
              f"{p['check-passed']} / {p['check-failed']} | {p['final']} ({p['final'] / tot:.0%}) | {s['final']:.0f} |")
    variants = list(dict.fromkeys(r.get("variant", "") for r in rows))
    for v in variants:
        rs = [r for r in rows if r.get("variant", "") == v]
        print(f"\n{v or 'all'}: {len(rs)} photos, robust {sum(r['robust'] for r in rs)}, median s per photo "
              f"{statistics.median(r['seconds'] for r in rs):.0f}, median passes {statistics.median(r['passes'] for r in rs):.0f}"
              f", seconds in all {sum(r['seconds'] for r in rs):.0f}")
    base = {r["photo"]: r for r in rows if r.get("variant", "") == variants[0]} if variants else {}
    for v in variants[1:]:
        pairs = [(base[r["photo"]], r) for r in rows if r.get("variant", "") == v and r["photo"] in base]
        if pairs:
            print(f"{v} against {variants[0]}: seconds {sum(a['seconds'] for a, _ in pairs) / sum(b['seconds'] for _, b in pairs):.2f}× "
                  f"fewer in all (per photo " + ", ".join(f"{a['seconds'] / b['seconds']:.2f}×" for a, b in pairs)
                  + f"), passes {sum(a['passes'] for a, _ in pairs) / sum(b['passes'] for _, b in pairs):.2f}× fewer")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folder", type=Path, default=Path("corpus/dev-256"))
    ap.add_argument("--photos", type=int, default=4)
    ap.add_argument("--names", default="")
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--eps", default="1/255")
    ap.add_argument("--set", action="append", default=[], help="NAME=VALUE: a robustify keyword over the card")
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME:KEY=VALUE,...: robustify keywords of one variant over --set (repeatable; default: one)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/where-passes.jsonl"))
    ap.add_argument("--summary", action="store_true")
    args = ap.parse_args()
    if args.summary:
        return summary(args.out)
    model = load_model(args.model)
    files = sorted(args.folder.glob("*.png"))
    if args.names:
        files = [f for f in files if f.stem in args.names.split(",")]
    files = files[: args.photos or None]
    extra = keywords(args.set)
    variants = [(v.split(":", 1)[0], keywords(v.split(":", 1)[1].split(",") if ":" in v else []))
                for v in args.variant] or [("", {})]
    for n, f in enumerate(files):
        for name, kw in (variants if n % 2 == 0 else variants[::-1]):
            run_one(model, f, args, name, {**extra, **kw})


def keywords(pairs: list[str]) -> dict:
    """NAME=VALUE pairs as robustify keywords, parsed as final_verdict.py's ``--set`` parses them."""
    return dict(_setting(kv) for kv in pairs)


def run_one(model, f: Path, args, variant: str, kw: dict) -> None:
    """Photo ``f`` robustified with ``kw`` over the card, metered; one row appended to ``args.out``."""
    x = load_photo(f).tensor()[None]
    m = Meter()
    t0 = time.perf_counter()
    with m.installed():
        res = robustify(model, x, eps=parse_budget(args.eps), **kw)
    im = res.images[0]
    row = {"photo": f.stem, "variant": variant, "folder": f.parent.name, "size": list(x.shape[-2:]),
           "precision": attackers_precision(res.config, x.device), "robust": im.robust, "final": im.final, "delta": im.delta, "psnr": im.psnr,
           "passes": im.passes, "seconds": time.perf_counter() - t0, "set": args.set, "keywords": {k: str(v) for k, v in kw.items()},
           "parts": [{"delta255": d, "part": part, "passes": c[0], "seconds": round(c[1], 2), "calls": c[2]}
                     for (d, part), c in sorted(m.parts.items())]}
    append(args.out, row)
    print(f"{f.stem:<28} {variant:<8} robust {im.robust!s:<5} δ {im.delta * 255:.0f}/255 {row['seconds']:6.1f}s "
          f"{im.passes} passes; " + ", ".join(f"{d}/255 {part} {c[0]}p {c[1]:.0f}s"
                                               for (d, part), c in sorted(m.parts.items())), flush=True)


if __name__ == "__main__":
    main()
