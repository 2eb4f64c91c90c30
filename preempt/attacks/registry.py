"""Every attack by one name, with one signature and its defaults (as timm registers models).

An attack is called ``attack(model, x, y, threat, *, generator=None, **overrides) -> AttackResult``;
suites (:mod:`preempt.attacks.suite`) and checks refer to attacks only by these names.
``pgd-N`` is PGD with N steps for any N.  Adding an attack to every suite and check is one file
(the attack) and one :func:`register` line here::

    register("my-attack", my_attack, help="what it does", steps=50)

Example::

    from preempt.attacks.registry import get
    res = get("apgd-t")(model, x, y, Linf(0.1), generator=torch.Generator().manual_seed(0))
    res = get("pgd-50")(model, x, y, L2(1.5), step_size=0.3)
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.threat import ThreatModel
from ..errors import UsageError
from ..models.protocol import Model
from .adaptive_attack import adaptive
from .auto_pgd import apgd, apgd_targeted
from .base import AttackResult
from .fab import fab_targeted
from .projected_gradient import pgd
from .square_search import square
from .transfer import transfer


@dataclass(frozen=True)
class Attack:
    """A registered attack: ``fn(model, x, y, *, threat, generator, **kw)`` with ``defaults``."""

    name: str
    fn: Callable[..., AttackResult]
    help: str
    defaults: dict[str, Any] = field(default_factory=dict)
    gradients: bool = True   # False: needs only the model's outputs (a black-box attack)

    def __call__(self, model: Model, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, *,
                 generator: torch.Generator | None = None, **overrides: Any) -> AttackResult:
        return self.fn(model, x, y, threat=threat, generator=generator, **{**self.defaults, **overrides})


ATTACKS: dict[str, Attack] = {}


def register(name: str, fn: Callable[..., AttackResult], *, help: str, gradients: bool = True,
             **defaults: Any) -> Attack:
    """Register ``fn`` under ``name`` with keyword defaults; returns the entry."""
    if name in ATTACKS:
        raise UsageError(f"attack {name!r} is registered already")
    ATTACKS[name] = Attack(name, fn, help, dict(defaults), gradients)
    return ATTACKS[name]


def get(name: str) -> Attack:
    """The attack ``name``; ``pgd-N`` is PGD with N steps."""
    if name in ATTACKS:
        return ATTACKS[name]
    if name.startswith("pgd-") and name[4:].isdigit():
        return Attack(name, pgd, f"PGD, {name[4:]} steps of ε/4 from a random start", {"steps": int(name[4:])})
    raise KeyError(f"unknown attack {name!r}; registered: {', '.join(names())}, pgd-N")


def names() -> list[str]:
    return list(ATTACKS)


register("pgd", pgd, help="PGD (Madry et al. 2018): 20 steps of ε/4 from a random start")
register("apgd-ce", apgd, help="APGD-CE (Croce & Hein 2020): 100 iterations, cross-entropy", loss="ce")
register("apgd-dlr", apgd, help="APGD-DLR: 100 iterations, the difference-of-logits ratio", loss="dlr")
register("apgd-t", apgd_targeted, help="APGD-T: targeted DLR at the 9 likeliest wrong classes, 100 iterations each")
register("apgd-ce-25", apgd, help="APGD-CE at 25 iterations (robustify's strong check)", steps=25, loss="ce")
register("apgd-t-25", apgd_targeted, help="APGD-T at 25 iterations, 3 targets (robustify's strong check)",
         steps=25, n_targets=3)
register("fab-t", fab_targeted, help="FAB-T (Croce & Hein 2020): minimum-norm, 9 targets, 100 iterations")
register("square", square, help="Square (Andriushchenko et al. 2020): 5,000 queries, score-based",
         gradients=False, queries=5000)
register("apgd-ce-eot", apgd, help="APGD-CE with EOT over 20 draws (randomized models)", loss="ce", eot=20)
register("apgd-dlr-eot", apgd, help="APGD-DLR with EOT over 20 draws (randomized models)", loss="dlr", eot=20)
register("adaptive", adaptive, help="robustification-aware: undo the robustification, then PGD")
register("transfer-pgd-20", transfer, help="PGD-20 crafted on a surrogate (surrogate=…), judged on the model",
         gradients=False, attack="pgd")
register("transfer-apgd-ce", transfer, help="APGD-CE crafted on a surrogate (surrogate=…), judged on the model",
         gradients=False, attack="apgd-ce")
