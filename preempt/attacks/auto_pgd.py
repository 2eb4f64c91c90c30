"""Auto-PGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", ICML 2020): APGD-CE, APGD-DLR and the targeted APGD-T.

Distance: ℓ∞ or ℓ2 (the threat model's).  Defaults are AutoAttack's "standard" version:
100 iterations, initial step 2ε, momentum 0.75, step-size checkpoints at p_0 = 0, p_1 = 0.22,
p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06) with ρ = 0.75 (the step halves, and the iterate
restarts from the best point, when fewer than ρ of the steps since the last checkpoint raised the
loss, or when the step was not halved last time and the best loss has not improved); every
misclassified iterate is kept; ``eot`` averages gradients over draws for randomized models.
APGD-T attacks the 9 classes ranked highest by the clean logits, one after the other, each only
on the points still robust, with the targeted DLR loss (``order="linear"``: the same 9 classes, the
one whose first-order margin over the ball is least attacked first; a photo that resists all of them
meets the same attacks, a broken one is found sooner).

Example::

    from preempt.attacks import apgd, apgd_targeted
    res = apgd(model, x, y, threat=Linf(8 / 255), loss="ce")
    res = apgd_targeted(model, x, y, threat=Linf(8 / 255))
"""
from __future__ import annotations

import torch

from ..core.threat import ThreatModel
from ..errors import UsageError
from ..models.protocol import Logits
from . import losses
from .base import AttackResult, Survivors, margin, ranked_targets


