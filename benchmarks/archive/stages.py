"""Where robustify's passes go, stage by stage of its δ escalation: every outer step and every check, per photo.

    python benchmarks/archive/stages.py --split dev            # → benchmarks/results/stages-dev.jsonl

Each photo is run as robustify's escalation runs it (δ = 2, 4, 8, 16/255 with the card's settings, each stage
from the original with its own seed), except that a stage that verifies the photo does not end the run: the
next stage runs too (and no more after a second verified stage).  Each stage starts from the original photo
with a seed of its own, so a stage's trajectory does not depend on how the earlier ones ended: a rule that ends a
stage sooner (fewer steps, fewer checks) can then be replayed exactly from these records (``--replay``), the
photo moving on to the next stage's recorded run where the rule cuts a stage short.

The records come from wrapping robustify's private ledger (``Ledger.stepped`` and ``Ledger.checked``): a
benchmark's instrument, not an API.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

import preempt.algorithms.robustify.loop as R
from preempt import RobustifyConfig, load_model
from preempt.algorithms.robustify import escalation_stages, recommended
from preempt.pipeline.photos import load_photo, save_image

HERE = Path(__file__).resolve().parent


class Recorder:
    """Collects the ledger's outer steps and checks of the stage running now."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.t0 = time.perf_counter()
        stepped, checked, outer = R.Ledger.stepped, R.Ledger.checked, R._Joint.outer
        rec = self

        def on_outer(joint, leaf, xr, idx, k, gen):
            g, loss, survived, p = outer(joint, leaf, xr, idx, k, gen)
            rec.survived = bool(survived[0])
            return g, loss, survived, p

        def on_step(book, idx, k, passes, loss):
            rec.events.append({"k": k, "passes": int(passes), "loss": round(float(loss[0]), 5), "survived": rec.survived,
                               "t": round(time.perf_counter() - rec.t0, 3)})
            return stepped(book, idx, k, passes, loss)

        def on_check(book, idx, q, ok, passes, det, k=0, settle=0, v=None):
            if rec.save is not None:  # the photo checked, as written (8-bit), for replaying the check offline
                save_image(q[0], rec.save / f"{rec.tag}-k{k}-{'ok' if bool(ok[0]) else 'broken'}.png")
            rec.events.append({"k": k, "check": bool(ok[0]), "passes": int(passes),
                               "t": round(time.perf_counter() - rec.t0, 3)})
            return checked(book, idx, q, ok, passes, det, k, settle, v)

        R.Ledger.stepped, R.Ledger.checked, R._Joint.outer = on_step, on_check, on_outer  # type: ignore[method-assign]
        self.survived = False
        self.save: Path | None = None
        self.tag = ""

    def start(self) -> None:
        self.events, self.t0 = [], time.perf_counter()


def stages(cfg: RobustifyConfig) -> list[RobustifyConfig]:
    """The configs of robustify's escalation stages: the first at δ, then :func:`escalation_stages`'s."""
    return [replace(cfg, max_delta=None), *escalation_stages(cfg)]


def record(args: argparse.Namespace) -> None:
    model = load_model(args.model)
    cfg = RobustifyConfig.of(**recommended(model), eps=1 / 255, delta=2 / 255)
    if args.apgd_order:
        cfg = replace(cfg, check=replace(cfg.check, apgd_order=args.apgd_order))
    rec = Recorder()
    rec.save = args.save_checks
    if rec.save is not None:
        rec.save.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    done = {json.loads(line)["photo"] for line in out.read_text().splitlines()} if out.exists() else set()
    names = sorted(p.stem for p in (args.corpus / args.split).glob("*.png"))
    for name in names:
        if name in done or (args.names and name not in args.names.split(",")):
            continue
        x = load_photo(args.corpus / args.split / f"{name}.png").tensor()[None]
        runs, wins = [], 0
        for c in stages(cfg):
            rec.start()
            rec.tag = f"{name}-d{round(c.delta * 255)}"
            res = R.run_at_delta([model], x, None, c, None)
            runs.append({"delta": round(c.delta * 255), "robust": bool(res.robust[0]), "steps": res.images[0].steps,
                         "passes": res.images[0].passes, "seconds": round(time.perf_counter() - rec.t0, 2),
                         "events": rec.events})
            wins += bool(res.robust[0])
            print(f"{name:<34} δ {runs[-1]['delta']:>2}/255 robust {runs[-1]['robust']!s:<5} steps {runs[-1]['steps']:>2} "
                  f"passes {runs[-1]['passes']:>5} {runs[-1]['seconds']:.0f}s", flush=True)
            if wins == args.wins:
                break
        with out.open("a") as fh:
            fh.write(json.dumps({"photo": name, "split": args.split, "model": args.model, "stages": runs,
                                 "command": "python " + " ".join(sys.argv),
                                 "machine": f"{platform.machine()}, {torch.get_num_threads()} threads"}) + "\n")


