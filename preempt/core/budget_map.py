"""Where a robustified photo may change, pixel by pixel: a map m ∈ [0, 1] that scales the ℓ∞ budget δ.

A model that crops (EfficientNet-Lite's centre 224 of 256) sees only part of the photo, so the change
robustify finds lies only there and ends in a hard rectangle at the crop's edge: plainly visible at
δ = 16/255 on a smooth background.  Two maps, multiplied:

* ``taper``: 1 deep inside what the model sees, falling linearly to 0 at its edge over ``width`` pixels
  (so no edge is drawn), 0 where the model does not look (a change there buys nothing);
* ``jnd``: a just-noticeable-difference budget from local contrast (luma standard deviation in a 7 × 7
  window): textured pixels keep the whole δ, smooth ones (sky, water, skin) ``floor`` of it, as the eye
  sees a change on a flat area first.

The map never exceeds 1, so every photo stays inside the ℓ∞ ball of radius δ: a claim's δ means what it
meant.  The ball the attacker gets (ε) is untouched.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import UsageError
from ..models.protocol import Model
from ..vocab import BUDGET_MAPS

_LUMA = (0.299, 0.587, 0.114)


def footprint(model: Model, hw: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, 1, H, W): 1 where a pixel of an H × W photo reaches the model's input, else 0 (from the adjoint of
    the model's resize and crop; everything for a model without one)."""
    geometry = getattr(model, "geometry", None)
    if geometry is None:
        return torch.ones((1, 1, *hw), device=device)
    x = torch.zeros((1, 1, *hw), device=device, requires_grad=True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(geometry(x).sum(), x)
    return (g.abs() > 0).to(x.dtype)


def taper(fp: torch.Tensor, width: int) -> torch.Tensor:
    """``fp`` (N, 1, H, W) in {0, 1} tapered: the mean of its ``width`` successive erosions (3 × 3), which rises
    linearly from 1/width at the edge to 1 at depth ``width``; 0 outside.  The photo's own border is no edge
    (a change may run up to it)."""
    if width <= 0:
        return fp
    acc = torch.zeros_like(fp)
    cur = fp
    for _ in range(width):
        cur = -F.max_pool2d(-F.pad(cur, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        acc += cur
    return (acc + fp) / (width + 1)


def jnd(x_o: torch.Tensor, floor: float = 0.25, contrast: float = 12 / 255, window: int = 7) -> torch.Tensor:
    """(N, 1, H, W): ``floor`` + (1 − floor) · min(1, σ_local / ``contrast``), σ_local the luma's standard
    deviation in a ``window`` × ``window`` neighbourhood of each pixel."""
    luma = x_o if x_o.shape[1] == 1 else (x_o[:, :3] * x_o.new_tensor(_LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    pad = window // 2
    padded = F.pad(luma, (pad, pad, pad, pad), mode="replicate")
    mean = F.avg_pool2d(padded, window, stride=1)
    var = (F.avg_pool2d(padded * padded, window, stride=1) - mean * mean).clamp_min(0)
    return floor + (1 - floor) * (var.sqrt() / contrast).clamp(max=1)


MAPS = BUDGET_MAPS


def budget_map(kind: str, model: Model, x_o: torch.Tensor, width: int | None = None) -> torch.Tensor | None:
    """The map of ``kind`` (:data:`MAPS`) for photos ``x_o`` (N, C, H, W), or None for ``uniform`` (δ
    everywhere).  ``width``: the taper's, default 1/16 of the photo's shorter side."""
    if kind not in MAPS:
        raise UsageError(f"budget map {kind!r}: choose {', '.join(MAPS)}")
    if kind == "uniform":
        return None
    hw = (int(x_o.shape[-2]), int(x_o.shape[-1]))
    w = max(2, min(hw) // 16) if width is None else width
    m = taper(footprint(model, hw, x_o.device), w).expand(len(x_o), 1, *hw)
    if kind == "taper+jnd":
        m = m * jnd(x_o)
    return m.contiguous()
