"""Defense-GAN (Samangouei, Kabkab & Chellappa, "Defense-GAN: Protecting Classifiers Against
Adversarial Attacks Using Generative Models", ICLR 2018).

A generator G trained on clean images defines the image manifold; an input x is replaced by its
projection G(z*), z* = argmin_z ‖G(z) − x‖², found by ``steps`` gradient-descent (Adam) steps
from each of ``restarts`` random z ~ N(0, I), keeping the z with the lowest error; the classifier
sees G(z*).  The projection is an optimisation, so the deployed pipeline has no useful gradient
(``forward`` detaches it): a gradient attack on it sees zero gradients, which is why the paper's
white-box numbers look strong.  BPDA (:mod:`preempt.attacks.bpda`) attacks it with an
approximate backward: the identity, or — much closer when G(z*) is far from x —
:meth:`DefenseGAN.project_linearized`, the projection's own Gauss–Newton derivative at z*.

Defaults: L = 100 steps, R = 4 restarts, Adam learning rate 0.05 (the paper: L = 200, R = 10 —
fewer here to fit a 2-core CPU; the card records what was measured).

Example::

    from preempt.defenses import load_defense
    dgan = load_defense("fmnist-defense-gan")
    xp, err = dgan.project(x)          # G(z*) and its squared error per image
    labels = dgan.predict(x)
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import UsageError
from ..models.wrapping import Wrapped


class DefenseGAN(Wrapped):
    """``classifier(G(z*(x)))``; implements :class:`preempt.models.Model` (without gradients
    through the projection: wrap it in :class:`~preempt.attacks.bpda.BPDA` to attack it)."""

    def __init__(self, classifier: Any, generator: nn.Module, *, z_dim: int, steps: int = 100, restarts: int = 4,
                 lr: float = 0.05, seed: int = 0, card: dict[str, Any] | None = None) -> None:
        super().__init__(classifier, card or {"name": "defense-gan"})
        if steps < 0 or restarts < 1:
            raise UsageError(f"Defense-GAN needs steps >= 0 and restarts >= 1, got {steps}, {restarts}")
        self.generator = generator.eval()
        for q in self.generator.parameters():
            q.requires_grad_(False)
        self.z_dim, self.steps, self.restarts, self.lr = z_dim, steps, restarts, lr
        self.rng = torch.Generator().manual_seed(seed)

    @property
    def classifier(self) -> Any:
        return self.model

    @property
    def name(self) -> str:
        return str(self.card.get("name", "defense-gan"))

    def project(self, x: torch.Tensor, *, steps: int | None = None, trace: list[float] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(G(z*), ‖G(z*) − x‖² per image).  ``trace``: appends the mean best error after each step."""
        out, err, _ = self._project(x, steps=steps, trace=trace)
        return out, err

    def project_linearized(self, x: torch.Tensor, *, damping: float = 1e-3) -> torch.Tensor:
        """G(z*(x)) with the gradient of the projection itself instead of none: at the optimum z*
        of ‖G(z) − x‖², the implicit function theorem with the Gauss–Newton Hessian gives
        ∂G(z*)/∂x = J (JᵀJ + λI)⁻¹ Jᵀ, J = ∂G/∂z at z* — the projection onto the tangent space of
        the generator's range.  The value is the real projection's; only the backward is this
        linearisation (a BPDA approximation far closer than the identity when G(z*) is far from x).
        ``damping`` λ is relative to the mean of JᵀJ's diagonal."""
        out, _, z = self._project(x)
        c, h, w = out.shape[1:]

        def g_flat(v: torch.Tensor) -> torch.Tensor:
            return self.generator(v[None]).flatten()

        with torch.no_grad():
            jac = torch.func.vmap(torch.func.jacfwd(g_flat))(z)          # (N, CHW, z_dim)
            a = jac.transpose(1, 2) @ jac                                # (N, z_dim, z_dim)
            lam = damping * a.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-12)
            a = a + lam[:, None, None] * torch.eye(a.shape[1], device=a.device)
        d = (x - x.detach()).flatten(1)[..., None]                       # zero, with x's gradient
        lin = jac @ torch.linalg.solve(a, jac.transpose(1, 2) @ d)
        return out + lin.view(-1, c, h, w)

    def linearized(self) -> Wrapped:
        """The classifier on :meth:`project_linearized`: a model gradient attacks can run on."""
        return _Linearized(self)

    def _project(self, x: torch.Tensor, *, steps: int | None = None, trace: list[float] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        steps = self.steps if steps is None else steps
        x = x.detach()
        n, r = len(x), self.restarts
        z = torch.randn((r * n, self.z_dim), generator=self.rng).to(x.device)
        target = x.repeat(r, *([1] * (x.dim() - 1)))
        m, v = torch.zeros_like(z), torch.zeros_like(z)
        b1, b2 = 0.9, 0.999
        for t in range(1, steps + 1):
            with torch.enable_grad():
                z.requires_grad_(True)
                err = (self.generator(z) - target).pow(2).flatten(1).sum(1)
                (g,) = torch.autograd.grad(err.sum(), z)
            z = z.detach()
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            z -= self.lr * (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + 1e-8)
            if trace is not None:
                trace.append(float(err.detach().view(r, n).amin(0).mean()))
        with torch.no_grad():
            out = self.generator(z)
            err = (out - target).pow(2).flatten(1).sum(1).view(r, n)
            best = err.argmin(0)
            pick = best * n + torch.arange(n, device=x.device)
            return out[pick], err.gather(0, best[None]).squeeze(0), z[pick]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the deployed defense: the projection is not differentiated (its gradient is masked)
        return self.classifier(self.project(x)[0] + 0 * x)


class _Linearized(Wrapped):
    def __init__(self, dgan: DefenseGAN) -> None:
        super().__init__(dgan.classifier, dgan.card)
        self.dgan = dgan

    @property
    def name(self) -> str:
        return f"{self.dgan.name} (linearized projection)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.dgan.project_linearized(x))
