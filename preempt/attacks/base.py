"""What every attack returns, and the bookkeeping of attacking only what is still robust."""
from __future__ import annotations

from collections.abc import Callable
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


class Survivors:
    """The points a sequence of attacks has not broken yet — the AutoAttack protocol's bookkeeping,
    written once: each attack runs only on the survivors, and its hits are written back (the
    attack's name per point, the adversarial point, the passes spent).

    Example::

        s = Survivors(model.predict(x) == y, x)           # misclassified points are broken already
        s.attack("pgd-20", lambda idx: pgd(model, x[idx], y[idx], threat=Linf(0.1)))
        s.robust, s.broken_by, s.x_adv, s.passes
    """

    def __init__(self, robust: torch.Tensor, x: torch.Tensor | None = None, *, broken_by: list[str | None] | None = None,
                 initially: str = "clean") -> None:
        self.robust = robust.clone()
        self.broken_by: list[str | None] = (list(broken_by) if broken_by is not None
                                            else [None if r else initially for r in self.robust.tolist()])
        self.x_adv = x.detach().clone() if x is not None else None
        self.passes: dict[str, int] = {}

    @property
    def index(self) -> torch.Tensor:
        """Indices of the points still robust."""
        return self.robust.nonzero().squeeze(1)

    def hit(self, name: str, idx: torch.Tensor, x_adv: torch.Tensor | None = None) -> None:
        """Mark the points ``idx`` broken by ``name`` (first break wins the name), with their adversarial points."""
        for i, was in zip(idx.tolist(), self.robust[idx].tolist()):
            if was:
                self.broken_by[i] = name
        self.robust[idx] = False
        if self.x_adv is not None and x_adv is not None:
            self.x_adv[idx] = x_adv

    def attack(self, name: str, fn: Callable[[torch.Tensor], AttackResult]) -> AttackResult | None:
        """Run ``fn(idx)`` on the survivors' indices and write its successes back; None when none is left."""
        idx = self.index
        if len(idx) == 0:
            return None
        r = fn(idx)
        self.record(name, idx, r)
        return r

    def record(self, name: str, idx: torch.Tensor, r: AttackResult) -> None:
        """Write back the result ``r`` of attack ``name`` run on the points ``idx``."""
        self.hit(name, idx[r.success], r.x_adv[r.success] if self.x_adv is not None else None)
        self.passes[name] = self.passes.get(name, 0) + r.passes

    def per_target(self, logits: torch.Tensor, y: torch.Tensor, n_targets: int,
                   fn: Callable[[torch.Tensor, torch.Tensor], AttackResult]) -> None:
        """The targeted protocol (APGD-T, FAB-T): ``fn(idx, targets)`` on the survivors, towards their
        k-th highest-ranked class other than the label (by the clean ``logits``), k = 1 … n_targets."""
        order = logits.sort(1, descending=True).indices

        def towards(k: int) -> Callable[[torch.Tensor], AttackResult]:
            def run(idx: torch.Tensor) -> AttackResult:
                ranked = order[idx]
                return fn(idx, ranked[ranked != y[idx, None]].view(len(idx), -1)[:, k - 1])
            return run

        for k in range(1, min(n_targets, order.shape[1] - 1) + 1):
            if self.attack(f"target-{k}", towards(k)) is None:
                break

    def attack_mask(self, name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """As :meth:`attack`, for an attack that returns only its success mask (no points, no passes)."""
        idx = self.index
        if len(idx):
            self.hit(name, idx[fn(idx)])
