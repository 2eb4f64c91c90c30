"""A model around another model — smoothing, BPDA, the defenses — that keeps its description."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .card import Card, as_card


class Wrapped(nn.Module):
    """Implements :class:`preempt.models.Model` around ``model``: the input description (``pre``),
    ``classes``, ``card`` and the pass counter are the inner model's; subclasses define ``forward``
    (and may override ``name`` and ``predict``)."""

    differentiable = True

    def __init__(self, model: Any, card: Card | Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.model = model
        self.classes = getattr(model, "classes", None)
        self.card: Card = as_card(card if card is not None else getattr(model, "card", {}))

    @property
    def name(self) -> str:
        return str(getattr(self.model, "name", "model"))

    @property
    def pre(self):
        return self.model.pre

    @property
    def passes(self) -> int:
        return self.model.passes

    @passes.setter
    def passes(self, v: int) -> None:
        self.model.passes = v

    def predict(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Predicted labels, ``batch_size`` images at a time, without gradients."""
        with torch.no_grad():
            parts = [self(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long, device=x.device)
