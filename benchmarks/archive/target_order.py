"""What a failed check costs, and whether APGD-T's target order could make it cheaper.

    python benchmarks/stages.py --split dev --names A,B --wins 1 --save-checks runs/checks --out runs/stages-checks.jsonl
    python benchmarks/archive/target_order.py runs/checks            # → benchmarks/results/target-order.{json,md}

robustify's check (the card's: PGD-20 twice, APGD-CE, then APGD-T on 9 targets, 25 iterations each) stops at the
first attack that breaks a photo, so a photo broken by APGD-T's k-th target has paid for k − 1 whole targeted runs
first.  For each photo robustify checked (saved by ``stages.py --save-checks``) that PGD and APGD-CE left standing,
this runs every one of the 9 targets on its own (its own seeded start) and records which ones break it and after how
many passes; the cost of a failed check under a target order is then the passes up to its first breaking target:

* ``reference`` — AutoAttack's order, the targets ranked by the logits of the photo itself;
* ``linear`` — the same 9 targets ranked by their first-order margin over the ε-ball,
  (z_y − z_t) − ε‖∇(z_y − z_t)‖₁ at the photo (ℓ∞; one forward pass and 9 backward ones), the least first;
* ``oracle`` — the target that breaks the photo soonest first (a bound no order can beat).
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import statistics as st
import sys
from pathlib import Path

import torch

from preempt import load_model
from preempt.algorithms.robustify import RobustifyConfig, recommended
from preempt.attacks.auto_pgd import apgd
from preempt.attacks.base import ranked_targets
from preempt.core.resolution import at_model_input
from preempt.pipeline.photos import load_photo
from preempt.verdict.check import Check

HERE = Path(__file__).resolve().parent


def cost(order: list[int], runs: list[dict]) -> int:
    """Passes of the targeted stage in this order: every target up to the first that breaks the photo."""
    total = 0
    for t in order:
        total += runs[t]["passes"]
        if runs[t]["broken"]:
            break
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checks", type=Path)
    ap.add_argument("--corpus", type=Path, default=Path("corpus"))
    ap.add_argument("--split", default="dev")
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "target-order.json")
    ap.add_argument("--render", action="store_true", help="only write OUT's .md from its .json")
    args = ap.parse_args()
    if args.render:
        render(args.out)
        return
    model = load_model(args.model)
    cfg = RobustifyConfig.of(**recommended(model), eps=1 / 255)
    check = cfg.check
    steps, n_targets = check.apgd_steps or 100, check.apgd_targets or 9
    rows = []
    for f in sorted(args.checks.glob("*.png")):
        m = re.match(r"(.+)-d(\d+)-k(\d+)-(ok|broken)\.png", f.name)
        assert m, f.name
        photo, verdict = m[1], m[4]
        if verdict == "ok":  # a photo the check verified pays for every target in any order
            continue
        x_o = load_photo(args.corpus / args.split / f"{photo}.png").tensor()[None]
        y = model.predict(x_o)
        x = load_photo(f).tensor()[None]
        mi = at_model_input(model, x, cfg.eps_ball())
        gen = torch.Generator().manual_seed(int(m[3]) + 1000 * int(m[2]))
        before = Check("pre", "ce+apgd-ce", "the check before APGD-T", restarts=check.restarts, steps=check.steps, apgd_steps=check.apgd_steps)
        v = before.judge(model, x, y, cfg.eps_ball(), generator=gen, correct=torch.ones(1, dtype=torch.bool))
        row = {"photo": photo, "delta": int(m[2]), "k": int(m[3]), "verdict": verdict, "pre_passes": v.total_passes,
               "pre_broken_by": v.broken_by[0]}
        if not bool(v.robust[0]):
            rows.append(row)
            print(json.dumps(row), flush=True)
            continue
        with torch.no_grad():
            z = mi.model(mi.x)
        targets = ranked_targets(z, y, n_targets)[0].tolist()
        xg = mi.x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            zg = mi.model(xg)[0]
            lin = []
            for t in targets:
                (g,) = torch.autograd.grad(zg[int(y[0])] - zg[t], xg, retain_graph=True)
                lin.append(float((zg[int(y[0])] - zg[t]).detach()) - mi.threat.eps * float(g.abs().sum()))
        runs = []
        for t in targets:
            r = apgd(mi.model, mi.x, y, threat=mi.threat, steps=steps, target=torch.tensor([t]), generator=gen)
            runs.append({"target": t, "broken": bool(r.success[0]), "passes": int(r.passes)})
        by_lin = sorted(range(len(targets)), key=lambda i: lin[i])
        broken = [i for i, r in enumerate(runs) if r["broken"]]
        first = sorted(broken, key=lambda i: runs[i]["passes"])[:1]  # the breaking target that breaks soonest
        oracle = first + [i for i in range(len(targets)) if i not in first]
        row.update(runs=runs, linear_margins=[round(v, 3) for v in lin], cost_reference=cost(list(range(len(targets))), runs),
                   cost_linear=cost(by_lin, runs), cost_oracle=cost(oracle, runs), broken_targets=broken,
                   linear_rank_of_first_break=min(by_lin.index(b) for b in broken) if broken else None)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "runs"}), flush=True)
    out = {"command": "python " + " ".join(sys.argv), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
           "torch": torch.__version__, "rows": rows}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    render(args.out)


def render(path: Path) -> None:
    """target-order.md from target-order.json."""
    out = json.loads(path.read_text())
    rows = out["rows"]
    reach = [r for r in rows if "runs" in r]
    broke = [r for r in reach if r["broken_targets"]]
    lines = ["# APGD-T's target order in robustify's check: what a failed check costs", "",
             f"`{out['command']}` on {out['machine']} ({len(rows)} photos robustify checked and found broken; "
             f"{len(reach)} survived PGD and APGD-CE in this rerun; {len(broke)} of those broken by some target).", "",
             "| order | passes of APGD-T on the broken photos (sum) | median | vs reference |", "|---|---:|---:|---:|"]
    for name in ("reference", "linear", "oracle"):
        c = [r[f"cost_{name}"] for r in broke]
        if c:
            ref = sum(r["cost_reference"] for r in broke)
            lines.append(f"| {name} | {sum(c):,} | {st.median(c):.0f} | {ref / sum(c):.2f}× |")
    k = len(reach[0]["runs"]) if reach else 0
    lines += ["", f"The linear order's ranking costs {k} passes more on every photo that reaches APGD-T ({len(reach)} × {k} = "
              f"{len(reach) * k:,} here; a photo the check verifies pays them too): net {sum(r['cost_linear'] for r in broke) + len(reach) * k:,} "
              f"passes against {sum(r['cost_reference'] for r in broke):,}."]
    lines += ["", "Position of the first breaking target in the reference order: "
              + ", ".join(str(r["broken_targets"][0] + 1) for r in broke),
              "", "The first breaking target's position in the linear order: "
              + ", ".join(str(r["linear_rank_of_first_break"] + 1) for r in broke)]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
