"""The final verdict on real photos at the model's own size and larger, in float32 and bfloat16.

    python benchmarks/corpus.py --out corpus/          # corpus/test/, corpus/test-256/, …
    python benchmarks/final_verdict.py --folder corpus/test-256 --precision float32 --save runs/fv/test-256-fp32

Each photo is robustified as ``preempt robustify PHOTO --eps 1/255`` does (the card's settings, resolved by
``RobustifyConfig.for_model``), the written PNG is read back and, where robustify claims it robust, attacked by
the reference AutoAttack (``pyautoattack``, standard version, through the model wrapper, on the file's pixels).
Every row records what the loop's check said (``checked``), the final verdict (``final``), the claim, the
reference AutoAttack's verdict on the claim, δ, PSNR, SSIM, passes, seconds, the clean margin (top-1 minus
top-2 logit, for the margin buckets) and the precision that ran.  ``--precision float32`` sets
``PREEMPT_FORCE_FLOAT32=1`` (a CPU without native bfloat16, the common laptop); ``bfloat16`` uses it where native.
Rows append to ``--out`` (JSONL); a rerun skips photos already there.  ``--summary`` prints the tables.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "final-verdict.jsonl"


def _margin(model, x) -> float:
    import torch

    with torch.inference_mode():
        z = model(x)[0]
    top = z.topk(2).values
    return float(top[0] - top[1])


def _setting(kv: str) -> tuple[str, object]:
    """``FIELD=VALUE`` → (field, value): an int, a budget (``8/255``), true/false, a check preset for ``check``
    (a name), else the string."""
    k, v = kv.split("=", 1)
    if v.lower() in ("true", "false"):
        return k, v.lower() == "true"
    for conv in (int, float):
        try:
            return k, conv(v)
        except ValueError:
            pass
    if "/" in v and v.replace("/", "").replace(".", "").isdigit():
        a, b = v.split("/")
        return k, float(a) / float(b)
    return k, v


def run(args: argparse.Namespace) -> None:
    if args.precision == "float32":
        os.environ["PREEMPT_FORCE_FLOAT32"] = "1"
    import torch
    from real_photos import judge_aa  # the one reference-AutoAttack wrapper

    from preempt import load_model, robustify
    from preempt.algorithms.robustify import RobustifyConfig, precision_used
    from preempt.pipeline.photos import load_photo, save_image

    model = load_model(args.model)
    files = sorted(args.folder.glob("*.png"))
    if args.names:
        files = [f for f in files if f.stem in args.names.split(",")]
    files = files[: args.photos or None]
    eps = eval(args.eps, {})  # "1/255"
    done = set()
    if args.out.exists():
        done = {(r["folder"], r["photo"], r["precision"], r["variant"]) for r in map(json.loads, args.out.read_text().splitlines())}
    cfg = RobustifyConfig.for_model(model, eps=eps, **dict(_setting(kv) for kv in args.set))
    prec = precision_used(cfg, torch.device("cpu"))
    for f in files:
        key = (args.folder.name, f.stem, prec, args.variant)
        if key in done:
            continue
        x = load_photo(f).tensor()[None]
        t0 = time.perf_counter()
        res = robustify(model, x, config=cfg)
        secs = time.perf_counter() - t0
        im = res.images[0]
        args.save.mkdir(parents=True, exist_ok=True)
        written = args.save / f"{f.stem}.png"
        save_image(res.x[0], written)
        row = {"folder": args.folder.name, "photo": f.stem, "size": list(x.shape[-2:]), "precision": prec,
               "variant": args.variant, "eps": eps, "label": im.label, "margin": _margin(model, x),
               "checked": im.checked, "final": im.final, "final_margin": im.final_margin, "claimed": im.robust,
               "delta_used": im.delta, "psnr": im.psnr,
               "ssim": im.ssim, "passes": im.passes, "seconds": secs, "budget_map": cfg.budget_map,
               "threads": torch.get_num_threads()}
        if im.robust and args.aa:
            x_w = load_photo(written).tensor()[None]  # the file as written
            t1 = time.perf_counter()
            ok, _ = judge_aa(model, x_w, torch.tensor([im.label]), eps, args.seed)
            row["aa"], row["aa_seconds"] = ok, time.perf_counter() - t1
        row["command"] = "python " + " ".join(sys.argv)
        row["machine"] = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
        with args.out.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(f"{f.stem:<32} {prec} checked {im.checked!s:<5} final {im.final or '-':<10} claimed {im.robust!s:<5} "
              f"AA {row.get('aa', '-')!s:<5} δ {im.delta * 255:.0f}/255 PSNR {im.psnr:.1f} passes {im.passes} {secs:.0f}s",
              flush=True)


def rejudge(args: argparse.Namespace) -> None:
    """Today's final verdict (``CHECKS["final"]``, seeded as robustify's first stage) on the claims of ``--out`` whose
    files are in ``--save``, for rows judged by an older final; results go to OUT's ``-rejudged.jsonl`` sibling
    (``final_now``: held or not, ``final_now_broken_by``)."""
    import torch

    from preempt import Linf, load_model
    from preempt.algorithms.robustify import Final, final_verdict
    from preempt.pipeline.photos import load_photo

    model = load_model(args.model)
    extra = args.out.with_name(args.out.stem + "-rejudged.jsonl")
    seen = {tuple(json.loads(line)["key"]) for line in extra.read_text().splitlines()} if extra.exists() else set()
    for r in map(json.loads, args.out.read_text().splitlines()):
        key = (r["folder"], r["photo"], r["precision"], r["variant"])
        f = args.save / f"{r['photo']}.png"
        if not r["claimed"] or key in seen or r["folder"] != args.folder.name or r["variant"] != args.variant \
                or not f.exists():
            continue
        x = load_photo(f).tensor()[None]
        t0 = time.perf_counter()
        fv = final_verdict(Final(), [model], [torch.tensor([r["label"]])], x, Linf(r["eps"]), 0)
        result = {"final_now": bool(fv.robust[0]), "final_now_broken_by": fv.broken_by[0],
                  "final_now_passes": int(fv.passes[0]), "final_now_seconds": time.perf_counter() - t0}
        with extra.open("a") as fh:
            fh.write(json.dumps({"key": list(key), "result": result, "command": "python " + " ".join(sys.argv)}) + "\n")
        print(f"{r['photo']:<32} {r['precision']} final now {'held' if result['final_now'] else fv.broken_by[0]} "
              f"(AA {'held' if r.get('aa') else 'broke'}) {result['final_now_seconds']:.0f}s", flush=True)


def _rows(path: Path) -> list[dict]:
    """The rows of ``path`` with ``-rejudged.jsonl``'s results merged in."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    extra = path.with_name(path.stem + "-rejudged.jsonl")
    if extra.exists():
        by = {(r["folder"], r["photo"], r["precision"], r["variant"]): r for r in rows}
        for line in extra.read_text().splitlines():
            j = json.loads(line)
            if tuple(j["key"]) in by:
                by[tuple(j["key"])].update(j["result"])
    return rows