def replay_stage(st: dict, final: bool, cap: int | None, fails: int | None) -> tuple[bool, int, int]:
    """(robust, passes, steps) of one recorded stage under a rule that ends a non-final stage at step ``cap`` or at its
    ``fails``-th failed check.  A stage cut at ``cap`` runs robustify's last-step check there: where the record
    has a check at that step it is replayed, else (the attackers still broke the photo) it is counted as a failed
    check costing the record's cheapest failed check."""
    passes, cheap = 0, min([e["passes"] for e in st["events"] if "check" in e and not e["check"]] or [17])
    failed = 0
    for e in st["events"]:
        passes += e["passes"]
        if "check" in e:
            if e["check"]:
                return True, passes, e["k"]
            failed += 1
            if not final and (fails is not None and failed >= fails or cap is not None and e["k"] >= cap):
                return False, passes, e["k"]
        elif not final and cap is not None and e["k"] == cap:
            nxt = [x for x in st["events"] if "check" in x and x["k"] == cap]
            if nxt:
                continue  # the recorded check at this step decides (next event)
            return False, passes + cheap, cap
    return False, passes, st["steps"]


def replay(path: Path, cap: int | None, fails: int | None) -> dict:
    """Each photo's δ used and passes when robustify's stages end by the rule (None: when they end now)."""
    out = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        total, got = 0, None
        for st in r["stages"]:
            final = st["delta"] >= 16  # the last stage runs its 30 steps whatever the rule
            ok, p, _ = replay_stage(st, final, cap, fails)
            total += p
            if ok:
                got = st["delta"]
                break
        else:
            if r["stages"][-1]["delta"] < 16:  # the record stops before the stage this rule needs
                got = "?"
        out[r["photo"]] = (got, total)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=Path("corpus"))
    ap.add_argument("--split", default="dev")
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--names", default="", help="only these photos (comma-separated)")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/stages-SPLIT.jsonl")
    ap.add_argument("--apgd-order", default="", help="the check's APGD-T target order (default: the card's)")
    ap.add_argument("--wins", type=int, default=2, help="stop a photo after this many verified stages")
    ap.add_argument("--save-checks", type=Path, default=None, help="save every photo checked here (PNG)")
    ap.add_argument("--replay", action="store_true", help="replay the records under stage-ending rules (no robustify)")
    args = ap.parse_args()
    args.out = args.out or str(HERE / "results" / f"stages-{args.split}.jsonl")
    if not args.replay:
        record(args)
        return
    rules = [("as now", None, None)] + [(f"cap {c}", c, None) for c in (10, 15, 20, 25)] + \
        [(f"{f} failed checks", None, f) for f in (1, 2, 3)]
    base = replay(Path(args.out), None, None)
    print("| rule | photos robust at δ ≤ 2, 4, 8, 16/255 | passes | vs now | photos at a larger δ than now |")
    print("|---|---|---:|---:|---|")
    for name, cap, fails in rules:
        r = replay(Path(args.out), cap, fails)
        cum = [sum(1 for d, _ in r.values() if d != "?" and d is not None and d <= t) for t in (2, 4, 8, 16)]
        tot = sum(p for _, p in r.values())
        worse = [f"{k} {base[k][0]}→{r[k][0]}" for k in r if r[k][0] != base[k][0]]
        print(f"| {name} | {', '.join(map(str, cum))} of {len(r)} | {tot:,} | {sum(p for _, p in base.values()) / tot:.2f}× | "
              f"{'; '.join(worse) or '–'} |")


if __name__ == "__main__":
    main()
