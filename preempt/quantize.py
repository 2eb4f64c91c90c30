"""8-bit quantisation that keeps a robustified image inside its δ-ball.

The file on disk holds 8-bit pixels, so the robustified float image is rounded — and rounding
alone can push a pixel (ℓ∞) or the whole perturbation (ℓ2) just past δ.  These helpers round and
then restore the budget exactly in integer space, assuming the original is itself 8-bit (every
photo preempt reads is).
"""
from __future__ import annotations

import math

import torch

from .threat import L2, Linf, ThreatModel

LEVELS = 255


def to_levels(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * LEVELS)


def quantize(x_r: torch.Tensor, x_o: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    """Round ``x_r`` to the 8-bit grid, staying within ``threat.eps`` of the 8-bit ``x_o``."""
    ko = to_levels(x_o)
    kr = to_levels(x_r)
    d = kr - ko
    if isinstance(threat, Linf):
        m = math.floor(threat.eps * LEVELS + 1e-6)
        d = d.clamp(-m, m)
    elif isinstance(threat, L2):
        too_far = d.flatten(1).norm(dim=1) > threat.eps * LEVELS + 1e-6
        if too_far.any():
            # rounding towards zero never lengthens a vector
            d[too_far] = torch.trunc((x_r - x_o)[too_far] * LEVELS)
    else:  # pragma: no cover - a new norm must say how it quantises
        raise TypeError(f"no quantisation rule for {type(threat).__name__}")
    return (ko + d).clamp(0, LEVELS) / LEVELS


def quantize_change_linf(u: torch.Tensor, x_o: torch.Tensor, eps: float) -> torch.Tensor:
    """``quantize(x_o + u, x_o, Linf(eps))`` computed in place in ``u`` (overwritten), with one
    photo-sized buffer instead of five: what keeps a 12 MP photo's peak memory low."""
    m = math.floor(eps * LEVELS + 1e-6)
    u.mul_(LEVELS).round_().clamp_(-m, m)  # the change in levels: round(x_r·255) − ko, ko integral
    return u.add_(x_o, alpha=LEVELS).round_().clamp_(0, LEVELS).div_(LEVELS)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """(C,H,W) or (N,C,H,W) in [0,1] on the 8-bit grid → uint8."""
    return to_levels(x.clamp(0, 1)).to(torch.uint8)
