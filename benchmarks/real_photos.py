"""Robustification of real photos against a standard ImageNet classifier: variants side by side.

    python benchmarks/corpus.py --out corpus/                       # the photos (dev / test halves)
    python benchmarks/real_photos.py --split dev --variants "base:;mt:inner_loss=margin-mt" --delta 8/255
    python benchmarks/real_photos.py --split test --variants "mt:inner_loss=margin-mt" --judge standard,aa

Each variant is ``NAME:key=value;key=value`` (:class:`preempt.RobustifyConfig` fields; ``check=PRESET``
names a check preset, ``check_FIELD=V`` sets a field of the check, e.g. ``check_apgd_targets=9``, ``check_apgd_order=linear``).  Every photo is robustified on its own (photos differ in size) with the
model's own label on the original, quantised as ``preempt robustify`` writes it, then judged by
attacks robustify never ran with seeds it never saw:

* ``apgd`` — APGD-CE (100 iterations), then APGD-T on 9 targets (100 iterations each), at the model
  input over the image of the ε-ball (the ball robustify's claim is about): the cheap dev judge;
* ``standard`` — our AutoAttack-style standard suite (``preempt verify --suite standard``), same ball;
* ``apgd-full``, ``standard-full`` — the same on the photo's own pixels at full resolution;
* ``aa`` — the reference AutoAttack (PyPI ``pyautoattack``, ``version="standard"``) on the photo's own
  pixels at full resolution through the model wrapper (the attacker who edits the file).

One JSON line per (variant, photo) is appended to ``--out`` (default
``benchmarks/results/real-photos.jsonl``) with the command; ``--summary`` prints the table of a file.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import torch

from preempt import Linf, RobustifyConfig, load_model, robustify
from preempt.attacks.auto_pgd import apgd, apgd_targeted
from preempt.budget import parse_budget
from preempt.core.resolution import at_model_input
from preempt.pipeline.photos import load_photo, save_image
from preempt.verdict import run_suite
from preempt.verdict.check import CHECKS, Check

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "real-photos.jsonl"


def parse_variant(spec: str) -> tuple[str, dict]:
    name, _, body = spec.partition(":")
    kw: dict = {}
    types = {f.name: f.type for f in fields(RobustifyConfig)}
    check_fields = {f"check_{f.name}": (f.name, str if f.type == "str" else int) for f in fields(Check)
                    if f.type in ("int", "int | None", "str") and f.name not in ("name", "stages", "help")}
    for item in filter(None, body.split(";")):
        k, _, v = item.partition("=")
        if k == "check":
            kw["check"] = CHECKS[v]
            continue
        if k in check_fields:  # check_apgd_targets=9: a field of the check (the default one unless check= came first)
            field_, kind = check_fields[k]
            kw["check"] = replace(kw.get("check", RobustifyConfig.check), **{field_: kind(v)})
            continue
        if k not in types:
            raise SystemExit(f"unknown RobustifyConfig field {k!r}")
        t = str(types[k])
        if "float" in t:
            kw[k] = None if v == "none" else parse_budget(v)
        elif "int" in t:
            kw[k] = int(v)
        elif "bool" in t:
            kw[k] = v.lower() in ("1", "true", "yes")
        else:
            kw[k] = v
    return name, kw


def judge_apgd(model, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int, resolution: str = "auto") -> tuple[bool, str | None]:
    mi = at_model_input(model, x, Linf(eps), resolution)
    gen = torch.Generator().manual_seed(seed)
    if model.predict(x).item() != y.item():
        return False, "clean"
    if apgd(mi.model, mi.x, y, threat=mi.threat, steps=100, loss="ce", generator=gen).success.item():
        return False, "apgd-ce"
    # targets in turn (the reference's order), as in every committed row
    if apgd_targeted(mi.model, mi.x, y, threat=mi.threat, steps=100, n_targets=9, at_once=1, generator=gen).success.item():
        return False, "apgd-t"
    return True, None


def judge_standard(model, x, y, eps, seed, resolution: str = "auto") -> tuple[bool, str | None]:
    mi = at_model_input(model, x, Linf(eps), resolution)
    r = run_suite(mi.model, mi.x, y, threat=mi.threat, suite="standard", generator=torch.Generator().manual_seed(seed))
    return bool(r.robust.item()), r.broken_by[0]


def judge_aa(model, x, y, eps, seed) -> tuple[bool, str | None]:
    """The reference AutoAttack (harness.reference_autoattack) on one photo: (held, None) or (False, what broke it)."""
    from harness import reference_autoattack

    if model.predict(x).item() != y.item():
        return False, "clean"
    robust, _ = reference_autoattack(model, x, y, eps, seed=seed)
    ok = bool(robust.item())
    return ok, None if ok else "aa"


JUDGES = {"apgd": judge_apgd, "standard": judge_standard, "aa": judge_aa,
          # the same attacks on the file's own pixels (the ball an attacker who edits the file reaches)
          "apgd-full": lambda *a: judge_apgd(*a, resolution="full"),
          "standard-full": lambda *a: judge_standard(*a, resolution="full")}


def transfer_judge(spec: str):
    """``JUDGE@MODEL`` (``aa@efficientnet-lite2``, ``apgd-full@efficientnet-lite2``): that judge on another model
    (one never robustified for), against that model's own label on the original photo."""
    base, name = spec.split("@", 1)
    other, fn = load_model(name), JUDGES[base]

    def judge(model, x, y, eps, seed, x_o=None):
        with torch.inference_mode():
            y_other = other.predict(x_o if x_o is not None else x)
        return fn(other, x, y_other, eps, seed)

    return judge


