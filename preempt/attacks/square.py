"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient
black-box adversarial attack via random search", ECCV 2020).

Score-based: it needs only the logits, never a gradient, so it also runs against models behind
onnxruntime or a service.  Distance ℓ∞ or ℓ2.  Defaults are AutoAttack's: 5,000 queries,
p_init = 0.8, the margin loss z_y − max_{j≠y} z_j (minimised; < 0 means misclassified), and the
reference schedule that halves the square's area fraction p at queries 10, 50, 200, 500, 1000,
2000, 4000, 6000 and 8000 (rescaled to ``queries`` / 10,000).

ℓ∞: start from vertical stripes of ±ε; each query redraws one random s×s window to ±ε per
channel and keeps it if the margin drops.  ℓ2: start from ε-normalised Gaussian-windowed stripes;
each query redraws one window with a centred Gaussian-like pattern whose norm is the window's
current norm plus whatever budget is unused (a one-window simplification of the paper's
two-window mass transfer; the ℓ2 ball is never left).

Example::

    res = square(model, x, y, threat=Linf(8 / 255), queries=5000)
"""
from __future__ import annotations

import math

import torch

from ..threat import L2, Linf, ThreatModel, _per_sample
from . import losses
from .base import AttackResult

_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256))


def p_selection(p_init: float, it: int, queries: int) -> float:
    """The fraction of pixels a window covers at query ``it`` (the reference schedule)."""
    it = int(it / queries * 10000)
    for bound, div in _SCHEDULE:
        if it <= bound:
            return p_init / div
    return p_init / 512


def _margin(model, x, y):
    with torch.no_grad():
        return -losses.margin(model(x), y)  # z_y − max other: minimise


def _windows(n, h, w, s, gen, device):
    vh = torch.randint(0, h - s + 1, (n,), generator=gen, device=device)
    vw = torch.randint(0, w - s + 1, (n,), generator=gen, device=device)
    rows = torch.arange(h, device=device)[None, :]
    cols = torch.arange(w, device=device)[None, :]
    mh = (rows >= vh[:, None]) & (rows < vh[:, None] + s)
    mw = (cols >= vw[:, None]) & (cols < vw[:, None] + s)
    return (mh[:, :, None] & mw[:, None, :])[:, None]  # (n,1,h,w)


def square(model, x: torch.Tensor, y: torch.Tensor, *, threat: ThreatModel, queries: int = 5000,
           p_init: float = 0.8, generator: torch.Generator | None = None) -> AttackResult:
    if not isinstance(threat, (Linf, L2)):
        raise TypeError("Square supports Linf and L2")
    x = x.detach()
    n, c, h, w = x.shape
    eps = threat.eps
    gen = generator
    dev, dt = x.device, x.dtype
    if isinstance(threat, Linf):
        stripes = torch.randint(0, 2, (n, c, 1, w), generator=gen, device=dev).to(dt) * 2 - 1
        x_best = (x + eps * stripes).clamp(0, 1)
    else:
        delta = torch.randn((n, c, 1, w), generator=gen, device=dev, dtype=dt).expand(n, c, h, w).clone()
        delta = delta * _per_sample(eps / (delta.flatten(1).norm(dim=1) + 1e-12), delta)
        x_best = threat.project(x + delta, x)
    margin = _margin(model, x_best, y)
    passes = n
    for it in range(1, queries):
        act = (margin > 0).nonzero().squeeze(1)
        if len(act) == 0:
            break
        xa, xb = x[act], x_best[act]
        p = p_selection(p_init, it, queries)
        s = max(int(round(math.sqrt(p * h * w))), 1)
        s = min(s, h - 1 if h > 1 else 1, w - 1 if w > 1 else 1)
        win = _windows(len(act), h, w, s, gen, dev)
        if isinstance(threat, Linf):
            signs = torch.randint(0, 2, (len(act), c, 1, 1), generator=gen, device=dev).to(dt) * 2 - 1
            delta = torch.where(win, eps * signs, xb - xa)
            x_new = (xa + delta).clamp(0, 1)
        else:
            delta = xb - xa
            in_win = (delta * win).flatten(1).norm(dim=1)
            spare = (eps ** 2 - delta.flatten(1).norm(dim=1) ** 2).clamp_min(0)
            budget = torch.sqrt(in_win ** 2 + spare)  # per sample
            rows = win.any(3).squeeze(1).to(dt)  # (n,h) window rows
            cols = win.any(2).squeeze(1).to(dt)  # (n,w) window columns
            sigma = max(s / 4, 0.5)
            ih = torch.arange(h, device=dev, dtype=dt)[None]
            iw = torch.arange(w, device=dev, dtype=dt)[None]
            ch = (rows * ih).sum(1, keepdim=True) / rows.sum(1, keepdim=True)
            cw = (cols * iw).sum(1, keepdim=True) / cols.sum(1, keepdim=True)
            gh = torch.exp(-(ih - ch) ** 2 / (2 * sigma ** 2)) * rows
            gw = torch.exp(-(iw - cw) ** 2 / (2 * sigma ** 2)) * cols
            bump = (gh[:, :, None] * gw[:, None, :])[:, None]  # (n,1,h,w), a centred bump in the window
            bump = bump / _per_sample(bump.flatten(1).norm(dim=1) * math.sqrt(c), bump)
            signs = torch.randint(0, 2, (len(act), c, 1, 1), generator=gen, device=dev).to(dt) * 2 - 1
            bump = bump * signs
            delta = torch.where(win, bump * _per_sample(budget, bump), delta)
            x_new = threat.project(xa + delta, xa)
        m_new = _margin(model, x_new, y[act])
        passes += len(act)
        better = m_new < margin[act]
        x_best[act[better]] = x_new[better]
        margin[act[better]] = m_new[better]
    success = margin <= 0
    return AttackResult(x_best, success, passes, {"attack": "square", "queries": queries, "p_init": p_init,
                                                  "threat": str(threat)})
