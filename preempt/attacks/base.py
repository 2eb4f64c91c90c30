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
    label; ``passes``: classifier forward(+backward) passes spent, summed over the batch; ``closest``: per input,
    the lowest margin z_y − max_{j≠y} z_j any iterate reached (:func:`margin`; negative where it succeeded), or
    None where the attack does not report it (only APGD does)."""

    x_adv: torch.Tensor
    success: torch.Tensor
    passes: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    closest: torch.Tensor | None = None

    @property
    def robust(self) -> torch.Tensor:
        return ~self.success

    def collapse(self, group: int) -> AttackResult:
        """Rows in consecutive groups of ``group`` (one point attacked ``group`` ways, e.g. towards
        ``group`` targets at once) as one result per point: a success where some row succeeded, the
        first successful row's point (else the first row's), the passes of every row."""
        ok = self.success.view(-1, group)
        first = ok.float().argmax(1)  # the first successful row, 0 where none
        x = self.x_adv.view(len(ok), group, *self.x_adv.shape[1:])[torch.arange(len(ok), device=ok.device), first]
        closest = None if self.closest is None else self.closest.view(-1, group).amin(1)
        return AttackResult(x, ok.any(1), self.passes, self.info, closest)


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y − max_{j≠y} z_j per row (float32): how far a point is from a wrong label, in logits; < 0 misclassified."""
    z = logits.detach().float()
    other = z.scatter(1, y[:, None], float("-inf")).amax(1)
    return z.gather(1, y[:, None]).squeeze(1) - other


def ranked_targets(logits: torch.Tensor, y: torch.Tensor, n_targets: int) -> torch.Tensor:
    """(N, k) the k = min(n_targets, classes − 1) classes ranked highest by ``logits``, the label left out:
    the targets of APGD-T and FAB-T, most likely first."""
    order = logits.sort(1, descending=True).indices
    k = min(n_targets, order.shape[1] - 1)
    return order[order != y[:, None]].view(len(y), -1)[:, :k]


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
        # the lowest margin any reporting attack reached per point (AttackResult.closest); +inf: none reported
        self.closest = torch.full((len(self.robust),), float("inf"), device=self.robust.device)

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
        if r.closest is not None:
            self.closest[idx] = torch.minimum(self.closest[idx], r.closest.to(self.closest.device))

    def per_target(self, logits: torch.Tensor, y: torch.Tensor, n_targets: int,
                   fn: Callable[[torch.Tensor, torch.Tensor], AttackResult], *, at_once: int = 1,
                   ranked: torch.Tensor | None = None) -> None:
        """The targeted protocol (APGD-T, FAB-T): ``fn(idx, targets)`` on the survivors, towards their
        k-th highest-ranked class other than the label (by the clean ``logits``), k = 1 … n_targets,
        ``at_once`` targets per call: ``targets`` is (len(idx), g), g ≤ ``at_once``, and ``fn`` returns
        one result per point (broken when some target broke it; :meth:`AttackResult.collapse`).  ``ranked``:
        the (N, k) targets in the order to attack them, instead of the clean logits' order."""
        if ranked is None:
            ranked = ranked_targets(logits, y, n_targets)

        def towards(k: int, g: int) -> Callable[[torch.Tensor], AttackResult]:
            return lambda idx: fn(idx, ranked[idx, k:k + g])

        k, n = 0, ranked.shape[1]
        while k < n:
            g = min(at_once, n - k)
            if self.attack(f"target-{k + 1}" if g == 1 else f"targets-{k + 1}-{k + g}", towards(k, g)) is None:
                break
            k += g

    def attack_mask(self, name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """As :meth:`attack`, for an attack that returns only its success mask (no points, no passes)."""
        idx = self.index
        if len(idx):
            self.hit(name, idx[fn(idx)])
