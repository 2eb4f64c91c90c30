"""Preemptive robustification (Moon, Lee & Song, "Preemptive Image Robustification for
Protecting Users against Man-in-the-Middle Adversarial Attacks", AAAI 2022).

Given originals x_o, a classifier f and budgets (δ, ε), find

    x_r = argmin_{x_r ∈ B_δ(x_o) ∩ [0,1]}  ℓ( PGD_T(x_r; ε), y ),   y = f(x_o),

by an outer descent on x_r whose gradient flows through the unrolled T-step inner attack.
Differences from the paper's Algorithm 1, each measured in ``benchmarks/robustify.py``:

* images are batched and leave the batch once they are *verified*: every ``check_every`` outer
  steps the current x_r is quantised to 8 bits and attacked with a full PGD check (default
  PGD-20, ε/4 steps, random start).  If no iterate changes the label the quantised image is
  final.  A check is only spent on images the inner attack itself failed to break;
* the outer step size decays (cosine) from ``step_size`` to a tenth of it;
* the result is judged as saved: the returned pixels are the quantised ones the check ran on.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch

from .attacks import losses
from .attacks.pgd import pgd, pgd_unrolled
from .quantize import quantize
from .threat import L2, Linf, ThreatModel, threat_model


@dataclass
class ImageResult:
    """What robustify reports for one image."""

    robust: bool
    label: int
    loss: float
    steps: int
    passes: int
    linf: float
    l2: float
    psnr: float
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RobustifyResult:
    x: torch.Tensor  # (N,C,H,W) float on the 8-bit grid
    images: list[ImageResult]
    config: dict = field(default_factory=dict)

    @property
    def robust(self) -> torch.Tensor:
        return torch.tensor([r.robust for r in self.images])


@dataclass
class RobustifyConfig:
    norm: str = "linf"
    delta: float = 0.1
    eps: float = 0.1
    steps: int = 30            # outer steps at most
    inner_steps: int = 10      # T, the unrolled attack's steps
    step_size: float | None = None     # outer; default δ/4 (ℓ∞) or δ/4 (ℓ2, normalised)
    inner_step_size: float | None = None  # default ε/4
    check_every: int = 5
    check_steps: int = 20
    check_restarts: int = 1
    check_loss: str = "ce"     # ce | dlr | ce+dlr: the check's PGD loss(es)
    min_steps: int = 5         # outer steps before the first check
    quantize: bool = True
    create_graph: bool = False  # second-order unrolling (ℓ2 only)
    optimizer: str = "sign"    # sign: steepest descent in the norm, cosine-decayed steps;
                               # rmsprop: the reference code's tanh box reparametrisation + RMSprop (ℓ∞)
    lr: float = 0.1            # rmsprop learning rate (the reference code's)
    init: str = "auto"         # original | random (a random point of the δ-ball, as the reference code)
                               # | descent: one signed step down the clean loss (the x̂_r of preempt training)
                               # | auto: what the model card recommends, else original
    early_stop: bool = True    # False: no checks before the last step (the paper's algorithm)
    seed: int = 0

    @classmethod
    def paper(cls, **kw) -> "RobustifyConfig":
        """The published algorithm: 100 outer steps, PGD-20 inside, RMSprop on a tanh-reparametrised
        ℓ∞ box from a random start, judged once at the end (2,100 passes per image)."""
        base = dict(steps=100, inner_steps=20, optimizer="rmsprop" if kw.get("norm", "linf") == "linf" else "sign",
                    init="random", early_stop=False)
        return cls(**{**base, **kw})

    def delta_ball(self) -> ThreatModel:
        return threat_model(self.norm, self.delta)

    def eps_ball(self) -> ThreatModel:
        return threat_model(self.norm, self.eps)


INITS = ("auto", "original", "descent", "random")


def resolve_init(init: str, model) -> str:
    """``auto`` → the start the model's card recommends (``card["robustify"]["init"]``, set where
    it was measured to help), else ``original``.

    Measured: on 1,000 test images robustified against fmnist-linf-preempt, PGD-20 accuracy was
    82.2% from the descent start vs 80.4% from the original (and 121 vs 129 passes per image);
    for fmnist-l2-preempt (300 images) 79.0% vs 81.0%, and for the pgd-at model 85.7% vs 86.3% —
    so only the ℓ∞ preempt cards recommend it."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose {', '.join(INITS)}")
    if init != "auto":
        return init
    card = getattr(model, "card", None) or {}
    rec = (card.get("robustify") or {}).get("init", "original")
    return rec if rec in INITS[1:] else "original"


def _psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mse = (a - b).flatten(1).pow(2).mean(1)
    return torch.where(mse > 0, 10 * torch.log10(1.0 / mse.clamp_min(1e-20)), torch.full_like(mse, float("inf")))