def judge_fns(judges: list[str]) -> dict:
    return {j: (transfer_judge(j) if "@" in j else JUDGES[j]) for j in judges}


def run(args: argparse.Namespace) -> None:
    model = load_model(args.model)
    files = sorted((args.corpus / args.split).glob("*.png"))[: args.photos or None]
    if args.names:
        files = [f for f in files if f.stem in args.names.split(",")]
    if not files:
        raise SystemExit(f"no photos in {args.corpus / args.split}: run benchmarks/corpus.py --out {args.corpus}")
    eps = parse_budget(args.eps)
    judges = [j for j in args.judge.split(",") if j and j != "none"]
    fns = judge_fns(judges)
    models = [model] + [load_model(m) for m in args.also_model]
    out = Path(args.out)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["variant"], r["photo"], r["eps"], r["delta"], r["model"]))
    for spec in args.variants.split(","):
        name, kw = parse_variant(spec)
        delta = parse_budget(args.delta)
        for f in files:
            key = (name, f.stem, eps, delta, "+".join([model.name, *args.also_model]))
            if key in done:
                continue
            x = load_photo(f).tensor()[None]
            with torch.inference_mode():
                y = model.predict(x)
            t0 = time.perf_counter()
            res = robustify(models if len(models) > 1 else model, x, y,
                            config=RobustifyConfig.of(norm="linf", eps=eps, delta=delta, **kw))
            if args.save:
                args.save.mkdir(parents=True, exist_ok=True)
                save_image(res.x[0], args.save / f"{name}-{f.stem}.png")
            secs = time.perf_counter() - t0
            im = res.images[0]
            row = {"variant": name, "config": spec, "photo": f.stem, "split": args.split, "model": key[-1],
                   "eps": eps, "delta": delta, "label": int(y), "claimed": im.robust, "delta_used": im.delta,
                   "psnr": im.psnr, "ssim": im.ssim, "linf": im.linf, "passes": im.passes, "steps": im.steps,
                   "seconds": secs}
            for j in judges:
                t1 = time.perf_counter()
                ok, by = fns[j](model, res.x, y, eps, args.seed, x) if "@" in j else fns[j](model, res.x, y, eps, args.seed)
                row[j], row[f"{j}_broken_by"], row[f"{j}_seconds"] = ok, by, time.perf_counter() - t1
            row["command"] = "python " + " ".join(sys.argv)
            row["machine"] = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
            with out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"{name:>12} {f.stem:<32} claimed {im.robust!s:<5} " + " ".join(f"{j} {row[j]!s:<5}" for j in judges)
                  + f" δ {im.delta * 255:.0f}/255 PSNR {im.psnr:.1f} passes {im.passes} {secs:.0f}s", flush=True)


def _key(r: dict) -> tuple:
    return (r["variant"], r["photo"], r["eps"], r["delta"], r["model"])


def judged_rows(path: Path) -> list[dict]:
    """The rows of ``path`` with the judges run afterwards (``--rejudge``, kept in PATH's ``-judged``
    sibling so that a robustify run appending to PATH at the same time loses nothing) merged in."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    extra = path.with_name(path.stem + "-judged.jsonl")
    if extra.exists():
        by = {_key(r): r for r in rows}
        for line in extra.read_text().splitlines():
            j = json.loads(line)
            if tuple(j["key"]) in by:
                by[tuple(j["key"])].update(j["result"])
    return rows


def rejudge(args: argparse.Namespace) -> None:
    """Judges run afterwards on the saved outputs (``--save``), for rows that lack them: robustify
    every photo first, then spend what time there is on the expensive judges (claimed photos first,
    ``--claimed-only`` for nothing else).  Results go to OUT's ``-judged.jsonl`` sibling."""
    model = load_model(args.model)
    judges = [j for j in args.judge.split(",") if j and j != "none"]
    fns = judge_fns(judges)
    out = Path(args.out)
    extra = out.with_name(out.stem + "-judged.jsonl")
    rows = judged_rows(out)
    todo = [r for r in rows if r["split"] == args.split and any(j not in r for j in judges)
            and (r["claimed"] or not args.claimed_only) and (not args.variants_only or r["variant"] in args.variants_only.split(","))
            and (not args.names or r["photo"] in args.names.split(","))]
    todo.sort(key=lambda r: not r["claimed"])
    for r in todo:
        saved = args.save / f"{r['variant']}-{r['photo']}.png"
        if not saved.exists():
            continue
        x_r = load_photo(saved).tensor()[None]
        x = load_photo(args.corpus / r["split"] / f"{r['photo']}.png").tensor()[None]
        y = torch.tensor([r["label"]])
        for j in judges:
            if j in r:
                continue
            t1 = time.perf_counter()
            ok, by = fns[j](model, x_r, y, r["eps"], args.seed, x) if "@" in j else fns[j](model, x_r, y, r["eps"], args.seed)
            result = {j: ok, f"{j}_broken_by": by, f"{j}_seconds": time.perf_counter() - t1}
            with extra.open("a") as fh:
                fh.write(json.dumps({"key": list(_key(r)), "result": result, "command": "python " + " ".join(sys.argv)}) + "\n")
            print(f"{r['variant']:>12} {r['photo']:<32} claimed {r['claimed']!s:<5} {j} {ok!s:<5} {result[f'{j}_seconds']:.0f}s",
                  flush=True)


