"""The model card: what a weights file says about itself (as timm's pretrained configs do).

A card is JSON (or TOML) beside the weights; :class:`Card` names its keys and their types, so
code that reads a card is checked by mypy instead of trusting string keys, and :func:`budgets`
is the one place the threat model a card declares becomes the (norm, ε, δ) robustify and
verify use when the user gives none.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypedDict, cast

from ..errors import UsageError


class ThreatSpec(TypedDict, total=False):
    norm: str      # linf | l2
    eps: float     # the attacker's budget the model was trained / is evaluated for
    delta: float   # the robustification budget


class RobustifySpec(TypedDict, total=False):
    init: str      # the start robustify should use with this model (measured where it helps)


class Card(TypedDict, total=False):
    name: str
    kind: str                  # classifier (default) | defense
    arch: str                  # a name in preempt.models.architectures, or torchvision:NAME
    arch_kwargs: dict[str, Any]
    preprocessing: dict[str, Any]  # input_size, channels, mean, std, resize (preempt.models.wrapper.Preprocessing)
    classes: list[str]
    classes_file: str
    dataset: str
    threat_model: ThreatSpec
    robustify: RobustifySpec
    training: dict[str, Any]   # method, command, config, wall_time_s
    metrics: dict[str, Any]
    licence: str
    sha256: str
    source: dict[str, Any]
    card_edits: list[Any]
    # defenses (kind = defense)
    defense: str
    classifier: str
    classifier_sha256: str
    detector: dict[str, Any]
    projection: dict[str, Any]


def as_card(d: Card | Mapping[str, Any] | None) -> Card:
    """A card read from JSON/TOML (or built in code) as a :class:`Card` (the same dict, typed)."""
    return cast(Card, d if d is not None else {})


NORMS = ("linf", "l2")


def budgets(card: Card | dict[str, Any] | None, norm: str | None = None, eps: float | None = None,
            delta: float | None = None) -> tuple[str, float, float]:
    """(norm, ε, δ): what is given, else what the card's ``threat_model`` declares, else ℓ∞ 0.1
    (δ defaults to the card's δ, else its ε; ε to the card's ε, else δ).  Raises ValueError naming
    the option for an unknown norm or a budget that is not a finite number ≥ 0."""
    tm: ThreatSpec = (card or {}).get("threat_model") or {}
    norm = norm or tm.get("norm", "linf")
    if norm not in NORMS:
        raise UsageError(f"--norm {norm}: choose {' or '.join(NORMS)}")
    delta = delta if delta is not None else tm.get("delta", tm.get("eps", 0.1))
    eps = eps if eps is not None else tm.get("eps", delta)
    for opt, v in (("--delta", delta), ("--eps", eps)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise UsageError(f"{opt} {v}: must be a finite number >= 0")
    return norm, float(eps), float(delta)
