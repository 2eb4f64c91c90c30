"""robustify's typed parts: the inner attack, the outer optimiser, early stopping, δ escalation and the goal, each
one of a few frozen variants (or None where the part is optional).

A setting lives in the one variant it means something for, so a combination that cannot run cannot be built:
cross-entropy's unrolled PGD has no attackers to count, the persistent attackers have no second-order unrolling,
the tanh box has a learning rate and no step size.  :data:`FLAT` maps the flat names the CLI and the card use
(``inner_loss``, ``kappa``, ``optimizer``, …) onto them (``RobustifyConfig.of``)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ...errors import UsageError
from ...vocab import GOALS, INNER_LOSSES, LOOP_PRECISIONS, OPTIMIZERS


def _positive_steps(steps: int, step_size: float | None, what: str) -> None:
    if not (isinstance(steps, int) and steps >= 1):
        raise UsageError(f"{what}: steps must be a whole number >= 1, got {steps!r}")
    if step_size is not None and not (math.isfinite(step_size) and step_size > 0):
        raise UsageError(f"{what}: step_size must be a finite number > 0, got {step_size!r}")


@dataclass(frozen=True)
class Unrolled:
    """The paper's inner attack (Moon, Lee & Song 2022): T steps of PGD kept in the graph, so the outer gradient
    flows through the attack.  ``loss`` ``ce``: cross-entropy; ``ce+dlr-t``: even outer steps attack with
    AutoAttack's targeted DLR towards the 3 likeliest wrong classes in turn (needs ≥ 4 classes).
    ``create_graph``: second-order unrolling (ℓ2 only).  ``step_size`` None: ε/4."""

    loss: str = "ce"
    steps: int = 10
    step_size: float | None = None
    create_graph: bool = False

    @property
    def name(self) -> str:
        return self.loss

    def validate(self) -> None:
        if self.loss not in ("ce", "ce+dlr-t"):
            raise UsageError(f"the unrolled inner attack's loss is ce or ce+dlr-t, got {self.loss!r}")
        _positive_steps(self.steps, self.step_size, "the unrolled inner attack")


@dataclass(frozen=True)
class Persistent:
    """``margin-mt``: one persistent targeted attacker per likeliest wrong class (``targets`` of them, in a ball
    ``eps_scale`` × ε), each taking ``steps`` steps per outer step on softplus(margin + ``kappa``); every
    ``restart_every`` outer steps one restarts at random (:mod:`preempt.algorithms.persistent`).  ``precision``
    bfloat16 runs their passes under autocast where the device has native bfloat16 (else float32); checks and the
    written photo stay float32."""

    targets: int = 4
    kappa: float = 4.0
    restart_every: int = 8
    eps_scale: float = 1.0
    precision: str = "float32"
    steps: int = 10
    step_size: float | None = None

    name = "margin-mt"

    def validate(self) -> None:
        _positive_steps(self.steps, self.step_size, "the persistent attackers")
        if not (isinstance(self.targets, int) and self.targets >= 1) or self.restart_every < 0 \
                or not math.isfinite(self.kappa) or not (math.isfinite(self.eps_scale) and self.eps_scale > 0):
            raise UsageError("inner_targets must be >= 1, restart_every >= 0, kappa finite and inner_eps_scale > 0")
        if self.precision not in LOOP_PRECISIONS:
            raise UsageError(f"loop_precision {self.precision!r}: choose {' or '.join(LOOP_PRECISIONS)}")


@dataclass(frozen=True)
class Sign:
    """Steepest descent in the norm (the sign of the gradient for ℓ∞), cosine-decayed steps from ``step_size``
    (None: δ/4)."""

    step_size: float | None = None

    name = "sign"

    def validate(self) -> None:
        if self.step_size is not None and not (math.isfinite(self.step_size) and self.step_size > 0):
            raise UsageError(f"step_size must be a finite number > 0, got {self.step_size!r}")


@dataclass(frozen=True)
class TanhBox:
    """The reference code's optimiser (ℓ∞ only): x_r = lo + (tanh(w) + 1)/2 · (hi − lo) over the box
    B_δ(x_o) ∩ [0, 1], RMSprop on w with learning rate ``lr``."""

    lr: float = 0.1

    name = "rmsprop"

    def validate(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UsageError(f"lr must be a finite number > 0, got {self.lr!r}")


RECHECKS = ("check", "final")  # EarlyStop.recheck: what checks a settled photo again


@dataclass(frozen=True)
class EarlyStop:
    """Checks during the loop: the first after ``min_steps`` outer steps, then every ``check_every`` (only on photos
    whose inner attack itself failed); a photo that passes stops there.  ``settle`` > 0: it takes that many outer
    steps more (a deeper point) and is checked again, the later photo kept if it passes too.  ``recheck``: what
    checks it again: ``check`` (the loop's check) or ``final`` (no second check in the loop: the final verdict judges
    the deeper photo and, where it breaks it, the first verified one; where there is no final verdict, or with
    service transforms to survive, the loop's check).  Without early stopping (``early_stop=None``) the loop runs
    every step and checks once at the end (the paper's algorithm)."""

    min_steps: int = 5
    check_every: int = 5
    settle: int = 0
    recheck: str = "check"

    def validate(self) -> None:
        if self.min_steps < 0 or self.check_every < 1 or self.settle < 0:
            raise UsageError("min_steps and settle must be >= 0, check_every >= 1")
        if self.recheck not in RECHECKS:
            raise UsageError(f"recheck {self.recheck!r}: choose {', '.join(RECHECKS)}")


@dataclass(frozen=True)
class Escalation:
    """δ escalation: a photo not robust at δ runs again, from the original, at ``factor`` × δ (on the 8-bit grid
    when δ lies on it), and so on up to ``max_delta``.  Without it (``escalation=None``) robustify runs one δ."""

    max_delta: float
    factor: float = 2.0

    def validate(self) -> None:
        if not (isinstance(self.max_delta, (int, float)) and math.isfinite(self.max_delta) and self.max_delta >= 0):
            raise UsageError(f"max_delta must be a finite number >= 0, got {self.max_delta!r}")
        if not (math.isfinite(self.factor) and self.factor > 1):
            raise UsageError(f"escalate must be a finite number > 1, got {self.factor!r}")


@dataclass(frozen=True)
class Strongest:
    """Write the verified photo as the loop found it (the most robust point it reached)."""

    name = "strongest"

    def validate(self) -> None:
        pass


@dataclass(frozen=True)
class LeastVisible:
    """Shrink a verified change towards the original while it stays robust: a bisection of ``shrink_steps`` steps
    on its scale (precision 1/2^steps)."""

    shrink_steps: int = 4

    name = "least-visible"

    def validate(self) -> None:
        if not (isinstance(self.shrink_steps, int) and self.shrink_steps >= 1):
            raise UsageError(f"shrink_steps must be a whole number >= 1, got {self.shrink_steps!r}")


Inner = Unrolled | Persistent
Outer = Sign | TanhBox
Goal = Strongest | LeastVisible

# flat name (the CLI's, the card's, RobustifyConfig.of's) -> (the variants that have it, their field)
FLAT: dict[str, tuple[tuple[type, ...], str]] = {
    "inner_steps": ((Unrolled, Persistent), "steps"),
    "inner_step_size": ((Unrolled, Persistent), "step_size"),
    "create_graph": ((Unrolled,), "create_graph"),
    "inner_targets": ((Persistent,), "targets"),
    "kappa": ((Persistent,), "kappa"),
    "restart_every": ((Persistent,), "restart_every"),
    "inner_eps_scale": ((Persistent,), "eps_scale"),
    "loop_precision": ((Persistent,), "precision"),
    "step_size": ((Sign,), "step_size"),
    "lr": ((TanhBox,), "lr"),
    "min_steps": ((EarlyStop,), "min_steps"),
    "check_every": ((EarlyStop,), "check_every"),
    "settle": ((EarlyStop,), "settle"),
    "recheck": ((EarlyStop,), "recheck"),
    "escalate": ((Escalation,), "factor"),
    "shrink_steps": ((LeastVisible,), "shrink_steps"),
}
INNER_FLAT = ("inner_loss",) + tuple(k for k, (kinds, _) in FLAT.items() if kinds[0] in (Unrolled, Persistent))
OUTER_FLAT = ("optimizer", "step_size", "lr")
STOP_FLAT = ("early_stop", "min_steps", "check_every", "settle", "recheck")
ESCALATION_FLAT = ("max_delta", "escalate")
GOAL_FLAT = ("goal", "shrink_steps")


def inner_of(inner_loss: str = "ce", **given) -> Inner:
    """The inner attack that ``inner_loss`` (ce | ce+dlr-t | margin-mt) names, with the flat settings ``given``;
    a setting that variant does not have is refused, naming the variant that has it."""
    if inner_loss not in INNER_LOSSES:
        raise UsageError(f"inner_loss {inner_loss!r}: choose {', '.join(INNER_LOSSES)}")
    kind: type = Persistent if inner_loss == "margin-mt" else Unrolled
    kw = {}
    for k, v in given.items():
        kinds, attr = FLAT[k]
        if kind not in kinds:
            raise UsageError(f"{k} is a setting of inner_loss={'margin-mt' if Persistent in kinds else 'ce'}, "
                             f"not of inner_loss={inner_loss!r}")
        kw[attr] = v
    part = Persistent(**kw) if kind is Persistent else Unrolled(loss=inner_loss, **kw)
    part.validate()
    return part


def outer_of(optimizer: str = "sign", **given) -> Outer:
    """The outer optimiser ``optimizer`` (sign | rmsprop) names, with ``step_size`` (sign) or ``lr`` (rmsprop)."""
    if optimizer not in OPTIMIZERS:
        raise UsageError(f"unknown optimizer {optimizer!r}: choose {' or '.join(OPTIMIZERS)}")
    kind: type = TanhBox if optimizer == "rmsprop" else Sign
    for k in given:
        if kind not in FLAT[k][0]:
            raise UsageError(f"{k} is a setting of optimizer={'rmsprop' if k == 'lr' else 'sign'}, "
                             f"not of optimizer={optimizer!r}")
    part = kind(**{FLAT[k][1]: v for k, v in given.items()})
    part.validate()
    return part


def early_stop_of(early_stop: bool = True, **given) -> EarlyStop | None:
    """Early stopping (``early_stop`` True) with ``min_steps``, ``check_every``, ``settle`` and ``recheck``, or none
    (False: the loop checks once, at its last step; then those settings are refused)."""
    if not early_stop:
        if given:
            raise UsageError(f"{', '.join(sorted(given))}: settings of early stopping, and early_stop is off "
                             "(the loop checks once, at its last step)")
        return None
    part = EarlyStop(**given)
    part.validate()
    return part


def escalation_of(max_delta: float | None = None, **given) -> Escalation | None:
    """δ escalation up to ``max_delta`` with ``escalate`` (the factor), or none (``max_delta`` None; then
    ``escalate`` is refused)."""
    if max_delta is None:
        if given:
            raise UsageError("escalate is a setting of δ escalation, and max_delta is not set (one δ, no escalation)")
        return None
    part = Escalation(max_delta, **{FLAT[k][1]: v for k, v in given.items()})
    part.validate()
    return part


def goal_of(goal: str = "strongest", **given) -> Goal:
    """The goal ``goal`` (strongest | least-visible) names; ``shrink_steps`` is least-visible's."""
    if goal not in GOALS:
        raise UsageError(f"goal {goal!r}: choose {', '.join(GOALS)}")
    if goal == "strongest":
        if given:
            raise UsageError("shrink_steps is a setting of goal='least-visible', not of goal='strongest'")
        return Strongest()
    part = LeastVisible(**{FLAT[k][1]: v for k, v in given.items()})
    part.validate()
    return part
