"""Does robustify's "robust" agree with ``preempt verify``?  Side by side for several checks.

    python benchmarks/agreement.py                         # 1,000 Fashion-MNIST test images, default model
    python benchmarks/agreement.py --n 200 --variants pgd,strong --no-standard

For each robustify check (``--variants``) it robustifies the images, then attacks the returned
8-bit pixels as ``preempt verify`` does: with PGD-20 (step ε/4, random start; verify's old default)
and with verify's default suite ``strong`` (PGD-20 twice, APGD-CE, APGD-T: the attacks
of robustify's default check, from verify's random starts), each with seeds 0, 1 and 2, and with
the standard suite (APGD-CE, APGD-T, FAB-T, Square) with seed 0.  It reports
per variant: robust claimed, robust under each verification, agreement (claim = verdict, over all
images), claims broken, and the passes per image robustify spent.  Labels: the model's
prediction on the original.  Each variant's result is saved as soon as it is done
(benchmarks/results/agreement.json), and a rerun skips what is there, so a long run resumes; a rerun adds
its columns to a stored variant only when robustify wrote the same pixels (``pixels_sha256``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from harness import robustify_batched

from preempt import load_model, threat_model
from preempt.attacks import pgd
from preempt.verdict import run_suite
from preempt.verdict.check import CHECKS, Check

HERE = Path(__file__).resolve().parent

VARIANTS = {
    # name: robustify check settings (the presets of preempt.verdict.check.CHECKS, and steps between them)
    "pgd": CHECKS["pgd"],                                                 # PGD-20, one random start
    "pgd-x2": Check("pgd-x2", "ce", restarts=2),                          # two random starts
    "pgd+apgd-t": Check("pgd+apgd-t", "ce+apgd-t", apgd_steps=25, apgd_targets=3),  # + APGD-T (3 targets, 25 it)
    "strong-once": CHECKS["strong-once"],                                 # 2 starts, APGD-CE, APGD-T
    "strong": CHECKS["strong"],                                           # 2 starts, APGD-CE + APGD-T twice
    "strong-apgd-x3": Check("strong-apgd-x3", "+".join(["ce"] + ["apgd-ce", "apgd-t"] * 3), restarts=2,
                            apgd_steps=25, apgd_targets=3),                # 3 times
    "thorough": CHECKS["thorough"],
}


def verdicts(model, x, y, threat, standard: int, bs: int = 250) -> dict[str, torch.Tensor]:
    out = {}
    for seed in (0, 1, 2):
        gen = torch.Generator().manual_seed(seed)
        out[f"pgd20-seed{seed}"] = torch.cat([pgd(model, x[i:i + bs], y[i:i + bs], threat=threat, steps=20,
                                                  generator=gen).robust for i in range(0, len(x), bs)])
    for seed in (0, 1, 2):  # preempt verify's default suite: the attacks of robustify's check
        t0 = time.perf_counter()
        out[f"strong-seed{seed}"] = run_suite(model, x, y, threat=threat, suite="strong-once",
                                              generator=torch.Generator().manual_seed(seed)).robust
        print(f"  strong suite, seed {seed}: {time.perf_counter() - t0:.0f}s", flush=True)
    if standard:
        t0 = time.perf_counter()
        r = run_suite(model, x[:standard], y[:standard], threat=threat, suite="standard",
                      generator=torch.Generator().manual_seed(0))
        out[f"standard-first{standard}"] = r.robust
        print(f"  standard suite {time.perf_counter() - t0:.0f}s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--model", default=None)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--no-standard", action="store_true")
    ap.add_argument("--standard-n", type=int, default=None, help="images the standard suite attacks (default: all)")
    ap.add_argument("--out", default=str(HERE / "results" / "agreement.json"))
    ap.add_argument("--force", action="store_true", help="rerun variants that are already in the results")
    a = ap.parse_args()
    from preempt.data import fashion_mnist

    model = load_model(a.model)
    tm = model.card["threat_model"]
    threat = threat_model(tm["norm"], tm["eps"])
    x, _ = fashion_mnist("test")
    x = x[:a.n]
    y = model.predict(x)
    path = Path(a.out)
    doc = json.loads(path.read_text()) if path.exists() else {}
    key = f"{model.name} n={a.n}"
    part = doc.setdefault(key, {"model": model.name, "n": a.n, "norm": tm["norm"], "eps": tm["eps"],
                                "delta": tm["delta"], "variants": {}})
    for name in a.variants.split(","):
        if name in part["variants"] and not a.force and (a.no_standard or any(k.startswith("standard")
                                                             for k in part["variants"][name]["verified"])):
            print(f"{name}: done before, skipped", flush=True)
            continue
        run = robustify_batched(model, x, y, batch=250, norm=tm["norm"], delta=tm["delta"], eps=tm["eps"],
                                check=VARIANTS[name])
        sec, x_r, claim, passes = run.seconds, run.x, torch.tensor(run.claims), [im.passes for im in run.images]
        v = verdicts(model, x_r, y, threat, 0 if a.no_standard else (a.standard_n or len(x)))
        pixels = hashlib.sha256(torch.round(x_r * 255).to(torch.uint8).numpy().tobytes()).hexdigest()
        row = {"check": asdict(VARIANTS[name]), "claimed": float(claim.float().mean()),
               "passes_per_image": sum(passes) / len(passes), "seconds_per_image": sec / len(x),
               "pixels_sha256": pixels, "verified": {}}
        for k, ok in v.items():
            c = claim[:len(ok)]
            row["verified"][k] = {"n": len(ok), "robust": float(ok.float().mean()),
                                  "agreement": float((ok == c).float().mean()),
                                  "claims_held": float((c & ok).sum() / max(int(c.sum()), 1)),
                                  "claims_broken": int((c & ~ok).sum()),
                                  "denied_but_robust": int((~c & ok).sum())}
        before = part["variants"].get(name, {})
        if before.get("pixels_sha256") == pixels:  # the same robustified images: a rerun adds its columns
            row["verified"] = {**before["verified"], **row["verified"]}
        elif before:
            print(f"  {name}: robustify wrote other pixels than the stored run; its columns are replaced", flush=True)
        part["variants"][name] = row
        run = {"machine": f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
               "command": " ".join(["python", *sys.argv])}
        part.update(run)  # per model; the top-level pair is the last run's
        doc.update(run)
        path.write_text(json.dumps(doc, indent=1))
        print(name, json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
