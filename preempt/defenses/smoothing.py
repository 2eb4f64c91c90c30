"""Randomized smoothing (Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via
Randomized Smoothing", ICML 2019).

``certify`` is their CERTIFY: guess the top class from n0 noisy samples, then lower-bound its
probability p_A from n further samples with a one-sided Clopper–Pearson interval at level α; the
smoothed classifier is certified at ℓ2 radius σ·Φ⁻¹(p̲_A) if p̲_A > ½, else it abstains.
``Smoothed`` wraps a model so that robustify optimises the smoothed classifier: its logits are
log E_η[softmax f(x+η)] over ``samples`` draws, so the loss is the expected-probability
surrogate of the noisy loss (Salman et al. 2019).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import UsageError
from ..models.protocol import Model
from ..models.wrapping import Wrapped


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        de = d * c
        h *= de
        if abs(de - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1 - x) / b


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided (1−α) lower confidence bound on a binomial proportion: the p with
    P(Bin(n, p) ≥ k) = α, i.e. the α quantile of Beta(k, n−k+1)."""
    if k <= 0:
        return 0.0
    if k == n:
        return alpha ** (1.0 / n)
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if betainc(k, n - k + 1, mid) > alpha:
            hi = mid
        else:
            lo = mid
        if hi - lo < 1e-14:
            break
    return lo


def _counts(model: Model, x: torch.Tensor, sigma: float, n: int, batch: int, num_classes: int,
            generator: torch.Generator | None) -> torch.Tensor:
    counts = torch.zeros(num_classes, dtype=torch.long)
    left = n
    with torch.no_grad():
        while left > 0:
            k = min(batch, left)
            xb = x.unsqueeze(0).expand(k, *x.shape)
            noise = torch.randn(xb.shape, generator=generator, device=x.device, dtype=x.dtype) * sigma
            pred = model(xb + noise).argmax(1)
            counts += torch.bincount(pred.cpu(), minlength=num_classes)
            left -= k
    return counts


@dataclass
class Certificate:
    prediction: int        # -1 = abstain
    radius: float          # ℓ2; 0 when abstaining
    p_lower: float
    count: int
    n: int

    @property
    def abstain(self) -> bool:
        return self.prediction < 0


def certify(model: Model, x: torch.Tensor, *, sigma: float, n0: int = 100, n: int = 10000, alpha: float = 0.001,
            batch: int = 1000, num_classes: int | None = None,
            generator: torch.Generator | None = None) -> Certificate:
    """CERTIFY for one image ``x`` (C, H, W)."""
    if num_classes is None:
        with torch.no_grad():
            num_classes = model(x[None]).shape[1]
    c0 = _counts(model, x, sigma, n0, batch, num_classes, generator)
    top = int(c0.argmax())
    c = _counts(model, x, sigma, n, batch, num_classes, generator)
    k = int(c[top])
    p = clopper_pearson_lower(k, n, alpha)
    if p < 0.5:
        return Certificate(-1, 0.0, p, k, n)
    return Certificate(top, sigma * float(torch.special.ndtri(torch.tensor(p, dtype=torch.float64))), p, k, n)


class Smoothed(Wrapped):
    """Logits of the soft smoothed classifier: log mean softmax f(x + η), η ~ N(0, σ²I).
    Implements :class:`~preempt.models.Model` (noise is added to the photo's own pixels, so
    robustify and verify keep the full-resolution path for it)."""

    def __init__(self, model: Model, sigma: float, samples: int = 8, generator: torch.Generator | None = None) -> None:
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise UsageError(f"smoothing sigma {sigma}: must be a finite number > 0")
        if samples < 1:
            raise UsageError(f"smoothing samples {samples}: must be >= 1")
        super().__init__(model)
        self.sigma, self.samples, self.generator = sigma, samples, generator

    @property
    def name(self) -> str:
        return f"{super().name}+smoothing(σ={self.sigma:g})"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        xs = x.repeat(self.samples, *([1] * (x.dim() - 1)))
        noise = torch.randn(xs.shape, generator=self.generator, device=x.device, dtype=x.dtype) * self.sigma
        p = torch.softmax(self.model(xs + noise), 1).view(self.samples, n, -1).mean(0)
        return torch.log(p.clamp_min(1e-12))

    def predict(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        with torch.no_grad():
            return self(x).argmax(1).clone()
