"""Attacking and robustifying a full-resolution photo at the model's input resolution.

Why this is sound (the details are in :mod:`preempt.models.resample`): the model sees a photo x
only through z = L(x) = Rh·x·Rwᵀ (resize, crop), then colour conversion and normalisation.

* **Attacks.**  A full-resolution attack x + a with ‖a‖ ≤ ε reaches z + L(a) with
  ‖L(a)‖ ≤ g·ε, g = L's gain in the norm (1 for ℓ∞ with an averaging resize, σmax(Rh)σmax(Rw)
  for ℓ2), and, for an averaging resize, L maps the pixel box into itself.  So every attack the
  photo admits is inside the model-input ball B_{g·ε}(z) ∩ [0,1]: attacking z over that ball is
  *at least as strong* as attacking the photo, at model-resolution cost.  A photo judged robust
  there is robust against any full-resolution perturbation the attack would have found.
* **Robustification.**  The change is parametrised at model resolution, x_r = x_o + U·e with
  U = D⁻¹Lᵀ (non-negative, rows summing to 1 or 0), so ‖U·e‖∞ ≤ ‖e‖∞ and
  ‖U·e‖₂ ≤ σmax(U)‖e‖₂: keeping e in B_δ (ℓ∞) or B_{δ/σmax(U)} (ℓ2) keeps x_r in B_δ(x_o).
  The loop only ever touches z_o = L(x_o) and L·U·e (small matrices); the photo is built, 8-bit
  quantised inside its own δ-ball, and resampled once per check, and the check attacks L(file),
  the exact pixels written.

``resolution="full"`` keeps the old path (every pass resizes the full photo): the reference the
fast path is tested and benchmarked against.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import UsageError
from ..models.protocol import Model
from ..models.resample import Resampling
from ..models.wrapper import Classifier
from ..vocab import RESOLUTIONS
from .threat import ThreatModel


def resampling_for(model: Model, hw: tuple[int, int], resolution: str = "auto") -> Resampling | None:
    """The resampling to work through, or None for the full-resolution path.

    ``auto`` and ``model`` take the model-resolution path for a plain :class:`Classifier` whose
    resize is averaging (antialiased bilinear) and not the identity; randomized wrappers
    (smoothing adds noise to the photo's own pixels) and ONNX models keep the full path."""
    if resolution not in RESOLUTIONS:
        raise UsageError(f"resolution {resolution!r}: choose {', '.join(RESOLUTIONS)}")
    if resolution == "full" or not isinstance(model, Classifier):
        return None
    r = model.pre.resampling(hw, device=model.mean.device)
    if r.identity or not r.averaging:
        return None
    return r


@dataclass
class ModelInput:
    """What attacks see: ``model`` on inputs ``x`` (N,C,h,w) within ``threat``."""

    model: Any
    x: torch.Tensor
    threat: ThreatModel
    resampling: Resampling | None = None


def at_model_input(model: Model, x: torch.Tensor, threat: ThreatModel, resolution: str = "auto") -> ModelInput:
    """``(model, x, threat)`` → the cheaper, at-least-as-strong attack problem at model resolution
    (or the same problem where that does not apply)."""
    h, w = x.shape[-2:]
    r = resampling_for(model, (int(h), int(w)), resolution)
    if r is None:
        return ModelInput(model, x, threat)
    assert isinstance(model, Classifier)  # resampling_for gives a resampling for a Classifier only
    return ModelInput(model.at_input_size(), r.apply(x), threat.with_eps(threat.eps * r.gain(threat.norm)), r)