def check(model, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, *, steps: int = 20,
          restarts: int = 1, loss: str = "ce", generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
    """PGD check: (robust mask, passes).  Robust = no iterate of any restart changed the label.
    ``loss``: ``ce``, ``dlr``, or ``ce+dlr`` (a CE attack, then a DLR attack on the survivors)."""
    robust = torch.ones(len(x), dtype=torch.bool, device=x.device)
    passes = 0
    for name in loss.split("+"):
        for _ in range(restarts):
            idx = robust.nonzero().squeeze(1)
            if len(idx) == 0:
                break
            res = pgd(model, x[idx], y[idx], threat=threat, steps=steps, loss=name, generator=generator)
            passes += res.passes
            robust[idx[res.success]] = False
    return robust, passes


def robustify(model, x: torch.Tensor, y: torch.Tensor | None = None, *,
              config: RobustifyConfig | None = None, **overrides) -> RobustifyResult:
    """Robustify a batch of same-sized images ``x`` (N,C,H,W) in [0,1].

    Keyword overrides set :class:`RobustifyConfig` fields, e.g. ``robustify(m, x, delta=0.1, eps=0.1)``.
    """
    cfg = config or RobustifyConfig()
    if overrides:
        cfg = RobustifyConfig(**{**asdict(cfg), **overrides})
    if cfg.steps < 0 or cfg.inner_steps < 1 or cfg.check_every < 1:
        raise ValueError("steps must be >= 0, inner_steps and check_every >= 1")
    dball, eball = cfg.delta_ball(), cfg.eps_ball()
    dev = x.device
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    t0 = time.perf_counter()
    x_o = x.detach()
    n = len(x_o)
    if y is None:
        y = model.predict(x_o)
    y = y.to(dev)
    alpha0 = (cfg.step_size if cfg.step_size is not None else cfg.delta / 4)

    if cfg.optimizer not in ("sign", "rmsprop"):
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
    if cfg.optimizer == "rmsprop" and not isinstance(dball, Linf):
        raise ValueError("optimizer='rmsprop' (the tanh box reparametrisation) is for ℓ∞ only")
    init = resolve_init(cfg.init, model)
    if init == "random":
        x_r = dball.random_start(x_o, generator=gen)
    elif init == "descent":
        from .train.methods import descend
        x_r = descend(model, x_o, y, dball, 1)
    else:
        x_r = x_o.clone()
    if cfg.optimizer == "rmsprop":
        lo, hi = (x_o - cfg.delta).clamp_min(0), (x_o + cfg.delta).clamp_max(1)
        w = torch.atanh(((x_r - lo) / (hi - lo).clamp_min(1e-12) - 0.5) * 1.999)
        sq = torch.zeros_like(w)
    final = x_o.clone()
    done = torch.zeros(n, dtype=torch.bool, device=dev)
    robust = torch.zeros(n, dtype=torch.bool, device=dev)
    steps_used = torch.zeros(n, dtype=torch.long)
    passes = torch.full((n,), 1 if init == "descent" else 0, dtype=torch.long)
    last_loss = torch.full((n,), float("nan"))
    seconds = torch.zeros(n)
    survived = torch.zeros(n, dtype=torch.bool, device=dev)  # inner attack failed at last step

    def run_check(idx: torch.Tensor) -> None:
        q = quantize(x_r[idx], x_o[idx], dball) if cfg.quantize else x_r[idx]
        ok, p = check(model, q, y[idx], eball, steps=cfg.check_steps, restarts=cfg.check_restarts,
                      loss=cfg.check_loss, generator=gen)
        passes[idx.cpu()] += int(round(p / max(len(idx), 1)))
        final[idx] = q
        robust[idx] = ok
        win = idx[ok]
        done[win] = True
        seconds[win.cpu()] = time.perf_counter() - t0

    for k in range(1, cfg.steps + 1):
        idx = (~done).nonzero().squeeze(1)
        if len(idx) == 0:
            break
        ya = y[idx]
        with torch.enable_grad():
            if cfg.optimizer == "rmsprop":
                leaf = w[idx].detach().requires_grad_(True)
                xr = lo[idx] + (torch.tanh(leaf) + 1) / 2 * (hi[idx] - lo[idx])
            else:
                leaf = xr = x_r[idx].detach().requires_grad_(True)
            x_a, p = pgd_unrolled(model, xr, ya, threat=eball, steps=cfg.inner_steps,
                                  step_size=cfg.inner_step_size, create_graph=cfg.create_graph, generator=gen)
            logits = model(x_a)
            loss = losses.ce(logits, ya)
            (g,) = torch.autograd.grad(loss.sum(), leaf)
        passes[idx.cpu()] += p // len(idx) + 1
        steps_used[idx.cpu()] = k
        last_loss[idx.cpu()] = loss.detach().cpu()
        survived[idx] = logits.argmax(1) == ya
        if cfg.optimizer == "rmsprop":
            sq[idx] = 0.99 * sq[idx] + 0.01 * g * g
            w[idx] = leaf.detach() - cfg.lr * g / (sq[idx].sqrt() + 1e-8)
            x_r[idx] = lo[idx] + (torch.tanh(w[idx]) + 1) / 2 * (hi[idx] - lo[idx])
        else:
            alpha = alpha0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (k - 1) / max(cfg.steps, 1))))
            x_r[idx] = dball.project(dball.step(xr.detach(), -g, alpha), x_o[idx])
        last = k == cfg.steps
        if last or (cfg.early_stop and k >= cfg.min_steps and (k - cfg.min_steps) % cfg.check_every == 0):
            cand = idx if last else idx[survived[idx]]
            if len(cand):
                run_check(cand)
    left = (~done).nonzero().squeeze(1)
    if len(left):
        if cfg.steps == 0:
            run_check(left)
        else:
            final[left] = quantize(x_r[left], x_o[left], dball) if cfg.quantize else x_r[left]
        seconds[left.cpu()] = time.perf_counter() - t0

    linf = Linf(0).distance(final, x_o).cpu()
    l2 = L2(0).distance(final, x_o).cpu()
    psnr = _psnr(final, x_o).cpu()
    images = [
        ImageResult(robust=bool(robust[i]), label=int(y[i]), loss=float(last_loss[i]), steps=int(steps_used[i]),
                    passes=int(passes[i]), linf=float(linf[i]), l2=float(l2[i]), psnr=float(psnr[i]),
                    seconds=float(seconds[i]))
        for i in range(n)
    ]
    return RobustifyResult(final, images, asdict(cfg))
