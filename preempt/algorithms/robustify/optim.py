"""robustify's outer optimisers (sign descent, the tanh-box RMSprop) and the best iterate kept."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

import torch

from .config import RobustifyConfig
from .parts import TanhBox
from .space import Problem

if TYPE_CHECKING:
    pass


class BestIterate:
    """The variable at the lowest outer loss seen after ``warmup`` steps, per image: what an image
    that is never verified is written as (the last iterate is often worse: its step may have been a
    big one the inner attack had not caught up with)."""

    def __init__(self, opt: Optimizer, n: int, warmup: int) -> None:
        self.opt, self.n, self.warmup = opt, n, warmup
        self.loss = torch.full((n,), float("inf"))
        self.v: torch.Tensor | None = None

    def offer(self, idx: torch.Tensor, k: int, loss: torch.Tensor) -> None:
        """Called before outer step k is taken: the current variables of ``idx`` have outer loss ``loss``."""
        if k <= self.warmup:
            return
        cur = self.opt.current(idx).detach()
        if self.v is None:
            self.v = cur.new_zeros((self.n, *cur.shape[1:]))
        better = (loss.cpu() < self.loss[idx.cpu()]).to(idx.device)
        if better.any():
            self.loss[idx[better].cpu()] = loss[better].cpu()
            self.v[idx[better]] = cur[better]

    def current(self, idx: torch.Tensor) -> torch.Tensor:
        cur = self.opt.current(idx).clone()
        if self.v is not None:
            seen = torch.isfinite(self.loss[idx.cpu()]).to(idx.device)
            cur[seen] = self.v[idx[seen]]
        return cur


class Optimizer(Protocol):
    def current(self, idx: torch.Tensor) -> torch.Tensor: ...
    def variable(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
    def update(self, idx: torch.Tensor, leaf: torch.Tensor, xr: torch.Tensor, g: torch.Tensor, k: int) -> None: ...
    def restore(self, idx: torch.Tensor, v: torch.Tensor) -> None: ...


class SignDescent:
    """Steepest descent in the δ-ball's norm (sign steps for ℓ∞), the step cosine-decayed from
    ``step_size`` (default δ/4) to a tenth of it, projected back into the ball."""

    def __init__(self, prob: Problem, cfg: RobustifyConfig, start: torch.Tensor) -> None:
        self.prob, self.cfg, self.x = prob, cfg, start
        step = getattr(cfg.outer, "step_size", None)
        self.alpha0 = step if step is not None else prob.ball.eps / 4

    def current(self, idx: torch.Tensor) -> torch.Tensor:
        return self.x[idx]

    def variable(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        leaf = self.x[idx].detach().requires_grad_(True)
        return leaf, leaf

    def restore(self, idx: torch.Tensor, v: torch.Tensor) -> None:
        self.x[idx] = v

    def update(self, idx, leaf, xr, g, k) -> None:
        steps = max(self.cfg.steps, 1)
        alpha = self.alpha0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (k - 1) / steps)))
        self.x[idx] = self.prob.project(self.prob.ball.step(xr.detach(), -g, alpha), idx)


class TanhRMSprop:
    """The reference code's optimizer (ℓ∞): x_r = lo + (tanh(w) + 1)/2 · (hi − lo) over the box
    B_δ(x_o) ∩ [0, 1], RMSprop on w."""

    def __init__(self, prob: Problem, cfg: RobustifyConfig, start: torch.Tensor) -> None:
        assert isinstance(cfg.outer, TanhBox), cfg.outer  # the loop picks this optimiser for that part only
        self.prob, self.cfg, self.lr = prob, cfg, cfg.outer.lr
        self.lo, self.hi = prob.box()
        self.w = torch.atanh(((start - self.lo) / (self.hi - self.lo).clamp_min(1e-12) - 0.5) * 1.999)
        self.sq = torch.zeros_like(self.w)
        self.x = start

    def _box(self, w: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return self.lo[idx] + (torch.tanh(w) + 1) / 2 * (self.hi[idx] - self.lo[idx])

    def current(self, idx: torch.Tensor) -> torch.Tensor:
        return self.x[idx]

    def variable(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        leaf = self.w[idx].detach().requires_grad_(True)
        return leaf, self._box(leaf, idx)

    def restore(self, idx: torch.Tensor, v: torch.Tensor) -> None:
        self.x[idx] = v  # (the image is final: w is not stepped again)

    def update(self, idx, leaf, xr, g, k) -> None:
        self.sq[idx] = 0.99 * self.sq[idx] + 0.01 * g * g
        self.w[idx] = leaf.detach() - self.lr * g / (self.sq[idx].sqrt() + 1e-8)
        self.x[idx] = self._box(self.w[idx], idx)
