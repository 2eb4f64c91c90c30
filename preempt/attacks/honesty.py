"""Honesty checks: the warning signs AutoAttack's authors list for evaluations that overstate
robustness (Croce & Hein 2020, "flags").  Each returns a flag that is printed and put in the JSON.

* ``randomized`` — two forward passes on the same input give different logits: attacks need EOT
  (``--suite rand``);
* ``softmax`` — the model returns probabilities, not logits (flat gradients for CE-based attacks);
* ``zero_gradients`` — some inputs have an all-zero input gradient (gradient masking);
* ``square_stronger`` — the black-box Square attack broke points the white-box attacks did not;
* ``eps_sweep`` — PGD robust accuracy rises with ε over a small sweep (½ε, ε, 2ε).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..models.protocol import Model
from . import losses
from .projected_gradient import loss_and_grad, pgd


@dataclass
class Flag:
    name: str
    raised: bool
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def verdict(self) -> str:
        """The check in words, as it came out ("robust accuracy falls as ε grows", or its warning)."""
        ok, bad = _WORDS.get(self.name, (self.name, self.name))
        return bad if self.raised else ok


# name -> (what a passed check says, what a raised flag says)
_WORDS = {
    "randomized": ("the model is deterministic", "the model is randomized: use --suite rand"),
    "softmax": ("outputs are logits", "outputs look like probabilities (softmax): attacks may see flat gradients"),
    "zero_gradients": ("gradients are non-zero", "some inputs have all-zero gradients (masked gradients?)"),
    "square_stronger": ("the white-box attacks beat Square", "Square broke points the white-box attacks missed"),
    "eps_sweep": ("robust accuracy falls as ε grows", "robust accuracy does not fall as ε grows"),
}


def honesty_flags(model: Model, x: torch.Tensor, y: torch.Tensor, threat, *, broken_by: list | None = None,
               sweep: bool = True, generator: torch.Generator | None = None) -> list[Flag]:
    flags = []
    with torch.no_grad():
        a, b = model(x), model(x)
    diff = (a - b).abs().max().item()
    flags.append(Flag("randomized", diff > 1e-6, f"max |logits difference| over two passes = {diff:.2e}"))
    sums = a.sum(1)
    soft = bool(((a >= 0) & (a <= 1)).all() and torch.allclose(sums, torch.ones_like(sums), atol=1e-4))
    flags.append(Flag("softmax", soft, "outputs lie in [0,1] and sum to 1" if soft else "outputs are logits"))
    differentiable = model.differentiable
    if differentiable:
        _, g = loss_and_grad(model, x, y, losses.ce)
        zero = (g.flatten(1).abs().amax(1) == 0).float().mean().item()
        flags.append(Flag("zero_gradients", zero > 0, f"{zero:.1%} of inputs have an all-zero gradient"))
    if broken_by is not None:
        sq = sum(b_ == "square" for b_ in broken_by) if differentiable else 0
        flags.append(Flag("square_stronger", sq > 0, f"Square broke {sq} point(s) the white-box attacks did not"))
    if sweep and threat.eps > 0 and differentiable:
        accs = []
        for f in (0.5, 1.0, 2.0):
            r = pgd(model, x, y, threat=threat.with_eps(f * threat.eps), steps=20, generator=generator)
            accs.append(r.robust.float().mean().item())
        mono = all(accs[i] >= accs[i + 1] for i in range(len(accs) - 1))
        flags.append(Flag("eps_sweep", not mono,
                          "PGD-20 robust accuracy at ½ε, ε, 2ε: " + ", ".join(f"{v:.1%}" for v in accs)))
    return flags
