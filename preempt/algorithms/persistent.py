"""Persistent multi-target adversaries: robustify's inner attack for standard (non-robust) classifiers.

The paper's inner attack is a fresh T-step PGD on the cross-entropy at every outer step.  Against
a standard ImageNet classifier that fails in two measured ways (issue 21): once the softmax
saturates the cross-entropy tells the outer step almost nothing about how close an attacker is
(the loop's own loss reaches ~1e-5 while APGD-T still breaks the photo), and one short PGD
trajectory from the same kind of start is easy for the outer loop to overfit.

Here each image keeps K attackers alive across outer steps, one per runner-up class (the K most
likely wrong classes at the current point, the targets APGD-T picks), each a perturbation ``a_k`` in
the ε-ball at the model input.  Every outer step costs K forward+backward passes (plus one forward
to rank the targets): at ``z + a_k`` the gradient of the targeted margin d_k = z_t − z_y serves twice —
its sign is one more ascent step for attacker k (warm-started, so after s outer steps it has taken s
PGD steps) and, by Danskin's theorem (the gradient of a max at its maximiser), the same gradient is
the outer gradient with respect to the model input.  The outer loss is Σ_k softplus(d_k + κ): it does
not saturate while an attacker is within κ logits of the decision boundary, and every target counts.
Every ``restart_every`` outer steps one attacker (in turn) restarts from a random point of the ball, so
the loop cannot settle against one trajectory.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..core.threat import ThreatModel

if TYPE_CHECKING:
    from ..models.protocol import Model


class PersistentAdversaries:
    """K warm-started targeted attackers per image, in the model-input space of ``shape``."""

    def __init__(self, n: int, shape: tuple[int, ...], threat: ThreatModel, *, targets: int, kappa: float,
                 step_size: float | None, restart_every: int, generator: torch.Generator,
                 device: torch.device, dtype: torch.dtype) -> None:
        self.threat, self.k, self.kappa = threat, targets, kappa
        self.alpha = threat.eps / 4 if step_size is None else step_size
        self.restart_every, self.gen = restart_every, generator
        self.a = threat.sample_delta(torch.zeros((n, targets, *shape), device=device, dtype=dtype), generator=generator)
        self.turn = 0

    def loss_and_grad(self, model: Model, z: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
                      step: int, steps: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """At model inputs ``z`` (n, C, h, w) of images ``idx`` with labels ``y``: (per-image outer
        loss, its gradient with respect to ``z``, worst attacker margin per image (> 0: broken),
        passes per image).  Steps every attacker ``steps`` times (ascent on its margin); the gradients
        returned are those of the last of them, taken before its step (Danskin)."""
        n, k = len(z), self.k
        z = z.detach()
        with torch.no_grad():
            wrong = model(z).float().scatter(1, y[:, None], float("-inf"))  # float32 ranks, under bf16 autocast too
        k_eff = min(k, wrong.shape[1] - 1)
        targets = wrong.topk(k_eff, dim=1).indices  # (n, k_eff): the classes APGD-T would target first
        flat = (n * k_eff, *z.shape[1:])
        for _ in range(steps):
            a = self.a[idx, :k_eff]
            xa = (z[:, None] + a).clamp(0, 1).reshape(flat).requires_grad_(True)
            with torch.enable_grad():
                logits = model(xa).float()  # under bfloat16 autocast (loop_precision) the margins are kept in float32
                zy = logits.gather(1, y.repeat_interleave(k_eff)[:, None]).squeeze(1)
                zt = logits.gather(1, targets.reshape(-1, 1)).squeeze(1)
                d = (zt - zy).view(n, k_eff)
                loss = F.softplus(d + self.kappa).sum(1)
                (g,) = torch.autograd.grad(loss.sum(), xa)
            g = g.view(n, k_eff, *z.shape[1:])
            # each attacker ascends its own margin (softplus is monotone: the same sign), in the ball and the box
            a_new = self.threat.project_delta(self.threat.step(a.reshape(flat), g.reshape(flat), self.alpha)).view_as(a)
            self.a[idx, :k_eff] = (z[:, None] + a_new).clamp(0, 1) - z[:, None]
        if self.restart_every and step % self.restart_every == 0:
            j = self.turn % k_eff
            self.turn += 1
            fresh = self.threat.sample_delta(self.a[idx, j], generator=self.gen)
            self.a[idx, j] = fresh
        return loss.detach(), g.sum(1), d.detach().amax(1), k_eff * steps + 1
