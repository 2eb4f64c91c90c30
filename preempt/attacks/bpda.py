"""Backward Pass Differentiable Approximation (Athalye, Carlini & Wagner, "Obfuscated Gradients
Give a False Sense of Security", ICML 2018), with EOT for randomized preprocessing.

A defense that puts a non-differentiable or gradient-masking step g in front of the classifier
(Defense-GAN's projection, JPEG, quantisation, …) hides the gradient of f(g(x)).  BPDA runs the
real g forward and a differentiable approximation ĝ backward — by default the identity, since
such g are built to satisfy g(x) ≈ x — so ∇x f(g(x)) ≈ ∇f(g(x)) · ∂ĝ/∂x.  Any gradient attack
then runs unchanged on :class:`BPDA`, which implements :class:`preempt.models.Model`.  For a
randomized g, ``eot=k`` averages the logits of k draws (Expectation over Transformation).

Distance: whatever the attack it is combined with uses (ℓ∞ or ℓ2).  Defaults: identity backward,
``eot=1``.

Example::

    from preempt.attacks import pgd
    from preempt.attacks.bpda import BPDA
    attacked = BPDA(classifier, preprocess=defense.project)   # g forward, identity backward
    res = pgd(attacked, x, y, threat=Linf(0.1), steps=20)
    broken = defense.predict(res.x_adv) != y                   # judged by the real defense
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..errors import UsageError
from ..models.wrapping import Wrapped

Preprocess = Callable[[torch.Tensor], torch.Tensor]


class _Bpda(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fn: Preprocess, approx: Preprocess | None) -> torch.Tensor:
        ctx.approx = approx
        if approx is not None:
            ctx.save_for_backward(x)
        with torch.no_grad():
            out = fn(x.detach())
        if out.shape != x.shape and approx is None:
            raise UsageError(f"BPDA with an identity backward needs g(x) shaped like x: {tuple(out.shape)} vs {tuple(x.shape)}")
        return out.detach()

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor):
        if ctx.approx is None:
            return grad_out, None, None
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(ctx.approx(leaf), leaf, grad_out)
        return g, None, None


def bpda(fn: Preprocess, approx: Preprocess | None = None) -> Preprocess:
    """``fn`` forward, ``approx``'s vector-Jacobian product backward (identity when None)."""
    return lambda x: _Bpda.apply(x, fn, approx)


class BPDA(Wrapped):
    """``model(preprocess(x))`` with preprocess's backward replaced by ``approx`` (default identity);
    ``eot`` > 1 averages the logits over that many draws of a randomized ``preprocess``."""

    def __init__(self, model: Any, preprocess: Preprocess, *, approx: Preprocess | None = None, eot: int = 1) -> None:
        super().__init__(model)
        if eot < 1:
            raise UsageError(f"eot must be >= 1, got {eot}")
        self.preprocess, self.approx, self.eot = preprocess, approx, eot

    @property
    def name(self) -> str:
        return f"bpda({super().name})"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = bpda(self.preprocess, self.approx)
        out = self.model(g(x))
        for _ in range(self.eot - 1):
            out = out + self.model(g(x))
        return out / self.eot
