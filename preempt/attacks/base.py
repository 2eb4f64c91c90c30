"""What every attack returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class AttackResult:
    """``x_adv``: one adversarial candidate per input (the first misclassified iterate where the
    attack succeeded, else its last iterate); ``success``: True where some iterate changed the
    label; ``passes``: classifier forward(+backward) passes spent, summed over the batch."""

    x_adv: torch.Tensor
    success: torch.Tensor
    passes: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def robust(self) -> torch.Tensor:
        return ~self.success
