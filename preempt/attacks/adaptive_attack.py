"""Adaptive white-box attack on robustified images.

The attacker knows the image was robustified (Moon, Lee & Song 2022, white-box evaluation) and
splits its budget ε: first it tries to *undo* the robustification, moving within ε_p = split·ε
of the received image to the point where an attack works best, i.e. it *maximises*
ℓ(PGD_T(x_u; ε − ε_p), y) over x_u ∈ B_{ε_p}(x_r) through the unrolled inner attack (the same
machinery robustify minimises with); then it attacks x_u with PGD-20 within ε − ε_p.  The total
perturbation stays inside the ε threat model (as the reference code's wbox_epsilon_p ≤
wbox_epsilon).  Several splits are tried; a point is broken if any split breaks it.

Distance ℓ∞ or ℓ2.  Defaults: splits (0.25, 0.5, 0.75), 10 undo steps of size ε_p/4, T = 10.

Example::

    res = adaptive(model, x_robustified, y, threat=Linf(0.1))
"""
from __future__ import annotations

import torch

from ..models.protocol import Model
from . import losses
from .base import AttackResult, Survivors
from .projected_gradient import pgd, pgd_unrolled


def adaptive(model: Model, x: torch.Tensor, y: torch.Tensor, *, threat, splits: tuple[float, ...] = (0.25, 0.5, 0.75),
             undo_steps: int = 10, inner_steps: int = 10, final_steps: int = 20,
             generator: torch.Generator | None = None) -> AttackResult:
    x = x.detach()
    s = Survivors(model.predict(x) == y, x)

    def split_at(split: float):
        undo, rest = threat.with_eps(split * threat.eps), threat.with_eps((1 - split) * threat.eps)

        def run(idx: torch.Tensor) -> AttackResult:
            xr, yr = x[idx], y[idx]
            xu, best = xr.clone(), xr.clone()
            hit = torch.zeros(len(idx), dtype=torch.bool, device=x.device)
            passes = 0
            for _ in range(undo_steps):
                leaf = xu.detach().requires_grad_(True)
                with torch.enable_grad():
                    xa, p = pgd_unrolled(model, leaf, yr, threat=rest, steps=inner_steps, generator=generator)
                    logits = model(xa)
                    (g,) = torch.autograd.grad(losses.ce(logits, yr).sum(), leaf)
                passes += p + len(idx)
                broke = (logits.argmax(1) != yr) & ~hit
                best[broke] = xa.detach()[broke]
                hit |= broke
                xu = undo.project(undo.step(leaf.detach(), g, undo.eps / 4), xr)
            res = pgd(model, xu, yr, threat=rest, steps=final_steps, generator=generator)
            fin = res.success & ~hit
            best[fin] = res.x_adv[fin]
            return AttackResult(best, hit | res.success, passes + res.passes)
        return run

    for split in splits:
        if s.attack(f"split-{split:g}", split_at(split)) is None:
            break
    assert s.x_adv is not None
    passes = len(x) + sum(s.passes.values())
    return AttackResult(s.x_adv, ~s.robust, passes, {"attack": "adaptive", "splits": list(splits), "undo_steps": undo_steps,
                                                     "inner_steps": inner_steps, "threat": str(threat)})
