"""Where robustify's variable lives (the photo, or a change on a lifted model-resolution grid) and how it
becomes model input and a written photo."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ...attacks import losses
from ...attacks.projected_gradient import pgd_unrolled
from ...core.budget_map import budget_map
from ...core.least_change import LeastChange
from ...core.quantize import quantize, quantize_change
from ...core.resolution import resampling_for
from ...models.resample import Resampling
from ...models.wrapper import Classifier
from ...verdict import upload
from .config import RobustifyConfig
from .parts import Unrolled

if TYPE_CHECKING:
    from ...models.protocol import Model


class Problem:
    """Where robustify's variable lives, and how it becomes model input and a photo.

    Checks (and the unrolled inner attack) run where ``preempt verify`` attacks, so that the two
    agree: at the model input over the image of the ε-ball when the model resizes an averaging
    way (``r``), else on the photo.  The variable is the photo itself (B_δ(x_o) ∩ [0, 1]), or,
    for photos much larger than the model input, a change e on a grid a few times finer than the
    model input (``work``): the photo is x_o + U·e and the model input z_o + (Rh·Uh)·e·(Rw·Uw)ᵀ
    (see :mod:`preempt.core.resolution`)."""

    def __init__(self, model: Model, x_o: torch.Tensor, cfg: RobustifyConfig, resampling: Resampling | None,
                 work: Resampling | None = None, least_change: bool = False) -> None:
        self.x_o, self.r, self.work, self.cfg = x_o, resampling, work, cfg
        self.least = LeastChange(resampling) if least_change and resampling is not None and work is None \
            and cfg.norm == "linf" and cfg.quantize else None
        self.dball = cfg.delta_ball()
        # per-pixel share of δ (preempt.core.budget_map): the photo is the variable, ℓ∞
        m = budget_map(cfg.budget_map, model, x_o) if work is None and cfg.norm == "linf" else None
        self.lim = None if m is None else cfg.delta * m
        eball = cfg.eps_ball()
        self.chains = cfg.chains()
        self.full_model, self.full_eball = model, eball
        if resampling is None:
            self.model, self.eball = model, eball
        else:
            assert isinstance(model, Classifier)  # resampling_for resamples for a Classifier only
            self.model = model.at_input_size()
            self.eball = eball.with_eps(cfg.eps * resampling.gain(cfg.norm))
        if work is None:
            self.centre, self.ball = x_o, self.dball
            return
        r = resampling
        assert r is not None, "a working grid comes with the model-input resampling (working_grid)"
        self.z_o = r.apply(x_o)
        uh, uw = work.lift_matrices()
        self.ah, self.aw = r.rh @ uh, r.rw @ uw
        self.centre = x_o.new_zeros((*x_o.shape[:2], len(uh[0]), len(uw[0])))
        self.ball = self.dball.with_eps(cfg.delta / work.lift_gain(cfg.norm))

    def applied(self) -> dict:
        """What this problem actually runs, for the result's config: where the loop works, and whether the least
        change applies (it needs ℓ∞, one model and the photo as the variable)."""
        return {"resolution": self.resolution, "least_change": self.least is not None}

    @property
    def resolution(self) -> str:
        """full: every pass on the photo; model: the lifted change; photo: the photo is the
        variable, attacks run at the model input."""
        return "full" if self.r is None else ("model" if self.work is not None else "photo")

    def inputs(self, v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Model input of the variable (differentiable)."""
        if self.r is None:
            return v
        if self.work is None:
            return self.r.apply(v)
        return self.z_o[idx] + torch.matmul(torch.matmul(self.ah, v), self.aw.t())

    def project(self, v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if self.lim is not None:
            x_o, lim = self.x_o[idx], self.lim[idx]
            return (x_o + torch.maximum(torch.minimum(v - x_o, lim), -lim)).clamp(0, 1)
        if self.work is None:
            return self.ball.project(v, self.x_o[idx])
        return self.ball.project_delta(v)

    def photo(self, v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The full-resolution photo the variable stands for, on the 8-bit grid inside B_δ(x_o)."""
        x_o = self.x_o if len(idx) == len(self.x_o) else self.x_o[idx]  # no copy of a whole batch
        if self.work is None:
            if self.least is not None:  # the same model input, the least ℓ2 change (least_change)
                with torch.no_grad():
                    v = x_o + self.least(v - x_o, *self.change_bounds(idx))
            if not self.cfg.quantize:
                return v.clamp(0, 1)
            q = quantize(v, x_o, self.dball)
            if self.lim is None:
                return q
            levels = torch.floor(self.lim[idx] * 255 + 1e-6)  # the map's budget, in whole levels
            ko = torch.round(x_o * 255)
            return (ko + torch.maximum(torch.minimum(torch.round(q * 255) - ko, levels), -levels)) / 255
        u = self.work.lift(v)
        return quantize_change(u, x_o, self.dball) if self.cfg.quantize else u.add_(x_o).clamp_(0, 1)

    def change_bounds(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(lowest, highest) change of the photos ``idx``: B_δ(0) ∩ [−x_o, 1 − x_o], δ scaled by the budget map."""
        x_o = self.x_o if len(idx) == len(self.x_o) else self.x_o[idx]
        if self.lim is None:
            return (-x_o).clamp(min=-self.cfg.delta), (1 - x_o).clamp(max=self.cfg.delta)
        lim = self.lim[idx]
        return torch.maximum(-x_o, -lim), torch.minimum(1 - x_o, lim)

    def box(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(lowest, highest) pixel values of every photo: B_δ(x_o) ∩ [0, 1], δ scaled by the budget map."""
        lim: torch.Tensor | float = self.cfg.delta if self.lim is None else self.lim
        return (self.x_o - lim).clamp_min(0), (self.x_o + lim).clamp_max(1)

    def photo_input(self, photo: torch.Tensor) -> torch.Tensor:
        return photo if self.r is None else self.r.apply(photo)

    def start(self, init: str, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        all_ = torch.arange(len(self.centre), device=self.centre.device)
        if init == "random":
            return self.project(self.centre + self.ball.sample_delta(self.centre, generator=gen), all_)
        if init == "descent":  # one signed step down the clean loss (the x̂_r of preempt training)
            v = self.centre.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                (g,) = torch.autograd.grad(losses.ce(self.model(self.inputs(v, all_)), y).sum(), v)
            return self.project(self.ball.step(self.centre, -g, 2.5 * self.ball.eps), all_).detach()
        return self.centre.clone()

    def check(self, photo: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
              extra_restarts: int = 0) -> tuple[torch.Tensor, int, list[dict]]:
        """The configured check on a photo as written (:meth:`Check.judge`: where verify attacks it,
        then with ``survive`` each service transform by the real codec): (robust, passes, per-image
        upload outcomes)."""
        v = self.cfg.check.stronger(extra_restarts).judge(
            self.full_model, photo, y, self.full_eball, generator=gen, resolution=self.cfg.check_at(),
            chains=self.chains, correct=torch.ones(len(photo), dtype=torch.bool, device=photo.device))
        return v.robust, v.total_passes, v.uploads

    def eot_loss(self, xr: torch.Tensor, y: torch.Tensor, k: int, gen: torch.Generator) -> tuple[torch.Tensor, int]:
        """Expectation over the service transforms, one sample per outer step: a chain drawn from
        ``survive`` (its ranges sampled), applied after the attack on odd steps (the attacker
        perturbs the upload) and before it on even steps (the attacker perturbs what the service
        made of it).  Real codec forward, differentiable approximation backward."""
        c = self.cfg.inner  # survive is refused with the persistent attackers (RobustifyConfig.validate)
        assert isinstance(c, Unrolled)
        pick = int(torch.randint(len(self.chains), (1,), generator=gen, device=gen.device).item())  # on gen's device
        xh, xw = xr.shape[-2:]
        chain = self.chains[pick].sample(gen).for_size((int(xh), int(xw)))
        if not chain.ops:
            return xr.new_zeros(len(xr)), 0
        if k % 2:
            through = upload.Through(self.full_model, chain)
            x_a, p = pgd_unrolled(through, xr, y, threat=self.full_eball, steps=c.steps,
                                  step_size=c.step_size, create_graph=c.create_graph, generator=gen)
            return losses.ce(through(x_a), y), p + len(xr)
        x_a, p = pgd_unrolled(self.full_model, chain.bpda(xr), y, threat=self.full_eball, steps=c.steps,
                              step_size=c.step_size, create_graph=c.create_graph, generator=gen)
        return losses.ce(self.full_model(x_a), y), p + len(xr)


def working_grid(model: Model, hw: tuple[int, int], cfg: RobustifyConfig) -> tuple[Resampling | None, Resampling | None]:
    """(model-input resampling or None, working-grid resampling or None); (None, None) is the
    full-resolution path.

    The change lives on a grid ``work_scale``× finer than the model input over the same region:
    L·U is then closer to the identity, so the loop can shape the model input more freely (on
    60 upscaled test images, robust after the check: 44 at 1×, 57 at 2×, 59 at 3×, 60 at full
    resolution).  When that grid would not be smaller than the photo, the photo itself is the
    variable (it costs little) and only the attacks run at the model input."""
    if cfg.optimizer == "rmsprop" or cfg.survive:  # (the tanh box works on the photo's own pixels)
        return None, None  # the service's codec works on the photo's own pixels
    r = resampling_for(model, hw, cfg.resolution)
    if r is None:
        return None, None
    if cfg.work_scale <= 1:
        return r, r
    work = model.pre.resampling(hw, device=r.rh.device, scale=cfg.work_scale)
    if work.rh.shape[0] < hw[0] and work.rw.shape[0] < hw[1]:
        return r, work
    return r, None  # the photo is small: it is the variable, attacks still run at the model input
