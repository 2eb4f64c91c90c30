"""Per-sample losses the attacks maximise.  Each returns a (N,) tensor."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import UsageError

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per sample."""
    return F.cross_entropy(logits, y, reduction="none")


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max_{j≠y} z_j − z_y (positive ⇔ misclassified); Carlini & Wagner's margin."""
    zy = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    return other.amax(1) - zy


def dlr(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein 2020), untargeted: −(z_y − max_{j≠y} z_j)/(z_π1 − z_π3 + 1e-12)."""
    s, _ = logits.sort(1, descending=True)
    return margin(logits, y) / (s[:, 0] - s[:, 2] + 1e-12)


def dlr_targeted(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR (Croce & Hein 2020): −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e-12)."""
    s, _ = logits.sort(1, descending=True)
    zy = logits.gather(1, y[:, None]).squeeze(1)
    zt = logits.gather(1, target[:, None]).squeeze(1)
    return -(zy - zt) / (s[:, 0] - 0.5 * (s[:, 2] + s[:, 3]) + 1e-12)


LOSSES: dict[str, Loss] = {"ce": ce, "margin": margin, "dlr": dlr}


def get(name_or_fn: str | Loss) -> Loss:
    if callable(name_or_fn):
        return name_or_fn
    try:
        return LOSSES[name_or_fn]
    except KeyError:
        raise UsageError(f"unknown loss {name_or_fn!r}; choose from {sorted(LOSSES)}") from None
