"""The least visible photo the model cannot tell from a given one: the smallest change with the same model input.

A model that resizes sees a photo x only through z = Rh·x·Rwᵀ (:mod:`preempt.core.resolution`).  Every
change d = x_r − x_o splits into a part the resize keeps and a part it discards (the null space of
d ↦ Rh·d·Rwᵀ): the second part buys nothing against the model (nor against an attacker, whose reach at
the model input is z + R(B_ε) whatever it is) and costs PSNR.  Robustify's sign steps leave a lot of it.

:class:`LeastChange` replaces d by the change of least ℓ2 norm with the same model input that stays in
robustify's box (|d| ≤ δ per pixel, x_o + d ∈ [0, 1]): the Euclidean projection of 0 onto the intersection
of the affine set {d' : R d' = R d} and the box, by Dykstra's alternating projections (Boyle & Dykstra,
1986).  The affine projection is closed-form with the pseudo-inverses of Rh and Rw (a separable
operator's pseudo-inverse is separable).  After ``iters`` rounds the model input matches to a fraction
of an 8-bit level (the rounding to 8 bits that follows moves it as much), and robustify's check then
judges the photo actually written, as always.

Measured on three dev photos robustified against efficientnet-lite0 (512 px, δ = 4, 8, 16/255;
``benchmarks/archive/least_change.py``): +0.29 to +0.71 dB PSNR at 20 rounds, the model input within 0.33–0.65 8-bit
levels after rounding, every check still passing.

Example::

    least = LeastChange(model.pre.resampling((H, W)))
    d = least(x_r - x_o, lo=(-x_o).clamp(min=-delta), hi=(1 - x_o).clamp(max=delta))
"""
from __future__ import annotations

import torch

from ..errors import UsageError
from ..models.resample import Resampling


class LeastChange:
    """Dykstra's projection of 0 onto {d : R d = R d₀} ∩ [lo, hi], R = d ↦ Rh·d·Rwᵀ (see the module docstring)."""

    def __init__(self, r: Resampling, *, iters: int = 20) -> None:
        if iters < 1:
            raise UsageError(f"iters must be >= 1, got {iters}")
        self.rh, self.rw, self.iters = r.rh, r.rw, iters
        self.ph = torch.linalg.pinv(r.rh.double()).to(r.rh.dtype)  # (H, h)
        self.pw = torch.linalg.pinv(r.rw.double()).to(r.rw.dtype)  # (W, w)

    def _apply(self, d: torch.Tensor) -> torch.Tensor:
        return torch.matmul(torch.matmul(self.rh, d), self.rw.t())

    def __call__(self, d: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """The least-norm change with (nearly) the model input of ``d`` (…, H, W) inside [lo, hi]."""
        z = self._apply(d)

        def affine(u: torch.Tensor) -> torch.Tensor:  # onto {u : R u = z}
            return u - torch.matmul(torch.matmul(self.ph, self._apply(u) - z), self.pw.t())

        x = torch.zeros_like(d)
        p = torch.zeros_like(d)
        q = torch.zeros_like(d)
        for _ in range(self.iters):
            y = affine(x + p)
            p = x + p - y
            x = torch.minimum(torch.maximum(y + q, lo), hi)
            q = y + q - x
        return x
