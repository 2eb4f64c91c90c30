"""CW-ℓ2 — the Carlini & Wagner attack ("Towards Evaluating the Robustness of Neural Networks",
IEEE S&P 2017).

Distance ℓ2, *minimised* rather than bounded: find the closest x′ that the model misclassifies,

    minimise  ‖x′ − x‖₂² + c · max(Z_y(x′) − max_{j≠y} Z_j(x′), −κ)  [+ penalty(x′)]

over x′ = lo + (hi − lo)·(tanh(w) + 1)/2 (the change of variables keeps x′ in the box [lo, hi]
with no projection), by Adam on w, with a binary search on c per point: ×10 until the first
success, then bisection.  The box is [0, 1]; with ``threat=Linf(ε)`` it is the ℓ∞ ball ∩ [0, 1],
so the attack answers "is there an adversarial point within the table's ℓ∞ budget?".

Defaults: 6 binary-search steps from c = 1, 200 Adam steps of learning rate 0.01 each, κ = 0.
``penalty(x′, logits) -> per-point tensor`` adds a differentiable term (a detector's hinge, see
:func:`preempt.defenses.magnet.cw`) and ``accept(x′, logits) -> bool mask`` must hold for an
iterate to count as a success; within a step ``accept`` is asked after ``penalty``, of the same
iterate (so it may reuse what ``penalty`` computed).

The result's ``x_adv`` is the closest successful iterate per point (the input itself where none
was found), ``success`` where one was found, ``info["l2"]`` its distance (inf where none).

Example::

    res = cw_l2(model, x, y)                          # unbounded: smallest ℓ2 adversarial points
    res.info["l2"].median()
    res = cw_l2(model, x, y, threat=Linf(0.1))        # inside the ℓ∞ ball of radius 0.1
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..core.threat import ThreatModel
from ..errors import UsageError
from ..models.protocol import Logits
from .base import AttackResult

Penalty = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cw_margin(logits: torch.Tensor, y: torch.Tensor, confidence: float = 0.0) -> torch.Tensor:
    """max(Z_y − max_{j≠y} Z_j, −κ) per point: ≤ 0 once the label is no longer the top class."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return torch.clamp(z_y - other, min=-confidence)


def cw_l2(model: Logits, x: torch.Tensor, y: torch.Tensor, *, threat: ThreatModel | None = None, confidence: float = 0.0,
          binary_steps: int = 6, steps: int = 200, lr: float = 0.01, initial_c: float = 1.0,
          penalty: Penalty | None = None, accept: Penalty | None = None,
          generator: torch.Generator | None = None) -> AttackResult:
    """CW-ℓ2 on ``model`` (see the module docstring); ``generator`` is unused (the attack is
    deterministic) and taken for the common attack signature."""
    del generator
    if threat is not None and threat.norm != "linf":
        raise UsageError(f"cw_l2 confines x′ to an ℓ∞ box only, got {threat}")
    x, n = x.detach(), len(x)
    dev = x.device
    lo = (x - threat.eps).clamp(0, 1) if threat is not None else torch.zeros_like(x)
    hi = (x + threat.eps).clamp(0, 1) if threat is not None else torch.ones_like(x)
    span = (hi - lo).clamp_min(1e-12)
    # start at x itself: w = atanh(2(x − lo)/span − 1), kept off ±1 so that atanh is finite
    w0 = torch.atanh(((x - lo) / span * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
    c = torch.full((n,), float(initial_c), device=dev)
    c_lo, c_hi = torch.zeros(n, device=dev), torch.full((n,), float("inf"), device=dev)
    best_l2 = torch.full((n,), float("inf"), device=dev)
    best = x.clone()
    passes = 0
    for _ in range(binary_steps):
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=lr)
        found = torch.zeros(n, dtype=torch.bool, device=dev)
        for _ in range(steps):
            with torch.enable_grad():
                xa = lo + span * (torch.tanh(w) + 1) / 2
                logits = model(xa)
                d2 = (xa - x).flatten(1).pow(2).sum(1)
                obj = d2 + c * cw_margin(logits, y, confidence)
                if penalty is not None:
                    obj = obj + penalty(xa, logits)
            passes += n
            with torch.no_grad():
                ok = logits.argmax(1) != y
                if accept is not None and bool(ok.any()):
                    ok &= accept(xa.detach(), logits.detach())
                closer = ok & (d2.sqrt() < best_l2)
                best_l2 = torch.where(closer, d2.sqrt(), best_l2)
                best[closer] = xa.detach()[closer]
                found |= ok
            opt.zero_grad(set_to_none=True)
            obj.sum().backward()
            opt.step()
        # binary search: smaller c where this c succeeded, larger where it did not
        c_hi = torch.where(found, torch.minimum(c_hi, c), c_hi)
        c_lo = torch.where(found, c_lo, torch.maximum(c_lo, c))
        c = torch.where(torch.isinf(c_hi), c * 10, (c_lo + c_hi) / 2)
    success = torch.isfinite(best_l2)
    return AttackResult(best, success, passes, {"attack": "cw-l2", "l2": best_l2.cpu(), "confidence": confidence,
                                                "binary_steps": binary_steps, "steps": steps, "lr": lr,
                                                "box": str(threat) if threat is not None else "[0, 1]"})
