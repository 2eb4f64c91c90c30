"""Threat models: the ℓ∞ and ℓ2 balls every attack, robustify and training work in.

A threat model is a ball ``B_ε(c) ∩ [0,1]^d`` around a centre ``c``.  It knows how to

* ``project(x, center)`` a point back into the ball and the pixel box,
* ``random_start(center)`` draw a point inside it,
* ``step(x, grad, step_size)`` take one steepest-*ascent* step (sign step for ℓ∞,
  normalised-gradient step for ℓ2; pass ``-grad`` to descend),
* ``distance(a, b)`` / ``size(delta)`` measure per-sample distances,
* ``sample_sphere(like)`` draw a point on its sphere (APGD's start),
* ``restore_budget(d, exact)`` bring an integer change (8-bit levels) back inside the ball
  (what :mod:`preempt.core.quantize` builds on).

``separable`` says whether the ball is a product of per-pixel intervals (ℓ∞): then clipping a
change pixel by pixel keeps it inside, and PGD's unrolled Jacobian is diagonal.  Attacks whose
algorithm differs per norm (FAB's hyperplane projection, Square's proposals) dispatch on ``norm``.

All tensors are batched ``(N, C, H, W)`` images in [0, 1].  ``eps`` may be overridden per
call, which is how robustify reuses one class for both its δ-ball and the attacker's ε-ball.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..errors import UsageError

__all__ = ["ThreatModel", "Linf", "L2", "threat_model", "per_sample"]

_TINY = 1e-12


_NUMPY_RNG_ABOVE = 1 << 20


def _uniform(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """U[0,1) noise shaped like ``like``.  Large CPU tensors (photos) draw from numpy's PCG64,
    seeded from ``generator``: torch's CPU generator is serial and ~20× slower there."""
    if like.device.type == "cpu" and like.numel() > _NUMPY_RNG_ABOVE:
        import numpy as np

        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device="cpu").item())
        a = np.random.default_rng(seed).random(like.numel(), dtype=np.float32)
        return torch.from_numpy(a).view(like.shape).to(like.dtype)
    return torch.rand(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a (N,) tensor so it broadcasts against x of shape (N, ...)."""
    return v.view(-1, *([1] * (x.dim() - 1)))


@dataclass(frozen=True)
class ThreatModel:
    """A norm ball of radius ``eps`` intersected with the [0, 1] pixel box."""

    eps: float
    norm: ClassVar[str] = ""
    separable: ClassVar[bool] = False  # a product of per-pixel intervals (ℓ∞): its steepest-ascent step
                                       # is the sign step and its projection a per-pixel clamp

    def __post_init__(self) -> None:
        if not (self.eps >= 0 and math.isfinite(self.eps)):
            raise UsageError(f"eps must be a finite number >= 0, got {self.eps!r}")

    # -- to be provided by the concrete balls -------------------------------------------
    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _project_ball(self, delta: torch.Tensor, eps: float) -> torch.Tensor:
        raise NotImplementedError

    def _direction(self, grad: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _sample(self, like: torch.Tensor, eps: float, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def _sphere_direction(self, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def restore_budget(self, d: torch.Tensor, exact: Callable[[], torch.Tensor], levels: int = 255) -> torch.Tensor:
        """An integer change (in 1/``levels`` steps, possibly modified in place) inside the ball of
        radius ``eps·levels``: ``d`` is the rounded change, ``exact()`` the change before rounding
        (same units; computed only by norms that need it)."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------
    def project(self, x: torch.Tensor, center: torch.Tensor, eps: float | None = None) -> torch.Tensor:
        """Project ``x`` onto ``B_eps(center) ∩ [0,1]`` (differentiable in x and center)."""
        eps = self.eps if eps is None else eps
        return (center + self._project_ball(x - center, eps)).clamp(0.0, 1.0)

    def project_delta(self, delta: torch.Tensor, eps: float | None = None) -> torch.Tensor:
        """Project a perturbation onto the ball (no pixel box): for variables that are changes,
        not images (robustify's model-resolution change)."""
        return self._project_ball(delta, self.eps if eps is None else eps)

    def sample_delta(self, like: torch.Tensor, eps: float | None = None, *,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """A random perturbation inside the ball, shaped like ``like`` (no pixel box)."""
        return self._sample(like, self.eps if eps is None else eps, generator)

    def random_start(
        self, center: torch.Tensor, eps: float | None = None, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """A random point of ``B_eps(center) ∩ [0,1]``."""
        eps = self.eps if eps is None else eps
        return self.project(center + self._sample(center, eps, generator), center, eps)

    def size(self, delta: torch.Tensor) -> torch.Tensor:
        """Per-sample norm of a batch of perturbations (N, ...)."""
        return self.distance(delta, torch.zeros_like(delta))

    def sample_sphere(self, like: torch.Tensor, eps: float | None = None, *,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """A random perturbation on the sphere of radius ``eps`` (a normalised random direction
        times ε, as AutoAttack starts APGD), shaped like ``like``."""
        return (self.eps if eps is None else eps) * self._sphere_direction(like, generator)

    def step(self, x: torch.Tensor, grad: torch.Tensor, step_size: float | torch.Tensor) -> torch.Tensor:
        """One steepest-ascent step of length ``step_size`` in this norm (not projected)."""
        if isinstance(step_size, torch.Tensor) and step_size.dim() == 1:
            step_size = per_sample(step_size, x)
        return x + step_size * self._direction(grad)

    def projector(self, center: torch.Tensor, eps: float | None = None):
        """``f(x) -> project(x, center)`` with what depends on ``center`` alone computed once;
        ``f(x, out=x)`` may work in place (for loops outside autograd over large photos)."""
        eps = self.eps if eps is None else eps

        def f(x, out=None):
            p = self.project(x, center, eps)
            return p if out is None else out.copy_(p)

        return f

    def with_eps(self, eps: float) -> ThreatModel:
        return type(self)(eps)

    def __str__(self) -> str:
        return f"{self.norm}(eps={self.eps:g})"


@dataclass(frozen=True)
class Linf(ThreatModel):
    """ℓ∞ ball: every pixel moves by at most ``eps``."""

    norm: ClassVar[str] = "linf"
    separable: ClassVar[bool] = True

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).flatten(1).abs().amax(1)

    def _project_ball(self, delta: torch.Tensor, eps: float) -> torch.Tensor:
        return delta.clamp(-eps, eps)

    def _direction(self, grad: torch.Tensor) -> torch.Tensor:
        return grad.sign()

    def projector(self, center, eps=None):
        eps = self.eps if eps is None else eps
        lo, hi = (center - eps).clamp_(min=0), (center + eps).clamp_(max=1)
        return lambda x, out=None: torch.clamp(x, lo, hi, out=out)

    def _sample(self, like, eps, generator):
        return (2 * _uniform(like, generator) - 1) * eps

    def _sphere_direction(self, like, generator):
        t = 2 * torch.rand(like.shape, generator=generator, device=like.device, dtype=like.dtype) - 1
        return t / per_sample(t.flatten(1).abs().amax(1) + _TINY, t)

    def restore_budget(self, d, exact, levels=255):
        m = math.floor(self.eps * levels + 1e-6)
        return d.clamp_(-m, m)


@dataclass(frozen=True)
class L2(ThreatModel):
    """ℓ2 ball: the whole perturbation has Euclidean norm at most ``eps``."""

    norm: ClassVar[str] = "l2"

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).flatten(1).norm(dim=1)

    def _project_ball(self, delta: torch.Tensor, eps: float) -> torch.Tensor:
        n = delta.flatten(1).norm(dim=1)
        factor = torch.clamp(eps / (n + _TINY), max=1.0)
        return delta * per_sample(factor, delta)

    def _direction(self, grad: torch.Tensor) -> torch.Tensor:
        n = grad.flatten(1).norm(dim=1)
        return grad / per_sample(n + _TINY, grad)

    def _sample(self, like, eps, generator):
        # uniform in the ball: a Gaussian direction, radius eps * U^(1/d)
        g = torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
        d = g[0].numel()
        r = _uniform(like.new_empty(like.shape[0]), generator) ** (1.0 / d)
        g = g / per_sample(g.flatten(1).norm(dim=1) + _TINY, g)
        return g * per_sample(r * eps, g)

    def _sphere_direction(self, like, generator):
        t = torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
        return t / per_sample(t.flatten(1).norm(dim=1) + _TINY, t)

    def restore_budget(self, d, exact, levels=255):
        too_far = d.flatten(1).norm(dim=1) > self.eps * levels + 1e-6
        if too_far.any():  # rounding towards zero never lengthens a vector
            d[too_far] = torch.trunc(exact()[too_far])
        return d


_NORMS = {"linf": Linf, "l2": L2}


def threat_model(norm: str, eps: float) -> ThreatModel:
    """``threat_model("linf", 0.1)`` → ``Linf(eps=0.1)``."""
    try:
        return _NORMS[norm.lower()](float(eps))
    except KeyError:
        raise UsageError(f"unknown norm {norm!r}; choose one of {sorted(_NORMS)}") from None
