"""Per-batch training objectives.  Each returns the loss to minimise for one batch.

* ``standard`` — cross-entropy on clean images.
* ``gaussian`` — Gaussian noise augmentation, σ = ``sigma`` (Cohen et al. 2019, for smoothing).
* ``fgsm`` — α·CE(x) + (1−α)·CE(FGSM(x)) (Goodfellow et al. 2015).
* ``fast-at`` — FGSM from a random start, step 1.25ε (Wong, Rice & Kolter 2020).
* ``pgd-at`` — PGD with random start (Madry et al. 2018).
* ``preempt`` — preemptively robust training (Moon, Lee & Song 2022): x̂_r ≈ argmin_{B_δ(x)} ℓ by
  ``delta_steps`` signed descent steps, then PGD ascent within B_ε(x̂_r), then CE there.
  ``preempt_direction="ascent"`` reproduces the public reference code, which steps *up*.
* ``free-at`` (Shafahi et al. 2019) replays each batch m times and keeps its perturbation across
  replays, so it lives in the loop (:func:`preempt.train.loop.train`), not here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..attacks import losses
from ..attacks.projected_gradient import loss_and_grad, pgd
from ..core.threat import ThreatModel
from ..errors import UsageError
from ..models.protocol import Logits

METHODS = ("standard", "gaussian", "fgsm", "fast-at", "free-at", "pgd-at", "preempt")


def _ce(model: Logits, x, y):
    return F.cross_entropy(model(x), y)


def _pgd_points(model: Logits, x, y, threat: ThreatModel, steps: int, step_size: float | None, gen=None):
    return pgd(model, x, y, threat=threat, steps=steps, step_size=step_size, early_stop=False, keep="last",
               generator=gen).x_adv.detach()


def descend(model: Logits, x, y, ball: ThreatModel, steps: int, step_size: float | None = None, *, ascent: bool = False):
    """``steps`` signed (or normalised) descent steps on CE inside ``ball`` around x, from x."""
    alpha = step_size if step_size is not None else 2.5 * ball.eps / max(steps, 1)
    sign = 1.0 if ascent else -1.0
    xr = x.detach().clone()
    for _ in range(steps):
        _, g = loss_and_grad(model, xr, y, losses.ce)
        xr = ball.project(ball.step(xr, sign * g, alpha), x).detach()
    return xr


def batch_loss(method: str, model: Logits, x, y, cfg, threat: ThreatModel, delta_ball: ThreatModel, gen=None,
               update_model=None):
    """The loss to minimise; attacks are crafted on ``model``, the loss is computed through
    ``update_model`` (the DistributedDataParallel wrapper when training on several processes)."""
    attack_model, model = model, (update_model or model)
    if method == "standard":
        return _ce(model, x, y)
    if method == "gaussian":
        noise = torch.randn(x.shape, generator=gen, device=x.device) * cfg.sigma
        return _ce(model, x + noise, y)
    if method == "fgsm":
        _, g = loss_and_grad(attack_model, x, y, losses.ce)
        xa = threat.project(threat.step(x, g, threat.eps), x).detach()
        return cfg.fgsm_alpha * _ce(model, x, y) + (1 - cfg.fgsm_alpha) * _ce(model, xa, y)
    if method == "fast-at":
        x0 = threat.random_start(x, generator=gen)
        _, g = loss_and_grad(attack_model, x0, y, losses.ce)
        alpha = cfg.step_size if cfg.step_size is not None else 1.25 * threat.eps
        xa = threat.project(threat.step(x0, g, alpha), x).detach()
        return _ce(model, xa, y)
    if method == "pgd-at":
        return _ce(model, _pgd_points(attack_model, x, y, threat, cfg.steps, cfg.step_size, gen), y)
    if method == "preempt":
        xr = descend(attack_model, x, y, delta_ball, cfg.delta_steps, ascent=cfg.preempt_direction == "ascent")
        return _ce(model, _pgd_points(attack_model, xr, y, threat, cfg.steps, cfg.step_size, gen), y)
    raise UsageError(f"unknown method {method!r}; choose from {METHODS}")
