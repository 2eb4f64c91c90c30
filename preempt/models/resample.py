"""The photo → model-input geometry as a linear map, and what that lets robustify and verify skip.

A model sees a photo x (C, H, W) through a resize (and, for ImageNet-style models, a centre crop).
Both are linear and act on rows and columns separately, so per channel

    z = Rh · x · Rwᵀ,     Rh: (h, H),  Rw: (w, W),

with (h, w) the model's input size.  :class:`Resampling` holds Rh and Rw (built by running
torch's own antialiased resize on identity matrices, so they are *exactly* the operator that
:meth:`Classifier.preprocess <preempt.models.wrapper.Classifier.preprocess>` applies) and
answers the two questions that make full-resolution photos cheap:

* **How large can an attacker's change be after the resize?**  For ℓ∞,
  ‖Rh·a·Rwᵀ‖∞ ≤ ‖Rh‖∞ ‖Rw‖∞ ‖a‖∞, where ‖R‖∞ is the largest absolute row sum; an antialiased
  bilinear resize has non-negative rows summing to 1, so the gain is exactly 1 and the image of
  [0, 1] stays in [0, 1].  For ℓ2 the gain is σmax(Rh)·σmax(Rw) (the Kronecker product's
  spectral norm).  Every full-resolution attack of size ε therefore lands inside the model-input
  ball of radius gain·ε (and inside the pixel box): attacking the model input over that ball is
  at least as strong as attacking the photo, and far cheaper.
* **How does a change made at model resolution reach the photo?**  :meth:`lift` spreads a
  model-input change e back over the pixels that produced it with U = D⁻¹Rᵀ (each photo pixel
  takes the weighted mean of the model pixels that read it; pixels outside a crop get nothing).
  U has non-negative rows summing to 1 or 0, so ‖U·e‖∞ ≤ ‖e‖∞, and ‖U·e‖₂ ≤ σmax(U)‖e‖₂.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

POLICIES = ("whole", "crop")
SPARSE_LIFT_PIXELS = 1_000_000  # Resampling.lift applies U as sparse matrices from this photo size on (CPU)


def crop_box(hw: tuple[int, int], input_size: tuple[int, int], resize_size: int | None) -> tuple[int, int, int, int]:
    """torchvision's ``Resize(resize_size)`` (shorter side) then ``CenterCrop(input_size)``:
    returns (resized H', resized W', top, left)."""
    H, W = hw
    h, w = input_size
    s = resize_size or max(h, w)
    if H <= W:
        nh, nw = s, int(s * W / H)
    else:
        nh, nw = int(s * H / W), s
    if nh < h or nw < w:  # torchvision pads here; we make the resize large enough instead
        f = max(h / nh, w / nw)
        nh, nw = max(h, math.ceil(nh * f)), max(w, math.ceil(nw * f))
    return nh, nw, int(round((nh - h) / 2.0)), int(round((nw - w) / 2.0))


def _axis(n_in: int, n_out: int, mode: str) -> torch.Tensor:
    """(n_out, n_in) matrix of torch's antialiased 1-d resize (float64)."""
    if n_in == n_out:
        return torch.eye(n_in, dtype=torch.float64)
    # width 2, not 1: torch's antialiased kernels mishandle a width-1 image (every row comes out equal)
    eye = torch.eye(n_in, dtype=torch.float64).view(n_in, 1, n_in, 1).expand(n_in, 1, n_in, 2).contiguous()
    cols = F.interpolate(eye, size=(n_out, 2), mode=mode, antialias=True, align_corners=False)
    return cols[..., 0].reshape(n_in, n_out).t().contiguous()


