"""Projected gradient descent (Madry et al., "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018), in ℓ∞ or ℓ2.

Distance: the threat model's (``Linf`` or ``L2``).  Defaults: 20 steps of size ε/4, random
start inside the ball, cross-entropy loss.  Two modes:

* ``pgd(...)`` — the attack.  Detached, per-sample early exit: a point leaves the batch at the
  first iterate that changes its label, and that iterate is returned.
* ``pgd_unrolled(...)`` — the attack kept in the computational graph, so that
  ``d loss(x_adv) / d x`` flows back to the clean input through every step.  This is what
  preemptive robustification differentiates (Moon, Lee & Song, AAAI 2022).

Example::

    from preempt import Linf, load_model
    from preempt.attacks import pgd
    model = load_model()
    res = pgd(model, x, y, threat=Linf(0.1), steps=20)
    print("robust accuracy", res.robust.float().mean().item())
"""
from __future__ import annotations

import torch

from ..core.threat import ThreatModel
from ..errors import UsageError
from ..models.protocol import Logits
from . import losses
from .base import AttackResult


def loss_and_grad(model: Logits, x: torch.Tensor, y: torch.Tensor, loss_fn, *, create_graph: bool = False):
    """Return logits at x and d sum(loss)/dx."""
    if not x.requires_grad:
        x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        loss = loss_fn(logits, y).sum()
        (g,) = torch.autograd.grad(loss, x, create_graph=create_graph)
    return logits, g


def pgd(model: Logits, x: torch.Tensor, y: torch.Tensor, *, threat: ThreatModel, steps: int = 20,
        step_size: float | None = None, random_start: bool = True, loss: str | losses.Loss = "ce",
        targeted: bool = False, early_stop: bool = True, keep: str = "first",
        generator: torch.Generator | None = None) -> AttackResult:
    """PGD attack; returns the first successful iterate per point (or the last one).

    ``keep="last"`` (with ``early_stop=False``) returns every point's last iterate instead, as
    adversarial training wants; ``success`` still says whether any iterate changed the label.

    ``targeted=True`` descends ``loss(·, y)`` towards target labels ``y``; success then means
    predicting ``y``.
    """
    loss_fn = losses.get(loss)
    alpha = threat.eps / 4 if step_size is None else step_size
    sign = -1.0 if targeted else 1.0
    x = x.detach()
    x_adv = threat.random_start(x, generator=generator) if random_start and threat.eps > 0 else x.clone()
    best = x_adv.clone()
    success = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    active = torch.arange(len(x), device=x.device)
    proj = threat.projector(x)
    passes = 0
    for t in range(steps + 1):
        whole = len(active) == len(x)  # no gather/scatter copies while every point is still in
        xa = x_adv if whole else x_adv[active]
        ya = y if whole else y[active]
        if t < steps:
            logits, g = loss_and_grad(model, xa, ya, loss_fn)
        else:
            with torch.no_grad():
                logits = model(xa)
        passes += len(active)
        pred = logits.argmax(1)
        hit = (pred == ya) if targeted else (pred != ya)
        if hit.any():
            idx = active[hit]
            best[idx] = xa[hit].detach()
            success[idx] = True
        if t == steps:
            break
        if early_stop and hit.any():
            keep_ = ~hit
            active, xa, g = active[keep_], xa[keep_], g[keep_]
            if len(active) == 0:
                break
            proj = threat.projector(x[active])
            whole = False
        new = threat.step(xa.detach(), sign * g, alpha)
        if whole:
            proj(new, out=x_adv)
        else:
            x_adv[active] = proj(new)
    if keep == "last":
        return AttackResult(x_adv, success, passes, {"attack": "pgd", "steps": steps})
    best[~success] = x_adv[~success]
    return AttackResult(best, success, passes, {"attack": "pgd", "steps": steps, "step_size": alpha,
                                                "random_start": random_start, "threat": str(threat)})


def pgd_unrolled(model: Logits, x: torch.Tensor, y: torch.Tensor, *, threat: ThreatModel, steps: int = 10,
                 step_size: float | None = None, random_start: bool = True,
                 loss: str | losses.Loss = "ce", create_graph: bool = False, graph: str = "auto",
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
    """T steps of PGD whose result stays a differentiable function of ``x``.

    Returns ``(x_T, passes)``.  The attack's own gradients are treated as constants (first
    order) unless ``create_graph=True`` (second order; meaningful for ℓ2 only, since the ℓ∞
    sign step has zero derivative).

    ``graph``: ``"full"`` keeps autograd's graph through every step (memory grows with
    ``steps × image size``); ``"diag"`` (ℓ∞ first order only) tracks the exact Jacobian
    ``d x_T / d x``, which is diagonal there, in one tensor, so memory does not grow with
    ``steps`` — the same gradient at a fraction of the memory, which is what makes
    4000×3000 photos feasible on a CPU.  ``"auto"`` picks ``diag`` where it is exact.
    """
    loss_fn = losses.get(loss)
    alpha = threat.eps / 4 if step_size is None else step_size
    if graph == "auto":
        graph = "diag" if threat.separable and not create_graph else "full"
    if graph == "diag":
        if not threat.separable or create_graph:
            raise UsageError("graph='diag' is exact only for first-order ℓ∞ PGD")
        return _unrolled_linf_diag(model, x, y, threat, steps, alpha, random_start, loss_fn, generator)
    x_t = threat.random_start(x, generator=generator) if random_start and threat.eps > 0 else x
    passes = 0
    for _ in range(steps):
        _, g = loss_and_grad(model, x_t, y, loss_fn, create_graph=create_graph)
        passes += len(x)
        if not create_graph:
            g = g.detach()
        x_t = threat.project(threat.step(x_t, g, alpha), x)
    return x_t, passes


def _unrolled_linf_diag(model: Logits, x, y, threat, steps, alpha, random_start, loss_fn, generator):
    eps = threat.eps
    c = x.detach()
    lo_e, hi_e = c - eps, c + eps
    if random_start and eps > 0:
        x_t = c + threat.sample_delta(c, eps, generator=generator)
        jac = (x_t >= 0) & (x_t <= 1)
        x_t.clamp_(0, 1)
    else:
        jac = torch.ones_like(c, dtype=torch.bool)
        x_t = c.clone()
    passes = 0
    for _ in range(steps):
        _, g = loss_and_grad(model, x_t, y, loss_fn)
        passes += len(x)
        x_t.add_(g.sign_(), alpha=alpha)  # u = x_t + α·sign(g), in place: photos are large
        inside = (x_t >= lo_e) & (x_t <= hi_e)
        torch.clamp(x_t, lo_e, hi_e, out=x_t)  # v = c + clamp(u - c, -ε, ε)
        # d v/d x_t = inside, d v/d c = not inside; then the [0,1] clip passes where 0 <= v <= 1
        jac |= ~inside
        jac &= (x_t >= 0) & (x_t <= 1)
        x_t.clamp_(0, 1)
    # value x_T, derivative diag(jac) with respect to x
    return x_t + jac * (x - c), passes
