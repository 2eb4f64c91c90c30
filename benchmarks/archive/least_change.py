"""What ``least_change`` buys on robustified photos: PSNR at the same model input, and the check's verdict.

    python benchmarks/archive/least_change.py --dir runs/rp/dev --variant fold-g8-bf16 \
        --photos foolbox-imagenet_04_949,foolbox-imagenet_00_243,skimage-rocket   # → results/least-change.json

For each photo robustified by ``benchmarks/real_photos.py --save DIR`` (written as ``VARIANT-PHOTO.png``, next to
its original in the corpus): the written change d, the least-ℓ2 change with the same model input inside the
same δ-box (:class:`preempt.core.least_change.LeastChange`, 10, 20, 30 and 100 rounds; robustify runs 20), rounded
to 8 bits as robustify writes it; PSNR before and after, the largest change of the model input in 8-bit levels, and
robustify's check (the card's, ε = 1/255, seed 1) on the written photo and on the 20-round least-change one.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from preempt import load_model
from preempt.algorithms.robustify import recommended
from preempt.core.least_change import LeastChange
from preempt.core.quantize import quantize
from preempt.core.threat import threat_model
from preempt.pipeline.photos import load_photo

HERE = Path(__file__).resolve().parent


def psnr(d: torch.Tensor) -> float:
    return float(-10 * torch.log10(d.pow(2).mean()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", type=Path, default=Path("runs/rp/dev"))
    ap.add_argument("--variant", default="fold-g8-bf16")
    ap.add_argument("--photos", default="foolbox-imagenet_04_949,foolbox-imagenet_00_243,skimage-rocket")
    ap.add_argument("--corpus", type=Path, default=Path("corpus"))
    ap.add_argument("--split", default="dev")
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "least-change.json")
    args = ap.parse_args()
    model = load_model(args.model)
    check = recommended(model)["check"]
    rows = []
    for name in args.photos.split(","):
        x_o = load_photo(args.corpus / args.split / f"{name}.png").tensor()[None]
        x_r = load_photo(args.dir / f"{args.variant}-{name}.png").tensor()[None]
        d = x_r - x_o
        delta = float(d.abs().max())
        r = model.pre.resampling(tuple(x_o.shape[-2:]))
        lo, hi = (-x_o).clamp(min=-delta), (1 - x_o).clamp(max=delta)
        ball_d = threat_model("linf", delta)
        y = model.predict(x_o)
        row: dict = {"photo": name, "delta_levels": round(delta * 255), "psnr": round(psnr(d), 2)}
        judged = x_r
        for iters in (10, 20, 30, 100):
            t = time.perf_counter()
            least = LeastChange(r, iters=iters)(d, lo, hi)
            q = quantize(x_o + least, x_o, ball_d)  # as robustify writes it
            judged = q if iters == 20 else judged
            row[f"iters_{iters}"] = {"psnr": round(psnr(q - x_o), 2), "seconds": round(time.perf_counter() - t, 2),
                                     "model_input_gap_levels": round(float((r.apply(q) - r.apply(x_r)).abs().max() * 255), 2)}
        ball = threat_model("linf", 1 / 255)
        row["check_written"] = bool(check.judge(model, x_r, y, ball, generator=torch.Generator().manual_seed(1)).robust[0])
        row["check_least_change_20"] = bool(check.judge(model, judged, y, ball,
                                                        generator=torch.Generator().manual_seed(1)).robust[0])
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.write_text(json.dumps({"command": "python " + " ".join(sys.argv), "check": check.name,
                                    "apgd_targets": check.apgd_targets, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
