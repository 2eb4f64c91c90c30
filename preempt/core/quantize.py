"""8-bit quantisation that keeps a robustified image inside its δ-ball.

The file on disk holds 8-bit pixels, so the robustified float image is rounded — and rounding
alone can push a pixel (ℓ∞) or the whole perturbation (ℓ2) just past δ.  These helpers round and
then restore the budget exactly in integer space, assuming the original is itself 8-bit (every
photo preempt reads is).
"""
from __future__ import annotations

import torch

from .threat import ThreatModel

LEVELS = 255


def to_levels(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * LEVELS)


def quantize(x_r: torch.Tensor, x_o: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    """Round ``x_r`` to the 8-bit grid, staying within ``threat.eps`` of the 8-bit ``x_o``."""
    ko = to_levels(x_o)
    kr = to_levels(x_r)
    d = threat.restore_budget(kr - ko, lambda: (x_r - x_o) * LEVELS, LEVELS)
    return (ko + d).clamp(0, LEVELS) / LEVELS


def quantize_change(u: torch.Tensor, x_o: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    """``quantize(x_o + u, x_o, threat)`` with ``u`` overwritten.  For a separable ball (ℓ∞) it is
    computed in place, with one photo-sized buffer instead of five: what keeps a 12 MP photo's
    peak memory low."""
    if not threat.separable:
        return quantize(u.add_(x_o), x_o, threat)
    # the change in levels: round(x_r·255) − ko, ko integral; per pixel, so no unrounded copy is needed
    u = threat.restore_budget(u.mul_(LEVELS).round_(), lambda: u, LEVELS)
    return u.add_(x_o, alpha=LEVELS).round_().clamp_(0, LEVELS).div_(LEVELS)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """(C,H,W) or (N,C,H,W) in [0,1] on the 8-bit grid → uint8."""
    return to_levels(x.clamp(0, 1)).to(torch.uint8)
