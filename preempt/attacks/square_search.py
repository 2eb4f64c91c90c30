"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient
black-box adversarial attack via random search", ECCV 2020).

Score-based: it needs only the logits, never a gradient, so it also runs against models behind
onnxruntime or a service.  Distance ℓ∞ or ℓ2.  Defaults are AutoAttack's: 5,000 queries,
p_init = 0.8, the margin loss z_y − max_{j≠y} z_j (minimised; < 0 means misclassified), and the
reference schedule that halves the square's area fraction p at queries 10, 50, 200, 500, 1000,
2000, 4000, 6000 and 8000 (rescaled to ``queries`` / 10,000).

ℓ∞: start from vertical stripes of ±ε; each query redraws one random s×s window to ±ε per
channel (redrawn, as in the reference, when that would change nothing) and keeps it if the
margin drops.  ℓ2 (the paper's Algorithm 3): start from a grid of h/5-sized blocks, each a
pair of opposite-signed "concentric square" bumps (:func:`eta`) with random signs, scaled to
norm ε; each query picks two windows, moves the mass of the second into the first (zeroes the
second, gives the first the old content plus a new random ±η pattern, rescaled so the first
takes both windows' norm plus whatever budget is unused), renormalises the whole perturbation to
ε and clips to the image.  Window size s = max(round(√(p·h·w)), 3) rounded up to odd.  Windows are
drawn per image (the reference draws one pair for the whole batch in ℓ2).

Example::

    res = square(model, x, y, threat=Linf(8 / 255), queries=5000)
"""
from __future__ import annotations

import math

import torch

from ..core.threat import ThreatModel, per_sample
from ..models.protocol import Logits
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


def _margin(model: Logits, x, y):
    with torch.inference_mode():
        m = -losses.margin(model(x), y)  # z_y − max other: minimise
    return m.clone()


def _windows(n, h, w, s, gen, device):
    vh = torch.randint(0, h - s + 1, (n,), generator=gen, device=device)
    vw = torch.randint(0, w - s + 1, (n,), generator=gen, device=device)
    rows = torch.arange(h, device=device)[None, :]
    cols = torch.arange(w, device=device)[None, :]
    mh = (rows >= vh[:, None]) & (rows < vh[:, None] + s)
    mw = (cols >= vw[:, None]) & (cols < vw[:, None] + s)
    return (mh[:, :, None] & mw[:, None, :])[:, None]  # (n,1,h,w)


def eta(s: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """The ℓ2 window pattern of the Square Attack paper: the upper ⌊s/2⌋ rows a bump of nested
    squares (weight Σ_{k ≥ d} 1/(k+1)² at Chebyshev distance d from the centre), the lower rows
    the negative of one; unit ℓ2 norm."""
    def bump(a: int, b: int) -> torch.Tensor:
        if a == 0:
            return torch.zeros(0, b, device=device, dtype=dtype)
        ci, cj = a // 2, b // 2
        d = torch.maximum((torch.arange(a, device=device)[:, None] - ci).abs(),
                          (torch.arange(b, device=device)[None, :] - cj).abs())
        k_max = max(ci, cj) + 1
        w = 1.0 / torch.arange(1, k_max + 1, device=device, dtype=dtype) ** 2  # 1/(k+1)², k = 0..k_max-1
        tail = w.flip(0).cumsum(0).flip(0)  # tail[d] = Σ_{k ≥ d} w[k]
        out = tail[d.clamp_max(k_max - 1)]
        return out / out.norm()

    e = torch.cat([bump(s // 2, s), -bump(s - s // 2, s)])
    return e / e.norm()


def _place(n: int, h: int, w: int, s: int, gen, device):
    """Per-image top-left corners of an s×s window, and the (n, s) row/column indices."""
    r0 = torch.randint(0, h - s + 1, (n,), generator=gen, device=device)
    c0 = torch.randint(0, w - s + 1, (n,), generator=gen, device=device)
    ar = torch.arange(s, device=device)
    return r0[:, None] + ar, c0[:, None] + ar


def _l2_init(x: torch.Tensor, eps: float, gen) -> torch.Tensor:
    n, c, h, w = x.shape
    s = max(h // 5, 1)
    e = eta(s, device=x.device, dtype=x.dtype)
    delta = torch.zeros_like(x)
    start_h, start_w = (h - 5 * s) // 2 if h >= 5 else 0, (w - 5 * s) // 2 if w >= 5 else 0
    for i in range(start_h, h - s + 1, s):
        for j in range(start_w, w - s + 1, s):
            sign = torch.randint(0, 2, (n, c, 1, 1), generator=gen, device=x.device).to(x.dtype) * 2 - 1
            delta[:, :, i:i + s, j:j + s] += e * sign
    delta = delta / per_sample(delta.flatten(1).norm(dim=1) + 1e-12, delta)
    return (x + eps * delta).clamp(0, 1)


def _l2_proposal(xa, xb, eps, s, gen):
    n, c, h, w = xa.shape
    ar = torch.arange(n, device=xa.device)[:, None, None]
    delta = (xb - xa).permute(0, 2, 3, 1).contiguous()            # (n, h, w, c)
    r1, c1 = _place(n, h, w, s, gen, xa.device)
    r2, c2 = _place(n, h, w, s, gen, xa.device)
    i1, j1 = r1[:, :, None], c1[:, None, :]
    i2, j2 = r2[:, :, None], c2[:, None, :]
    w1 = delta[ar, i1, j1]                                       # (n, s, s, c)
    both = torch.zeros(n, h, w, 1, dtype=torch.bool, device=xa.device)
    both[ar, i1, j1] = True
    both[ar, i2, j2] = True
    norm_w1 = w1.pow(2).sum((1, 2), keepdim=True).sqrt()          # per channel
    norm_both = (delta * both).pow(2).sum((1, 2), keepdim=True).sqrt()
    norm_img = delta.pow(2).sum((1, 2, 3), keepdim=True).sqrt()
    sign = torch.randint(0, 2, (n, 1, 1, c), generator=gen, device=xa.device).to(xa.dtype) * 2 - 1
    new = eta(s, device=xa.device, dtype=xa.dtype)[None, :, :, None] * sign + w1 / (norm_w1 + 1e-12)
    budget = ((eps ** 2 - norm_img ** 2).clamp_min(0) / c + norm_both ** 2).sqrt()
    new = new / (new.pow(2).sum((1, 2), keepdim=True).sqrt() + 1e-12) * budget
    delta[ar, i2, j2] = 0.0
    delta[ar, i1, j1] = new
    delta = delta.permute(0, 3, 1, 2)
    delta = delta / per_sample(delta.flatten(1).norm(dim=1) + 1e-12, delta)
    return (xa + eps * delta).clamp(0, 1)


def _linf_proposal(xa, xb, win, eps, gen):
    """x_best with each point's window redrawn to ±ε per channel; as the reference, a draw that
    would leave the (clipped) window unchanged is redrawn (up to 10 times)."""
    n, c = xa.shape[:2]
    signs = torch.randint(0, 2, (n, c, 1, 1), generator=gen, device=xa.device).to(xa.dtype) * 2 - 1
    x_new = (xa + torch.where(win, eps * signs, xb - xa)).clamp(0, 1)
    for _ in range(10):
        same = (((x_new - xb).abs() < 1e-7) | ~win).flatten(1).all(1)
        if not same.any():
            break
        k = same.nonzero().squeeze(1)
        signs[k] = torch.randint(0, 2, (len(k), c, 1, 1), generator=gen, device=xa.device).to(xa.dtype) * 2 - 1
        x_new[k] = (xa[k] + torch.where(win[k], eps * signs[k], xb[k] - xa[k])).clamp(0, 1)
    return x_new


def _linf_init(x: torch.Tensor, eps: float, gen) -> torch.Tensor:
    n, c, _, w = x.shape
    stripes = torch.randint(0, 2, (n, c, 1, w), generator=gen, device=x.device).to(x.dtype) * 2 - 1
    return (x + eps * stripes).clamp(0, 1)


def _linf_step(xa: torch.Tensor, xb: torch.Tensor, eps: float, p: float, gen) -> torch.Tensor:
    h, w = xa.shape[-2:]
    s = max(int(round(math.sqrt(p * h * w))), 1)
    s = min(s, h - 1 if h > 1 else 1, w - 1 if w > 1 else 1)
    return _linf_proposal(xa, xb, _windows(len(xa), h, w, s, gen, xa.device), eps, gen)


def _l2_step(xa: torch.Tensor, xb: torch.Tensor, eps: float, p: float, gen) -> torch.Tensor:
    h, w = xa.shape[-2:]
    s = max(int(round(math.sqrt(p * h * w))), 3)
    s = min(s + 1 - s % 2, h, w)
    return _l2_proposal(xa, xb, eps, s, gen)


# the attack's two norm-specific parts: (initial point, proposal at square-fraction p)
_BY_NORM = {"linf": (_linf_init, _linf_step), "l2": (_l2_init, _l2_step)}


def square(model: Logits, x: torch.Tensor, y: torch.Tensor, *, threat: ThreatModel, queries: int = 5000,
           p_init: float = 0.8, generator: torch.Generator | None = None) -> AttackResult:
    try:
        init, propose = _BY_NORM[threat.norm]
    except KeyError:
        raise TypeError(f"Square supports {', '.join(_BY_NORM)}, not {threat}") from None
    x = x.detach()
    eps = threat.eps
    x_best = init(x, eps, generator)
    margin = _margin(model, x_best, y)
    passes = len(x)
    for it in range(1, queries):
        act = (margin > 0).nonzero().squeeze(1)
        if len(act) == 0:
            break
        x_new = propose(x[act], x_best[act], eps, p_selection(p_init, it, queries), generator)
        m_new = _margin(model, x_new, y[act])
        passes += len(act)
        better = m_new < margin[act]
        x_best[act[better]] = x_new[better]
        margin[act[better]] = m_new[better]
    success = margin <= 0
    return AttackResult(x_best, success, passes, {"attack": "square", "queries": queries, "p_init": p_init,
                                                  "threat": str(threat)})
