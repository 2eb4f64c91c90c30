"""Robustify benchmark: our loop against the paper's algorithm, side by side in one run.

    python benchmarks/robustify.py                   # 500 Fashion-MNIST test images + one 4000×3000 photo
    python benchmarks/robustify.py --n 100 --no-photo
    python benchmarks/robustify.py --n 500 --aa-n 200 --no-photo --out benchmarks/results/robustify-strong.json

``ours`` is robustify with its defaults (the default ``strong`` check; ``--check pgd`` gives the
committed robustify.json's PGD-20 check).  For each method it prints clean accuracy, PGD-20 accuracy
(true labels, step ε/4, random start, a seed the robustifier never saw) before and after
robustification, our ``standard`` suite's robust accuracy, the reference AutoAttack's (PyPI
``pyautoattack``, ``version="standard"``) on the first ``--aa-n`` images, seconds and classifier
passes (forward+backward) per image, and peak RSS; then the ratios ours / paper.  The photo part runs in
a subprocess so that its peak RSS is its own.  Results go to benchmarks/results/robustify.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from harness import robustify_batched

from preempt import RobustifyConfig, load_model, robustify, threat_model
from preempt.attacks import pgd
from preempt.data import fashion_mnist
from preempt.verdict import run_suite
from preempt.verdict.check import CHECKS  # the committed results used the PGD-20 check

HERE = Path(__file__).resolve().parent


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pgd_accuracy(model, x, y, threat, seed=1234, bs=250) -> float:
    gen = torch.Generator().manual_seed(seed)
    ok = 0
    for i in range(0, len(x), bs):
        ok += pgd(model, x[i:i + bs], y[i:i + bs], threat=threat, steps=20, generator=gen).robust.sum().item()
    return ok / len(x)


def standard_accuracy(model, x, y, threat, seed=4321) -> float:
    """Our AutoAttack-style standard suite (``preempt verify --suite standard``)."""
    return run_suite(model, x, y, threat=threat, suite="standard",
                     generator=torch.Generator().manual_seed(seed)).robust.float().mean().item()


def autoattack_accuracy(model, x, y, threat, seed=0) -> float | None:
    """The reference AutoAttack (pyautoattack, standard version) run independently on ``x``."""
    if len(x) == 0:
        return None
    from harness import reference_autoattack

    robust, _ = reference_autoattack(model, x, y, threat.eps, norm=threat.norm, seed=seed, batch_size=500)
    return robust.float().mean().item()


def judged(model, xr, y, threat, aa_n: int) -> dict:
    t0 = time.perf_counter()
    std = standard_accuracy(model, xr, y, threat)
    t1 = time.perf_counter()
    aa = autoattack_accuracy(model, xr[:aa_n], y[:aa_n], threat)
    return {"standard_acc_after": std, "standard_seconds": t1 - t0, "autoattack_n": min(aa_n, len(xr)),
            "autoattack_acc_after": aa, "autoattack_seconds": time.perf_counter() - t1}


def run_method(model, x, y, cfg: RobustifyConfig, bs: int) -> dict:
    threat = threat_model(cfg.norm, cfg.eps)
    model.passes = 0
    t0 = time.perf_counter()
    run = robustify_batched(model, x, batch=bs, config=cfg)
    secs, passes, xr, reported = time.perf_counter() - t0, model.passes, run.x, run.claims
    with torch.inference_mode():
        clean = (model(xr).argmax(1) == y).float().mean().item()
    return {
        "config": asdict(cfg), "clean_acc_after": clean, "pgd20_acc_after": pgd_accuracy(model, xr, y, threat),
        "reported_robust": sum(reported) / len(reported), "seconds_per_image": secs / len(x),
        "passes_per_image": passes / len(x),
        "max_linf": float((xr - x).flatten(1).abs().amax(1).max()),
        "max_l2": float((xr - x).flatten(1).norm(dim=1).max()), "x": xr,
    }


def photo_run(model_name: str | None, size: tuple[int, int], steps: int) -> dict:
    """Robustify one large photo (the scikit-image 'coffee' photo upscaled) and measure it."""
    from PIL import Image

    src = Path(__file__).resolve().parent.parent / "examples" / "photos" / "coffee.jpg"
    im = Image.open(src).convert("RGB").resize(size, Image.BICUBIC)
    x = torch.from_numpy(__import__("numpy").asarray(im).copy()).permute(2, 0, 1).float().div(255)[None]
    model = load_model(model_name)
    tm = model.card.get("threat_model", {"norm": "linf", "eps": 0.1, "delta": 0.1})
    cfg = RobustifyConfig.of(norm=tm["norm"], eps=tm["eps"], delta=tm["delta"], steps=steps, check=CHECKS["pgd"])
    rss0 = peak_rss_mb()
    model.passes = 0
    t0 = time.perf_counter()
    r = robustify(model, x, config=cfg)
    return {"size": list(size), "seconds": time.perf_counter() - t0, "passes": model.passes,
            "robust": r.images[0].robust, "outer_steps": r.images[0].steps, "linf": r.images[0].linf,
            "psnr": r.images[0].psnr, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": rss0,
            "input_mb": x.numel() * 4 / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--model", default="fmnist-linf-fastat", help="the model of the committed results")
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--methods", default="ours,paper")
    ap.add_argument("--check", default=None, help="ours' check preset (default: robustify's default)")
    ap.add_argument("--aa-n", type=int, default=0, help="images judged by the reference AutoAttack (0: none)")
    ap.add_argument("--no-photo", action="store_true")
    ap.add_argument("--photo-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--photo-size", default="4000x3000")
    ap.add_argument("--photo-steps", type=int, default=30)
    ap.add_argument("--out", default=str(HERE / "results" / "robustify.json"))
    a = ap.parse_args()
    size = tuple(int(v) for v in a.photo_size.split("x"))
    if a.photo_only:
        print(json.dumps(photo_run(a.model, size, a.photo_steps)))
        return
    torch.manual_seed(0)
    model = load_model(a.model)
    tm = model.card["threat_model"]
    threat = threat_model(tm["norm"], tm["eps"])
    x, y = fashion_mnist("test")
    x, y = x[:a.n], y[:a.n]
    with torch.inference_mode():
        clean = (model(x).argmax(1) == y).float().mean().item()
    before = pgd_accuracy(model, x, y, threat)
    print(f"model {model.name}: {tm}; {a.n} Fashion-MNIST test images; torch threads {torch.get_num_threads()}")
    print(f"clean accuracy {clean:.2%}   PGD-20 accuracy before robustification {before:.2%}")
    res = {"model": model.name, "threat_model": tm, "n": a.n, "clean_acc": clean, "pgd20_acc_before": before,
           "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
           "command": "python " + " ".join(sys.argv), "methods": {}}
    ours_check = {"check": CHECKS[a.check]} if a.check else {}
    res["check"] = a.check or "strong (robustify's default)"
    if a.aa_n:
        res["before"] = judged(model, x, y, threat, a.aa_n)
        print("before: standard suite {standard_acc_after:.2%}, AutoAttack {autoattack_acc_after:.2%} "
              "on {autoattack_n}".format(**res["before"]), flush=True)
    cfgs = {"ours": RobustifyConfig.of(norm=tm["norm"], eps=tm["eps"], delta=tm["delta"], **ours_check),
            "paper": RobustifyConfig.paper(norm=tm["norm"], eps=tm["eps"], delta=tm["delta"])}
    for name in a.methods.split(","):
        r = run_method(model, x, y, cfgs[name], a.batch)
        if a.aa_n:
            r |= judged(model, r.pop("x"), y, threat, a.aa_n)
        else:
            r.pop("x")
        res["methods"][name] = r
        print(f"{name:>6}: clean {r['clean_acc_after']:.2%}  PGD-20 after {r['pgd20_acc_after']:.2%}  "
              f"(reported robust {r['reported_robust']:.2%})  {r['passes_per_image']:.0f} passes/img  "
              f"{r['seconds_per_image'] * 1000:.1f} ms/img  max ℓ∞ {r['max_linf']:.4f}"
              + (f"  standard suite {r['standard_acc_after']:.2%}  AutoAttack {r['autoattack_acc_after']:.2%} "
                 f"on {r['autoattack_n']}" if a.aa_n else ""), flush=True)
    if "ours" in res["methods"] and "paper" in res["methods"]:
        o, p = res["methods"]["ours"], res["methods"]["paper"]
        res["ratios"] = {"passes_ours_over_paper": o["passes_per_image"] / p["passes_per_image"],
                         "seconds_ours_over_paper": o["seconds_per_image"] / p["seconds_per_image"],
                         "pgd20_points_ours_minus_paper": 100 * (o["pgd20_acc_after"] - p["pgd20_acc_after"])}
        if a.aa_n:
            res["ratios"]["autoattack_images_ours_minus_paper"] = round(
                o["autoattack_n"] * (o["autoattack_acc_after"] - p["autoattack_acc_after"]))
        print("ratios ours/paper: passes {passes_ours_over_paper:.3f}, time {seconds_ours_over_paper:.3f}; "
              "PGD-20 accuracy difference {pgd20_points_ours_minus_paper:+.2f} points".format(**res["ratios"]))
    res["peak_rss_mb"] = peak_rss_mb()
    print(f"peak RSS {res['peak_rss_mb']:.0f} MB")
    if not a.no_photo:
        cmd = [sys.executable, __file__, "--photo-only", "--photo-size", a.photo_size,
               "--photo-steps", str(a.photo_steps)] + (["--model", a.model] if a.model else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        ph = json.loads(out.strip().splitlines()[-1])
        res["photo"] = ph
        print(f"photo {ph['size'][0]}×{ph['size'][1]}: {ph['seconds']:.1f}s, {ph['passes']} passes, "
              f"{ph['outer_steps']} outer steps, robust {ph['robust']}, ℓ∞ {ph['linf']:.4f}, PSNR {ph['psnr']:.1f} dB, "
              f"peak RSS {ph['peak_rss_mb']:.0f} MB (input tensor {ph['input_mb']:.0f} MB)")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
