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
               "checked": im.checked, "final": im.final, "claimed": im.robust, "delta_used": im.delta, "psnr": im.psnr,
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


def summary(paths: list[Path]) -> None:
    """The table per (variant, folder, precision), then per clean-margin bucket (under 2 logits, or more)."""
    rows = [json.loads(line) for path in paths for line in path.read_text().splitlines()]
    _table(rows, lambda r: (r["variant"], r["folder"], r["precision"]))
    print()
    _table(rows, lambda r: (r["variant"], r["folder"] + (" margin < 2" if r["margin"] < 2 else " margin ≥ 2"), r["precision"]))


def _table(rows: list[dict], key) -> None:
    groups: dict = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    print("| variant | photos | precision | n | checked | final held | claimed | AA held the claim | robust (δ ≤ 16/255) "
          "| median PSNR (robust) | median passes | median s |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (var, folder, prec), rs in sorted(groups.items()):
        n = len(rs)
        checked = sum(r["checked"] for r in rs)
        claimed = [r for r in rs if r["claimed"]]
        aa = [r for r in claimed if "aa" in r]
        held = sum(r["aa"] for r in aa)
        robust_psnr = [r["psnr"] for r in claimed]
        print(f"| {var} | {folder} | {prec} | {n} | {checked} | {len(claimed)}/{checked} | {len(claimed)} | {held}/{len(aa)} | "
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
    args = ap.parse_args()
    if args.summary:
        summary([args.out, *args.also])
    else:
        run(args)


if __name__ == "__main__":
    main()
