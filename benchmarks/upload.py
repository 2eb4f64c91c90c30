"""Survive the upload: robust accuracy after a real JPEG re-encode and a resize, with and without
``--survive``, side by side in one run.

    python benchmarks/upload.py                      # 500 Fashion-MNIST test images + 22 labelled photos
    python benchmarks/upload.py --n 100 --no-photos

For each setting it robustifies the images (the library call under ``preempt robustify``), then
attacks the 8-bit results with an independent seed: PGD-20 on the file itself (what the PNG
keeps), and, for each service transform, the transform alone, PGD-20 on the upload followed by
Pillow's real codec (BPDA: real forward, differentiable approximation backward) and the codec
followed by PGD-20 (``preempt.verdict.upload.attack_uploads``; an image survives a transform only if all
three fail).  It also writes each result as a JPEG at the highest quality robustified for and
reports how many files stay inside δ (``encode_jpeg_within``), their quality and size.
Results: benchmarks/results/upload.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from harness import robustify_batched

from preempt import load_model, threat_model
from preempt.attacks import pgd
from preempt.core.quantize import to_uint8
from preempt.pipeline.jpeg import encode_jpeg_within
from preempt.pipeline.photos import Photo, encode
from preempt.verdict.check import CHECKS  # the committed results used the PGD-20 check
from preempt.verdict.upload import attack_uploads, parse

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def evaluate(model, x, y, x_o, eps: float, chains_spec: str, seed: int = 1234, bs: int = 100) -> dict:
    threat = threat_model("linf", eps)
    gen = torch.Generator().manual_seed(seed)
    chains = parse(chains_spec)
    png_ok, per = [], {str(c): [] for c in chains}
    for i in range(0, len(x), bs):
        xb, yb = x[i:i + bs], y[i:i + bs]
        png_ok.append(pgd(model, xb, yb, threat=threat, steps=20, generator=gen).robust)
        for c in chains:
            ok, _, _ = attack_uploads(model, xb, yb, threat, [c], steps=20, generator=gen)
            per[str(c)].append(ok)
    out = {"png": float(torch.cat(png_ok).float().mean())}
    out.update({k: float(torch.cat(v).float().mean()) for k, v in per.items()})
    return out


def jpeg_stats(x_r, x_o, delta: float, quality: int) -> dict:
    within, qs, jb, pb = 0, [], 0, 0
    ball = threat_model("linf", delta)
    for a, o in zip(x_r, x_o):
        like = Photo(to_uint8(a).permute(1, 2, 0).contiguous().numpy())
        data, _, q, ok = encode_jpeg_within(like, o, ball, quality)
        within += ok
        qs.append(q)
        jb += len(data)
        pb += len(encode(like, "png"))
    n = len(x_r)
    return {"quality_asked": quality, "within_delta": within / n, "mean_quality_used": sum(qs) / n,
            "mean_jpeg_kb": jb / n / 1024, "mean_png_kb": pb / n / 1024}


def run(name, model, x, y, eps, delta, settings, chains_spec, out, bs):
    rows = []
    before = evaluate(model, x, y, x, eps, chains_spec)
    rows.append({"setting": "original (not robustified)", **before})
    print(name, rows[-1], flush=True)
    for label, survive in settings:
        run = robustify_batched(model, x, y, batch=bs, delta=delta, eps=eps, survive=survive, check=CHECKS["pgd"])
        sec, x_r, infos = run.seconds / len(x), run.x, run.images
        acc = evaluate(model, x_r, y, x, eps, chains_spec)
        q = max([c.max_quality for c in parse(survive or "") if c.max_quality] or [95])
        row = {"setting": label, "survive": survive, **acc,
               "claimed": sum(i.robust for i in infos) / len(infos),
               "psnr": sum(i.psnr for i in infos) / len(infos),
               "passes_per_image": sum(i.passes for i in infos) / len(infos), "seconds_per_image": sec,
               "jpeg_output": jpeg_stats(x_r, x, delta, int(q))}
        rows.append(row)
        print(name, row, flush=True)
    out[name] = {"eps": eps, "delta": delta, "n": len(x), "transforms": chains_spec, "rows": rows}


def markdown(out: dict) -> str:
    lines = ["# Surviving the upload (benchmarks/upload.py)", "",
             f"torch {out['torch']}, {out['machine']}, {out['date']}.  Robust accuracy under an independent "
             "PGD-20 (seed 1234); for each service transform an image counts as robust only if the transform "
             "alone, PGD-20 on the upload then the real codec (BPDA), and the real codec then PGD-20 all keep "
             "the label.  Labels: the model's prediction on the original.", ""]
    for name, part in out.items():
        if not isinstance(part, dict) or "rows" not in part:
            continue
        chains = [str(c) for c in parse(part["transforms"])]
        lines += [f"## {name}: ℓ∞ ε = {part['eps']:.4g}, δ = {part['delta']:.4g}, {part['n']} images", "",
                  "| setting | claimed | PNG | " + " | ".join(chains) + " | PSNR | passes/img | s/img | JPEG in δ (q used, KB vs PNG KB) |",
                  "|---|---:|---:|" + "---:|" * len(chains) + "---:|---:|---:|---|"]
        for r in part["rows"]:
            j = r.get("jpeg_output")
            lines.append(f"| {r['setting']} | {r['claimed']:.1%} | " if "claimed" in r else f"| {r['setting']} | – | ")
            lines[-1] += f"{r['png']:.1%} | " + " | ".join(f"{r[c]:.1%}" for c in chains)
            lines[-1] += (f" | {r['psnr']:.1f} | {r['passes_per_image']:.0f} | {r['seconds_per_image']:.2f} | "
                          f"{j['within_delta']:.0%} (q {j['mean_quality_used']:.0f}, {j['mean_jpeg_kb']:.1f} vs "
                          f"{j['mean_png_kb']:.1f}) |" if "psnr" in r else " | – | – | – | – |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--no-fmnist", action="store_true")
    ap.add_argument("--no-photos", action="store_true")
    ap.add_argument("--out", default=str(HERE / "results" / "upload"))
    a = ap.parse_args()
    torch.manual_seed(0)
    out: dict = {"torch": torch.__version__, "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
                 "date": time.strftime("%Y-%m-%d"), "command": " ".join(["python", *sys.argv])}
    if not a.no_fmnist:
        from preempt.data import fashion_mnist

        m = load_model()
        x, _ = fashion_mnist("test")
        x = x[:a.n]
        y = m.predict(x)
        run(f"Fashion-MNIST, {m.name}", m, x, y, 0.1, 0.1,
            [("robustified (PNG only)", None), ("--survive jpeg:75-95", "jpeg:75-95"),
             ("--survive jpeg:75-95,resize:75%", "jpeg:75-95,resize:75%")],
            "jpeg:95,jpeg:85,jpeg:75,resize:75%", out, bs=250)
    if not a.no_photos:
        from photos import photos

        m = load_model("efficientnet-lite0")
        items = [it for it in photos() if tuple(it[1].shape[-2:]) == (512, 512)]
        x = torch.stack([it[1] for it in items])
        y = m.predict(x)
        run(f"{len(items)} labelled 512×512 photos, {m.name}", m, x, y, 1 / 255, 4 / 255,
            [("robustified (PNG only)", None), ("--survive jpeg:75-95", "jpeg:75-95")],
            "jpeg:95,jpeg:85,jpeg:75,resize:50%", out, bs=len(items))
    old = Path(a.out).with_suffix(".json")
    if old.exists():  # a part rerun alone keeps the other part's results
        prev = json.loads(old.read_text())
        out = {**{k: v for k, v in prev.items() if isinstance(v, dict)}, **out}
    Path(a.out).with_suffix(".json").write_text(json.dumps(out, indent=1))
    Path(a.out).with_suffix(".md").write_text(markdown(out))
    print(markdown(out))


if __name__ == "__main__":
    main()
