"""Before/after pictures at 100 %: the lowest-PSNR robust photos of a final-verdict run, side by side.

    python benchmarks/pairs.py --results benchmarks/results/final-verdict.jsonl --variant final \
        --folder corpus/test-256 --saved runs/fv/test-256-fp32 --out docs/images/pairs-256.png

One row per photo (the ``--worst`` robust ones by PSNR): the original, the robustified file as written, and the
change, amplified (``--amplify``) around grey, every pixel at 100 % (no resampling), so what a person would see
on upload is what the picture shows, crop edge included.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def row(original: Path, robust: Path, amplify: float, caption: str) -> Image.Image:
    a = np.asarray(Image.open(original).convert("RGB")).astype(np.int16)
    b = np.asarray(Image.open(robust).convert("RGB")).astype(np.int16)
    d = np.clip(128 + (b - a) * amplify, 0, 255).astype(np.uint8)
    h, w = a.shape[:2]
    gap, head = 8, 18
    out = Image.new("RGB", (3 * w + 2 * gap, h + head), "white")
    for i, im in enumerate((a.astype(np.uint8), b.astype(np.uint8), d)):
        out.paste(Image.fromarray(im), (i * (w + gap), head))
    ImageDraw.Draw(out).text((2, 2), caption, fill="black")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--variant", default="final")
    ap.add_argument("--folder", type=Path, required=True, help="the originals")
    ap.add_argument("--saved", type=Path, required=True, help="the robustified files (final_verdict.py --save)")
    ap.add_argument("--worst", type=int, default=3)
    ap.add_argument("--amplify", type=float, default=10.0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    rows = [json.loads(line) for line in args.results.read_text().splitlines()]
    rows = [r for r in rows if r["variant"] == args.variant and r["folder"] == args.folder.name and r["claimed"]]
    rows = sorted(rows, key=lambda r: r["psnr"])[: args.worst]
    if not rows:
        raise SystemExit("no robust photos of that variant and folder in the results")
    ims = [row(args.folder / f"{r['photo']}.png", args.saved / f"{r['photo']}.png", args.amplify,
               f"{r['photo']}: original | robustified (delta {r['delta_used'] * 255:.0f}/255, PSNR {r['psnr']:.1f} dB, "
               f"SSIM {r['ssim']:.3f}) | change x{args.amplify:g}") for r in rows]
    w = max(i.width for i in ims)
    out = Image.new("RGB", (w, sum(i.height for i in ims)), "white")
    y = 0
    for i in ims:
        out.paste(i, (0, y))
        y += i.height
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out.save(args.out)
    print(f"{len(ims)} photos -> {args.out}")


if __name__ == "__main__":
    main()