def summary(path: Path) -> None:
    rows = judged_rows(path)
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["split"], r["model"], r["variant"], r["eps"], r["delta"]), []).append(r)
    print("| split | variant | ε | δ (start) | photos | claimed | apgd | standard | apgd (file) | standard (file) | AA (ref., file) "
          "| AA on lite2 | PSNR (median) | passes | s / photo |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (split, _m, var, eps, delta), rs in sorted(groups.items()):
        def frac(k: str, rs: list = rs) -> str:
            have = [r[k] for r in rs if k in r]
            return f"{sum(have)}/{len(have)}" if have else "–"
        ps = sorted(r["psnr"] for r in rs)
        print(f"| {split} | {var} | {eps * 255:.0f}/255 | {delta * 255:.0f}/255 | {len(rs)} | {frac('claimed')} | {frac('apgd')} | "
              f"{frac('standard')} | {frac('apgd-full')} | {frac('standard-full')} | {frac('aa')} | {frac('aa@efficientnet-lite2')} | {ps[len(ps) // 2]:.1f} | {sum(r['passes'] for r in rs) / len(rs):.0f} | "
              f"{sum(r['seconds'] for r in rs) / len(rs):.0f} |")


def per_photo(path: Path, split: str) -> None:
    """One Markdown row per photo of ``split`` (every variant), the judges that ran on it."""
    rows = [r for r in judged_rows(path) if r["split"] == split]
    print("| variant | photo | label | claimed | δ used | AA (ref.) | AA on lite2 | PSNR | SSIM | passes | s |")
    print("|---|---|---:|---|---|---|---|---:|---:|---:|---:|")
    mark = lambda r, k: "–" if k not in r else ("**robust**" if r[k] else f"broken ({r.get(k + '_broken_by')})")
    for r in rows:
        print(f"| {r['variant']} | {r['photo']} | {r['label']} | {'yes' if r['claimed'] else 'no'} | {r['delta_used'] * 255:.0f}/255 | "
              f"{mark(r, 'aa')} | {mark(r, 'aa@efficientnet-lite2')} | {r['psnr']:.1f} | {r['ssim']:.3f} | {r['passes']} | "
              f"{r['seconds']:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=Path("corpus"))
    ap.add_argument("--split", default="dev", choices=["dev", "test"])
    ap.add_argument("--photos", type=int, default=0, help="the first N photos of the split (0: all)")
    ap.add_argument("--names", default="", help="only these photos (comma-separated stems)")
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--also-model", action="append", default=[], help="robustify for this model too (robust for each)")
    ap.add_argument("--save", type=Path, default=None, help="write each robustified photo here (PNG)")
    ap.add_argument("--variants", default="base:")
    ap.add_argument("--eps", default="1/255")
    ap.add_argument("--delta", default="8/255")
    ap.add_argument("--judge", default="apgd", help="comma-separated: apgd, standard, apgd-full, standard-full, aa, JUDGE@MODEL (transfer); none")
    ap.add_argument("--seed", type=int, default=12345, help="the judges' seed (robustify's is its own)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--summary", type=Path, default=None, help="print the table of a results file and stop")
    ap.add_argument("--per-photo", action="store_true", help="with --summary: one row per photo of --split")
    ap.add_argument("--rejudge", action="store_true", help="run --judge on the photos saved by an earlier --save run")
    ap.add_argument("--claimed-only", action="store_true", help="with --rejudge: only photos robustify claimed")
    ap.add_argument("--variants-only", default="", help="with --rejudge: only these variants (comma-separated names)")
    args = ap.parse_args()
    if args.summary and args.per_photo:
        per_photo(args.summary, args.split)
    elif args.summary:
        summary(args.summary)
    elif args.rejudge:
        if args.save is None:
            raise SystemExit("--rejudge needs --save DIR (where the earlier run saved its photos)")
        rejudge(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