@lru_cache(maxsize=16)
def _matrices(hw: tuple[int, int], input_size: tuple[int, int], policy: str, resize_size: int | None,
              mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    H, W = hw
    h, w = input_size
    if policy == "whole":
        return _axis(H, h, mode), _axis(W, w, mode)
    nh, nw, top, left = crop_box(hw, input_size, resize_size)
    return _axis(H, nh, mode)[top:top + h], _axis(W, nw, mode)[left:left + w]


@dataclass(frozen=True)
class Resampling:
    """z = Rh · x · Rwᵀ per channel (see the module docstring)."""

    rh: torch.Tensor  # (h, H) float32
    rw: torch.Tensor  # (w, W) float32

    @classmethod
    def of(cls, hw: tuple[int, int], input_size: tuple[int, int], *, policy: str = "whole",
           resize_size: int | None = None, mode: str = "bilinear",
           device: str | torch.device = "cpu") -> Resampling:
        rh, rw = _matrices(tuple(hw), tuple(input_size), policy, resize_size, mode)
        return cls(rh.to(device, torch.float32), rw.to(device, torch.float32))

    @property
    def identity(self) -> bool:
        return self.rh.shape[0] == self.rh.shape[1] and self.rw.shape[0] == self.rw.shape[1] and \
            bool((self.rh == torch.eye(len(self.rh), device=self.rh.device)).all()) and \
            bool((self.rw == torch.eye(len(self.rw), device=self.rw.device)).all())

    @property
    def averaging(self) -> bool:
        """Non-negative weights and rows summing to 1: ℓ∞ gain 1 and the pixel box maps into itself."""
        return all(bool((m >= 0).all()) and bool(((m.sum(1) - 1).abs() < 1e-5).all()) for m in (self.rh, self.rw))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """(…, H, W) → (…, h, w)."""
        return torch.matmul(torch.matmul(self.rh, x), self.rw.t())

    def gain(self, norm: str) -> float:
        """Bound on ‖R·a‖ / ‖a‖ in ``norm`` (``linf`` or ``l2``)."""
        if norm == "linf":
            return float(self.rh.abs().sum(1).max() * self.rw.abs().sum(1).max())
        return float(torch.linalg.matrix_norm(self.rh.double(), 2) * torch.linalg.matrix_norm(self.rw.double(), 2))

    def lift(self, e: torch.Tensor) -> torch.Tensor:
        """(…, h, w) change on this resampling's output grid → (…, H, W) photo change,
        U = D⁻¹Rᵀ per axis (for a large downscale: bilinear interpolation between grid points).  For a photo
        of a megapixel or more U is applied as a sparse matrix (each photo pixel reads one or two grid points):
        the same values, 1.5× faster at 12 MP."""
        uh, uw = self.lift_matrices()
        if len(uh) * len(uw) < SPARSE_LIFT_PIXELS or e.device.type != "cpu":
            return torch.matmul(torch.matmul(uh, e), uw.t())
        sh, sw = uh.to_sparse(), uw.to_sparse()
        planes = e.reshape(-1, *e.shape[-2:])
        out = e.new_empty((len(planes), len(uh), len(uw)))
        for i, p in enumerate(planes):  # (Uw·(Uh·p)ᵀ)ᵀ = Uh·p·Uwᵀ
            out[i] = torch.sparse.mm(sw, torch.sparse.mm(sh, p).t()).t()
        return out.reshape(*e.shape[:-2], len(uh), len(uw))

    def lift_matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        return _normalised_t(self.rh), _normalised_t(self.rw)

    def lift_gain(self, norm: str) -> float:
        """Bound on ‖U·e‖ / ‖e‖: 1 for ℓ∞, σmax(Uh)·σmax(Uw) for ℓ2."""
        uh, uw = self.lift_matrices()
        if norm == "linf":
            return float(uh.abs().sum(1).max() * uw.abs().sum(1).max())
        return float(torch.linalg.matrix_norm(uh.double(), 2) * torch.linalg.matrix_norm(uw.double(), 2))


def _normalised_t(r: torch.Tensor) -> torch.Tensor:
    u = r.t().clamp_min(0)
    s = u.sum(1, keepdim=True)
    return torch.where(s > 0, u / s.clamp_min(1e-12), torch.zeros_like(u))
