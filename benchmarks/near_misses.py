"""Near misses: how near a wrong label the final verdict's attacks bring each claim, and how often each judge breaks
one written file over many seeds (docs/benchmarks.md, "Near misses: the final verdict's slack").

    # the closest margin the final check (its seed for robustify seed 0) reached on every claim of a run
    python benchmarks/near_misses.py closest --rows benchmarks/results/final-verdict-settle10-bf16.jsonl \
        --variant settle10 --precision bfloat16 --row-folder test-256 --save runs/fv/test-256-settle10-bf16
    # one file, many seeds: the reference APGD-T (ref:apgd-t), ours (ours:apgd-t, ours:apgd-ce) or the final check
    python benchmarks/near_misses.py seeds --file runs/fv/test-256-settle10-bf16/sklearn-flower.png --label 985 \
        --judge ref:apgd-t --seeds 0-8
    # our APGD and the reference's from the same start, pass by pass
    python benchmarks/near_misses.py trajectory --file runs/fv/test-256-fp32/foolbox-imagenet_14_129.png --label 129
    python benchmarks/near_misses.py table

Rows go to results/near-misses.jsonl (closest) and results/judge-seeds.jsonl (seeds), stamped by the harness.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from harness import append, read_rows, reference_autoattack

RESULTS = Path(__file__).parent / "results"


def _model():
    from preempt import load_model

    return load_model("efficientnet-lite0")


def closest(args: argparse.Namespace) -> None:
    """The final check on every claim of a final_verdict.py run (seed final_seed(0)), with the lowest margin
    z_y - max_other z its attacks reached (a forward hook on the network: every row of every pass)."""
    import torch

    from preempt import Linf
    from preempt.algorithms.robustify.final import final_seed
    from preempt.attacks.base import margin
    from preempt.pipeline.photos import load_photo
    from preempt.verdict.check import CHECKS

    model = _model()
    out = RESULTS / "near-misses.jsonl"
    done = {r["file"] for r in read_rows(out)} if out.exists() else set()
    state: dict = {}

    def hook(_mod, _inp, z):
        state["min"] = min(state["min"], margin(z, torch.full((len(z),), state["y"])).min().item())

    model.net.register_forward_hook(hook)
    for r in read_rows(args.rows):
        if not r.get("claimed") or (r["variant"], r["precision"], r["folder"]) != (args.variant, args.precision,
                                                                                   args.row_folder):
            continue
        f = args.save / f"{r['photo']}.png"
        if str(f) in done or not f.exists():
            continue
        x, y = load_photo(f).tensor()[None], torch.tensor([r["label"]])
        state.update(y=r["label"], min=float("inf"))
        with torch.no_grad():
            model(x)
        clean, state["min"] = state["min"], float("inf")
        t0 = time.perf_counter()
        v = CHECKS["final"].judge(model, x, y, Linf(r["eps"]), resolution="full",
                                  generator=torch.Generator().manual_seed(final_seed(args.seed)))
        row = {"file": str(f), "photo": r["photo"], "precision": r["precision"], "delta": r["delta_used"],
               "aa": r.get("aa"), "seed": args.seed, "robust": bool(v.robust[0]), "by": v.broken_by[0],
               "clean_margin": clean, "min_margin": state["min"], "s": round(time.perf_counter() - t0, 1)}
        print(json.dumps(row), flush=True)
        append(out, row)


def seeds(args: argparse.Namespace) -> None:
    """One written file judged from each seed in --seeds (a-b): the reference's attacks alone (ref:apgd-t,
    ref:apgd-ce, ref:standard), ours (ours:apgd-t, ours:apgd-ce) or the final check (final)."""
    import torch

    from preempt import Linf
    from preempt.pipeline.photos import load_photo
    from preempt.verdict.check import CHECKS, Check

    model = _model()
    x, y = load_photo(args.file).tensor()[None], torch.tensor([args.label])
    a, b = map(int, args.seeds.split("-"))
    who, _, what = args.judge.partition(":")
    for s in range(a, b):
        t0 = time.perf_counter()
        if who == "ref":
            rob, _ = reference_autoattack(model, x, y, args.eps, seed=s, verbose=False,
                                          attacks=None if what == "standard" else [what])
            robust, by = bool(rob[0]), None
        else:
            chk = CHECKS["final"] if who == "final" else Check(name=what, stages=what)
            v = chk.judge(model, x, y, Linf(args.eps), generator=torch.Generator().manual_seed(s), resolution="full")
            robust, by = bool(v.robust[0]), v.broken_by[0]
        row = {"file": str(args.file), "judge": args.judge, "seed": s, "robust": robust, "by": by,
               "s": round(time.perf_counter() - t0, 1)}
        print(json.dumps(row), flush=True)
        append(RESULTS / "judge-seeds.jsonl", row)


def trajectory(args: argparse.Namespace) -> None:
    """Our APGD and the reference's from the same start (the same seed draws the same uniform start on the CPU)
    through one model: the margin at every pass, and the first pass where they differ."""
    import torch
    from pyautoattack.autopgd_base import APGDAttack

    from preempt import Linf
    from preempt.attacks.auto_pgd import apgd
    from preempt.attacks.base import margin
    from preempt.pipeline.photos import load_photo

    model = _model()
    x, y = load_photo(args.file).tensor()[None], torch.tensor([args.label])
    log: list[float] = []

    class Logged(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, v):
            z = self.m(v)
            log.append(float(margin(z, y)[0]))
            return z

    w = Logged()
    gen = torch.Generator().manual_seed(args.seed)
    if args.loss == "targeted":  # APGD-T on 9 targets, each from its own start, in the reference's order
        from pyautoattack.autopgd_base import APGDAttack_targeted

        from preempt.attacks.auto_pgd import apgd_targeted

        r = apgd_targeted(w, x, y, threat=Linf(args.eps), generator=gen)
        ours = log[:]
        log.clear()
        ref_t = APGDAttack_targeted(w, n_iter=100, norm="Linf", eps=args.eps, seed=args.seed, n_restarts=1,
                                    n_target_classes=9, device="cpu")
        adv = ref_t.perturb(x, y)
        with torch.no_grad():
            acc = model(adv).argmax(1) == y
    else:
        r = apgd(w, x, y, threat=Linf(args.eps), steps=100, loss=args.loss, generator=gen)
        ours = log[:]
        log.clear()
        ref = APGDAttack(w, n_iter=100, norm="Linf", eps=args.eps, seed=args.seed, loss=args.loss, n_restarts=1,
                         device="cpu")
        torch.manual_seed(args.seed)
        ref.init_hyperparam(x)
        _, acc, _, _ = ref.attack_single_run(x, y)
    same = next((i for i, (p, q) in enumerate(zip(ours, log)) if abs(p - q) > 1e-4), None)
    row = {"file": str(args.file), "loss": args.loss, "seed": args.seed, "ours_broke": bool(r.success[0]),
           "ref_broke": not bool(acc[0]), "passes_compared": min(len(ours), len(log)), "first_difference": same,
           "ours": [round(v, 4) for v in ours], "ref": [round(v, 4) for v in log]}
    print({k: v for k, v in row.items() if k not in ("ours", "ref")})
    append(RESULTS / "apgd-trajectory.jsonl", row)


def table(_args: argparse.Namespace) -> None:
    rows = sorted(read_rows(RESULTS / "near-misses.jsonl"), key=lambda r: r["min_margin"])
    print("| closest margin | photo | written files | δ | reference AA (seed 0) | final check |\n|---:|---|---|---|---|---|")
    for r in rows:
        aa = {True: "held", False: "**broken**", None: "–"}[r["aa"]]
        fin = "held" if r["robust"] else f"broken ({r['by']})"
        print(f"| {r['min_margin']:.3f} | {r['photo']} | {Path(r['file']).parent.name} | "
              f"{round(r['delta'] * 255)}/255 | {aa} | {fin} |")
    by: dict = {}
    for r in read_rows(RESULTS / "judge-seeds.jsonl"):
        k = (Path(r["file"]).parent.name, Path(r["file"]).stem, r["judge"])
        by.setdefault(k, []).append(not r["robust"])
    print("\n| written file | judge | seeds | broke it |\n|---|---|---:|---:|")
    for (run, photo, judge), broke in sorted(by.items()):
        print(f"| {run}/{photo} | {judge} | {len(broke)} | {sum(broke)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("closest")
    c.add_argument("--rows", type=Path, required=True)
    c.add_argument("--save", type=Path, required=True, help="the run's written files")
    c.add_argument("--variant", required=True)
    c.add_argument("--precision", required=True)
    c.add_argument("--row-folder", required=True)
    c.add_argument("--seed", type=int, default=0, help="robustify's seed (the final check runs from final_seed)")
    s = sub.add_parser("seeds")
    s.add_argument("--file", type=Path, required=True)
    s.add_argument("--label", type=int, required=True)
    s.add_argument("--judge", required=True)
    s.add_argument("--seeds", default="0-8")
    s.add_argument("--eps", type=float, default=1 / 255)
    t = sub.add_parser("trajectory")
    t.add_argument("--file", type=Path, required=True)
    t.add_argument("--label", type=int, required=True)
    t.add_argument("--loss", default="ce", help="ce | dlr | targeted (APGD-T, 9 targets)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--eps", type=float, default=1 / 255)
    sub.add_parser("table")
    args = ap.parse_args()
    {"closest": closest, "seeds": seeds, "trajectory": trajectory, "table": table}[args.cmd](args)


if __name__ == "__main__":
    main()