def summary(paths: list[Path]) -> None:
    """The table per (variant, folder, precision), then per clean-margin bucket (under 2 logits, or more)."""
    rows = [r for path in paths for r in _rows(path)]
    _table(rows, lambda r: (r["variant"], r["folder"], r["precision"]))
    print()
    _table(rows, lambda r: (r["variant"], r["folder"] + (" margin < 2" if r["margin"] < 2 else " margin ≥ 2"), r["precision"]))


def _table(rows: list[dict], key) -> None:
    groups: dict = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    print("| variant | photos | precision | n | checked | final held | claimed | AA held the claim | today's final held "
          "| robust (δ ≤ 16/255) | median PSNR (claimed) | median passes | median s |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (var, folder, prec), rs in sorted(groups.items()):
        n = len(rs)
        checked = sum(r["checked"] for r in rs)
        claimed = [r for r in rs if r["claimed"]]
        aa = [r for r in claimed if "aa" in r]
        now = [r for r in claimed if "final_now" in r]
        held = sum(r["aa"] for r in aa)
        robust_psnr = [r["psnr"] for r in claimed]
        print(f"| {var} | {folder} | {prec} | {n} | {checked} | {len(claimed)}/{checked} | {len(claimed)} | {held}/{len(aa)} | "
              f"{sum(r['final_now'] for r in now)}/{len(now)} | "
              f"{held if len(aa) == len(claimed) else '?'}/{n} | "
              f"{statistics.median(robust_psnr) if robust_psnr else float('nan'):.1f} | "
              f"{statistics.median(r['passes'] for r in rs):.0f} | {statistics.median(r['seconds'] for r in rs):.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folder", type=Path, default=Path("corpus/test-256"))
    ap.add_argument("--photos", type=int, default=0, help="the first N photos (0: all)")
    ap.add_argument("--names", default="", help="only these photos (comma-separated stems)")
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--eps", default="1/255")
    ap.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--variant", default="final", help="a name for this code's settings in the table")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="a RobustifyConfig field over the card's (budget_map=uniform), as --FIELD would set it")
    ap.add_argument("--aa", action=argparse.BooleanOptionalAction, default=True, help="the reference AutoAttack on claims")
    ap.add_argument("--seed", type=int, default=0, help="the reference AutoAttack's seed")
    ap.add_argument("--save", type=Path, default=Path("runs/final"))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--also", type=Path, action="append", default=[], help="with --summary: more results files")
    ap.add_argument("--summary", action="store_true")
    ap.add_argument("--rejudge", action="store_true", help="today's final verdict on the claims saved in --save")
    args = ap.parse_args()
    if args.summary:
        summary([args.out, *args.also])
    elif args.rejudge:
        rejudge(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
