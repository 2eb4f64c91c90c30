"""The README's picture: one real photo before and after robustification, the change, and what an ε = 1/255
attacker makes of each (APGD-CE, 100 iterations, at the photo's own pixels through the model wrapper).

    python benchmarks/figure.py --photo corpus/test/skimage-chelsea.png \
        --robustified DIR/mt9-esc16-skimage-chelsea.png --out docs/images/before-after.png

``--robustified`` is the photo ``benchmarks/real_photos.py --save DIR`` wrote (the test half's run); its
verdict under the reference AutoAttack is in ``results/real-photos.jsonl``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from preempt import Linf, load_model
from preempt.attacks.auto_pgd import apgd
from preempt.budget import format_budget, parse_budget
from preempt.core.metrics import change
from preempt.pipeline.photos import load_photo


def attacked(model, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> tuple[int, bool]:
    """The label an APGD-CE attacker gets on ``x`` (and whether it changed it)."""
    g = torch.Generator().manual_seed(seed)
    r = apgd(model, x, y, threat=Linf(eps), steps=100, generator=g)
    with torch.inference_mode():
        lab = int(model.predict(r.x_adv)[0])
    return lab, bool(r.success[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photo", type=Path, required=True)
    ap.add_argument("--robustified", type=Path, required=True)
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--eps", default="1/255")
    ap.add_argument("--amplify", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("docs/images/before-after.png"))
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model, eps = load_model(args.model), parse_budget(args.eps)
    x_o, x_r = load_photo(args.photo).tensor()[None], load_photo(args.robustified).tensor()[None]
    with torch.inference_mode():
        y = model.predict(x_o)
        y_r = int(model.predict(x_r)[0])
    name = lambda k: (model.classes or [])[k] if model.classes else str(k)
    lab_o, broke_o = attacked(model, x_o, y, eps, args.seed)
    lab_r, broke_r = attacked(model, x_r, y, eps, args.seed)
    m = change(x_r, x_o)
    img = lambda t: t[0].permute(1, 2, 0).numpy().squeeze()
    diff = np.clip(0.5 + args.amplify * (img(x_r) - img(x_o)), 0, 1)
    fig, ax = plt.subplots(1, 3, figsize=(12, 4.4))
    for a, im, title in (
        (ax[0], img(x_o), f"original: “{name(int(y))}”\nattacked (ε = {format_budget(eps)}): “{name(lab_o)}”"
                          + (" — fooled" if broke_o else " — held")),
        (ax[1], img(x_r), f"robustified: “{name(y_r)}”\nattacked (ε = {format_budget(eps)}): “{name(lab_r)}”"
                          + (" — fooled" if broke_r else " — held")),
        (ax[2], diff, f"the change ×{args.amplify:g} (ℓ∞ {m['linf'][0] * 255:.0f}/255, "
                      f"PSNR {m['psnr'][0]:.1f} dB, SSIM {m['ssim'][0]:.3f})")):
        a.imshow(im, cmap="gray" if im.ndim == 2 else None, vmin=0, vmax=1)
        a.set_title(title, fontsize=10)
        a.axis("off")
    fig.suptitle(f"{args.photo.stem} against {model.name}; attacker: APGD-CE, 100 iterations", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"{args.out}: original {name(int(y))} → attacked {name(lab_o)} ({'fooled' if broke_o else 'held'}); "
          f"robustified {name(y_r)} → attacked {name(lab_r)} ({'fooled' if broke_r else 'held'}); "
          f"PSNR {m['psnr'][0]:.1f}")


if __name__ == "__main__":
    main()