def checkpoints(n_iter: int) -> list[int]:
    """The iterations at which APGD may halve its step: p_j · n_iter."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return [int(round(v * n_iter)) for v in p if v <= 1][1:]


def _start(threat: ThreatModel, x: torch.Tensor, generator) -> torch.Tensor:
    # a point on the sphere of the norm (as the reference: a normalised random direction times ε)
    return (x + threat.sample_sphere(x, generator=generator)).clamp(0, 1)


def _loss_and_grad(model: Logits, x_adv, y, loss_fn, eot: int):
    g = torch.zeros_like(x_adv)
    for _ in range(eot):
        xa = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xa)
            loss = loss_fn(logits, y)
            g += torch.autograd.grad(loss.sum(), xa)[0]
    return logits.detach(), loss.detach(), g / eot


def apgd(model: Logits, x: torch.Tensor, y: torch.Tensor, *, threat: ThreatModel, steps: int = 100,
         loss: str | losses.Loss = "ce", target: torch.Tensor | None = None, rho: float = 0.75,
         restarts: int = 1, eot: int = 1, generator: torch.Generator | None = None, group: int = 1) -> AttackResult:
    """APGD with ``loss`` (``ce`` or ``dlr``); with ``target`` given, the targeted DLR loss
    towards ``target`` (success is still any label other than ``y``).  ``group``: the rows come in
    consecutive groups of that many, one point attacked several ways (APGD-T's targets at once); the
    run stops once every group has a success, not every row."""
    tgt: torch.Tensor  # the targets of the points attacked in the current restart (set in the loop)
    if target is not None:
        loss_fn = lambda z, yy: losses.dlr_targeted(z, yy, tgt)
    else:
        loss_fn = losses.get(loss)
    x = x.detach()
    s = Survivors(torch.ones(len(x), dtype=torch.bool, device=x.device), x)
    history = None

    def restart(idx: torch.Tensor) -> AttackResult:
        nonlocal tgt, history
        if target is not None:
            tgt = target[idx]
        xa, ok, p, history, closest = _run(model, x[idx], y[idx], threat, steps, loss_fn, rho, eot, generator,
                                           group if len(idx) == len(x) else 1)
        return AttackResult(xa, ok, p, closest=closest)

    for _ in range(restarts):
        if s.attack("restart", restart) is None:
            break
    assert s.x_adv is not None
    return AttackResult(s.x_adv, ~s.robust, sum(s.passes.values()), {"attack": "apgd", "steps": steps, "loss": "dlr-targeted"
                                                    if target is not None else str(loss), "threat": str(threat),
                                                    "step_history": history}, s.closest)


def _run(model: Logits, x, y, threat, n_iter, loss_fn, rho, eot, generator, group: int = 1):
    n = len(x)
    proj = threat.projector(x)
    x_adv = proj(_start(threat, x, generator))
    logits, loss, grad = _loss_and_grad(model, x_adv, y, loss_fn, eot)
    passes = n * eot
    fooled = logits.argmax(1) != y
    closest = margin(logits, y)  # the lowest margin reached, per row (AttackResult.closest)
    adv = x_adv.clone()
    x_best, loss_best, grad_best = x_adv.clone(), loss.clone(), grad.clone()
    step = torch.full((n,), 2.0 * threat.eps, device=x.device, dtype=x.dtype)
    x_old = x_adv.clone()
    checks = set(checkpoints(n_iter))
    last_check = 0
    increases = torch.zeros(n, device=x.device)
    loss_prev = loss.clone()
    reduced_last = torch.ones(n, dtype=torch.bool, device=x.device)
    loss_best_last = loss_best.clone()
    history = []  # the step size used at each iteration (points of the last restart)
    for i in range(n_iter):
        history.append(step.clone())
        a = 0.75 if i > 0 else 1.0
        z = proj(threat.step(x_adv, grad, step))
        x_new = proj(x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_old))
        x_old, x_adv = x_adv, x_new
        logits, loss, grad = _loss_and_grad(model, x_adv, y, loss_fn, eot)
        passes += n * eot
        hit = logits.argmax(1) != y
        closest = torch.minimum(closest, margin(logits, y))
        adv[hit & ~fooled] = x_adv[hit & ~fooled]
        fooled |= hit
        if fooled.view(-1, group).any(1).all():
            break
        increases += (loss > loss_prev).float()
        loss_prev = loss
        better = loss > loss_best
        x_best[better], grad_best[better], loss_best[better] = x_adv[better], grad[better], loss[better]
        if (i + 1) in checks:
            k = i + 1 - last_check
            osc = increases <= k * rho
            no_impr = ~reduced_last & (loss_best_last >= loss_best)
            halve = osc | no_impr
            reduced_last = halve
            loss_best_last = loss_best.clone()
            if halve.any():
                step[halve] /= 2
                x_adv[halve] = x_best[halve]
                grad[halve] = grad_best[halve]
            increases.zero_()
            last_check = i + 1
    return adv, fooled, passes, torch.stack(history) if history else None, closest


# at_once=None: several targets at once while the batch stays within this many rows.  On 2 CPU cores one
# forward+backward of efficientnet-lite0 cost ~1.5x less per image at batch 4-9 than at batch 1 (1.2x at batch 2), more
# again at 18 and 32 (benchmarks/results/pass-cost.md); yet inside robustify the checks that fail cost more
# (a photo's 9 rows run until its first break) and the whole run was no faster (0.97x,
# benchmarks/results/breakdown.md), so the default stays the reference's one target at a time.
TARGET_ROWS = 9


ORDERS = ("logits", "linear")  # APGD-T's target order: the reference's, or by first-order margin (linear_order)


def linear_order(model: Logits, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor,
                 threat: ThreatModel) -> torch.Tensor:
    """``targets`` (N, k) re-ordered per point by the first-order margin over the threat's ball,
    (z_y − z_t)(x) − ε‖∇ₓ(z_y − z_t)‖_* (‖·‖_* the dual norm: ℓ1 for ℓ∞, ℓ2 for ℓ2), the least first: the
    target a linear model would reach soonest.  One pass per (point, target): the points repeated k times."""
    n, k = targets.shape
    rows = x.detach().repeat_interleave(k, 0).requires_grad_(True)
    with torch.enable_grad():
        z = model(rows)
        i = torch.arange(n * k, device=x.device)
        m = z[i, y.repeat_interleave(k)] - z[i, targets.reshape(-1)]
        (g,) = torch.autograd.grad(m.sum(), rows)
    dual = g.flatten(1).abs().sum(1) if threat.norm == "linf" else g.flatten(1).norm(dim=1)
    reach = (m.detach() - threat.eps * dual).view(n, k)
    return targets.gather(1, torch.sort(reach, dim=1, stable=True).indices)


def apgd_targeted(model: Logits, x: torch.Tensor, y: torch.Tensor, *, threat: ThreatModel, steps: int = 100,
                  n_targets: int = 9, rho: float = 0.75, eot: int = 1, at_once: int | None = 1,
                  order: str = "logits", generator: torch.Generator | None = None) -> AttackResult:
    """APGD-T: targeted DLR towards each of the ``n_targets`` highest-ranked other classes.

    ``at_once`` targets run as one batch (a point attacked towards g targets is g rows, and the run
    stops once every point of the batch has a success: for one photo, at its first); 1 (default): in
    turn, the reference's order; None: as many as keep the batch within ``TARGET_ROWS`` rows (all 9
    for one photo).  Each target still gets its own ``steps`` iterations from its own random start,
    as when run in turn; only the batch shape changes (worth it where a pass of many rows costs little
    more than one, as on a GPU; on 2 CPU cores robustify was no faster with it).  ``order``: ``logits``
    (the reference's) or ``linear`` (:func:`linear_order`, one more pass per target; on the photos
    robustify's check broke with APGD-T, 1.76× fewer passes to the break: benchmarks/results/target-order.md)."""
    if order not in ORDERS:
        raise UsageError(f"APGD-T order {order!r}: choose {', '.join(ORDERS)}")
    x = x.detach()
    with torch.no_grad():
        z = model(x)
    ranked = None
    if order == "linear":
        ranked = linear_order(model, x, y, ranked_targets(z, y, n_targets), threat)
    g_max = at_once if at_once is not None else max(1, TARGET_ROWS // max(len(x), 1))
    s = Survivors(torch.ones(len(x), dtype=torch.bool, device=x.device), x)

    def towards(idx: torch.Tensor, tgt: torch.Tensor) -> AttackResult:
        g = tgt.shape[1]
        rows = idx.repeat_interleave(g)
        r = apgd(model, x[rows], y[rows], threat=threat, steps=steps, target=tgt.reshape(-1), rho=rho, eot=eot,
                 generator=generator, group=g)
        return r.collapse(g)

    s.per_target(z, y, n_targets, towards, at_once=max(1, g_max), ranked=ranked)
    assert s.x_adv is not None
    passes = len(x) + sum(s.passes.values()) + (ranked.numel() if ranked is not None else 0)
    return AttackResult(s.x_adv, ~s.robust, passes, {"attack": "apgd-t", "steps": steps, "n_targets": n_targets,
                                                     "order": order, "threat": str(threat)}, s.closest)
