"""robustify's settings: :class:`RobustifyConfig`, what a model's card recommends, the δ stages."""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from typing import TYPE_CHECKING

from ...core.budget_map import MAPS
from ...core.threat import ThreatModel, threat_model
from ...errors import UsageError
from ...verdict import upload
from ...verdict.check import CHECKS, Check
from ...vocab import CHECK_PRESETS, GOALS, INITS, RESOLUTIONS, RETRIES
from .final import Final
from .parts import (
    ESCALATION_FLAT,
    FLAT,
    GOAL_FLAT,
    INNER_FLAT,
    OUTER_FLAT,
    STOP_FLAT,
    EarlyStop,
    Escalation,
    Goal,
    Inner,
    LeastVisible,
    Outer,
    Persistent,
    Sign,
    Strongest,
    TanhBox,
    Unrolled,
    early_stop_of,
    escalation_of,
    goal_of,
    inner_of,
    outer_of,
)

if TYPE_CHECKING:
    from ...models.protocol import Model




@dataclass
class RobustifyConfig:
    norm: str = "linf"
    delta: float = 0.1
    eps: float = 0.1
    steps: int = 30            # outer steps at most
    inner: Inner = Unrolled()  # the inner attack (parts.py): Unrolled (the paper's T-step PGD, ce | ce+dlr-t) or
                               # Persistent (margin-mt: persistent targeted attackers, for standard classifiers)
    outer: Outer = Sign()      # the outer optimiser: Sign (steepest descent, cosine steps) or TanhBox (ℓ∞)
    check: Check = CHECKS["strong"]  # the verdict behind "robust" (preempt.verdict.check): 2 × PGD-20, APGD-CE + APGD-T twice
    escalation: Escalation | None = None  # δ escalation (parts.py): images not robust at δ run again at 2δ, 4δ, …
                               # up to its max_delta (flat names: max_delta, escalate); None: one δ
    give_up: int = 0           # > 0: an image whose inner attack never failed in its first give_up outer steps stops
                               # there, not robust (with max_delta: it moves on to the next δ sooner; never at the
                               # last δ)
    retry: str = "none"        # none | rmsprop: images the loop could not verify run once more, from the start,
                               # with the tanh-box RMSprop (ℓ∞; photos the loop ran at full resolution)
    quantize: bool = True
    init: str = "auto"         # original | random (a random point of the δ-ball, as the reference code)
                               # | descent: one signed step down the clean loss (the x̂_r of preempt training)
                               # | auto: what the model card recommends, else original
    early_stop: EarlyStop | None = EarlyStop()  # checks during the loop (min_steps, check_every, settle); None: one
                               # check at the last step (the paper's algorithm)
    resolution: str = "auto"   # auto | model | full: where the loop works (see preempt.core.resolution)
    check_resolution: str | None = None  # where the check attacks: model = the model input over the image of the
                               # ε-ball (a superset of what a file attacker reaches), full = the file's own pixels;
                               # None: as resolution
    goal: Goal = Strongest()   # Strongest | LeastVisible (parts.py): shrink a verified change while it stays robust
    least_change: bool = False  # ℓ∞, one model that resizes the photo: every photo checked and written is the least-ℓ2
                                # change with the same model input (preempt.core.least_change): higher PSNR, same verdict
    work_scale: int = 3        # model resolution: the change's grid, in multiples of the model input
    survive: str | None = None  # service transforms to stay robust through, e.g. "jpeg:75-95,resize:1080"
                                # (preempt.verdict.upload): expectation over them in the loss, real codec in the check
    seed: int = 0
    budget_map: str = "taper"  # per-pixel share of δ where the photo is the variable (ℓ∞; preempt.core.budget_map):
                               # uniform | taper (fades to 0 at the edge of what the model sees: no crop rectangle)
                               # | taper+jnd (and less on smooth areas, where the eye sees a change first)
    final: Final | None = field(default_factory=Final)  # what decides "robust" after the loop (robustify.final);
                                # None: the loop's check alone (research and the paper's table, never the CLI)

    def validate(self) -> None:
        """Refuse settings that would make "robust" meaningless or the loop undefined."""
        for name in ("delta", "eps"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise UsageError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.steps < 0 or self.give_up < 0:
            raise UsageError("steps and give_up must be >= 0")
        if self.early_stop is not None:
            if not isinstance(self.early_stop, EarlyStop):
                raise UsageError(f"early_stop must be an EarlyStop or None, got {self.early_stop!r}")
            self.early_stop.validate()
        if not isinstance(self.check, Check):
            raise UsageError(f"check must be a preempt.verdict.check.Check (e.g. CHECKS['strong']), got {self.check!r}")
        self.check.validate()
        if self.final is not None:
            if not isinstance(self.final, Final) or self.final.resolution not in RESOLUTIONS:
                raise UsageError(f"final must be a preempt.algorithms.robustify.Final (resolution "
                                 f"{', '.join(RESOLUTIONS)}), got {self.final!r}")
            self.final.check.validate()
            if not (isinstance(self.final.slack, (int, float)) and math.isfinite(self.final.slack)
                    and self.final.slack >= 0):
                raise UsageError(f"final_slack must be a finite number of logits >= 0, got {self.final.slack!r}")
        if not isinstance(self.inner, (Unrolled, Persistent)) or not isinstance(self.outer, (Sign, TanhBox)):
            raise UsageError(f"inner must be an Unrolled or Persistent, outer a Sign or TanhBox "
                             f"(preempt.algorithms.robustify.parts), got {self.inner!r} and {self.outer!r}")
        self.inner.validate()
        self.outer.validate()
        # the rules no type expresses: they join two parts, or a part and the threat model
        if isinstance(self.inner, Persistent) and (self.survive or isinstance(self.outer, TanhBox)):
            raise UsageError("inner_loss='margin-mt' works with the sign optimizer, without --survive")
        if isinstance(self.inner, Unrolled) and self.inner.create_graph and self.norm != "l2":
            raise UsageError("create_graph (second-order unrolling) is for ℓ2: the ℓ∞ sign step has no second order")
        if self.least_change and self.norm != "linf":
            raise UsageError("least_change is for ℓ∞ (the δ-box it projects into); use goal='least-visible' for ℓ2")
        if self.escalation is not None:
            if not isinstance(self.escalation, Escalation):
                raise UsageError(f"escalation must be an Escalation or None, got {self.escalation!r}")
            self.escalation.validate()
            if self.escalation.max_delta < self.delta:
                raise UsageError(f"max_delta must be >= delta ({self.delta:g}), got {self.escalation.max_delta!r}")
        if self.retry not in RETRIES:
            raise UsageError(f"retry {self.retry!r}: choose {' or '.join(RETRIES)}")
        if self.retry == "rmsprop" and (self.norm != "linf" or isinstance(self.outer, TanhBox)):
            raise UsageError("retry='rmsprop' is for ℓ∞ with the sign optimizer (it retries with the other one)")
        if isinstance(self.outer, TanhBox) and self.norm != "linf":
            raise UsageError("optimizer='rmsprop' (the tanh box reparametrisation) is for ℓ∞ only")
        for name in ("resolution", "check_resolution"):
            v = getattr(self, name)
            if v not in RESOLUTIONS and not (name == "check_resolution" and v is None):
                raise UsageError(f"{name} {v!r}: choose {', '.join(RESOLUTIONS)}")
        if not isinstance(self.goal, (Strongest, LeastVisible)):
            raise UsageError(f"goal must be a Strongest or LeastVisible (preempt.algorithms.robustify.parts) "
                             f"(as a flat name: {' or '.join(GOALS)}), got {self.goal!r}")
        self.goal.validate()
        if self.init not in INITS:
            raise UsageError(f"unknown init {self.init!r}; choose {', '.join(INITS)}")
        if self.budget_map not in MAPS:
            raise UsageError(f"budget_map {self.budget_map!r}: choose {', '.join(MAPS)}")
        upload.parse(self.survive)  # raises on a spec it cannot read

    def chains(self) -> list[upload.Chain]:
        return upload.parse(self.survive)

    @property
    def inner_loss(self) -> str:
        """The inner attack's name: ce, ce+dlr-t or margin-mt."""
        return self.inner.name

    @property
    def optimizer(self) -> str:
        """The outer optimiser's name: sign or rmsprop."""
        return self.outer.name

    @property
    def loop_precision(self) -> str:
        """The precision the persistent attackers ask for (float32 for the unrolled attack)."""
        return self.inner.precision if isinstance(self.inner, Persistent) else "float32"

    def flat(self) -> dict:
        """The settings as flat names (the inverse of :meth:`of`): the fields, with the parts spelled out."""
        parts = ("inner", "outer", "early_stop", "escalation", "goal")
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in parts}
        out["inner_loss"], out["optimizer"], out["early_stop"] = self.inner_loss, self.optimizer, self.early_stop is not None
        out["max_delta"] = self.escalation.max_delta if self.escalation is not None else None
        out["goal"] = self.goal.name
        out["final_slack"] = self.final.slack if self.final is not None else None
        for k, (kinds, attr) in FLAT.items():
            for part in (self.inner, self.outer, self.early_stop, self.escalation, self.goal):
                if type(part) in kinds:
                    out[k] = getattr(part, attr)
        return out

    def record(self) -> dict:
        """:meth:`flat` as plain data (the check and the final verdict as dicts): what a result and the JSON keep."""
        out = {k: asdict(v) if is_dataclass(v) and not isinstance(v, type) else v for k, v in self.flat().items()}
        return {**out, "loop_precision": self.loop_precision}

    def replaced(self, **flat) -> RobustifyConfig:
        """This config with flat settings changed (``kappa=8``, ``inner_loss='ce'``, ``delta=4/255``); a part whose
        variant changes starts from that variant's defaults."""
        now = self.flat()
        if "inner_loss" in flat and flat["inner_loss"] != now["inner_loss"]:
            now = {k: v for k, v in now.items() if k not in INNER_FLAT or k == "inner_steps"}
        if "optimizer" in flat and flat["optimizer"] != now["optimizer"]:
            now = {k: v for k, v in now.items() if k not in OUTER_FLAT}
        if "early_stop" in flat and bool(flat["early_stop"]) != now["early_stop"]:
            now = {k: v for k, v in now.items() if k not in STOP_FLAT}
        if "max_delta" in flat and (flat["max_delta"] is None) != (now["max_delta"] is None):
            now = {k: v for k, v in now.items() if k not in ESCALATION_FLAT}
        if "goal" in flat and flat["goal"] != now["goal"]:
            now = {k: v for k, v in now.items() if k not in GOAL_FLAT}
        if "final" in flat:
            now.pop("final_slack")  # a Final given whole brings its own slack
        return type(self).of(**{**now, **flat})

    @classmethod
    def of(cls, **flat) -> RobustifyConfig:
        """A config from flat settings, as the CLI, the cards and ``preempt.robustify(model, x, **kw)`` name them:
        the fields of this class, plus ``inner_loss`` and the inner attack's settings (``inner_steps``,
        ``inner_targets``, ``kappa``, …, :data:`parts.FLAT`) and ``optimizer`` with ``step_size`` or ``lr``.  A
        setting the chosen variant does not have is refused (``kappa`` with ``inner_loss='ce'``)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(flat) - names - {k for _, keys, _ in _PARTS for k in keys} - {"final_slack"})
        if unknown:
            raise TypeError(f"unknown RobustifyConfig setting(s): {', '.join(unknown)}")
        if flat.get("final_slack") is not None:  # the final verdict's slack (Final.slack); None: the Final's own
            if flat.get("final", Final()) is None:
                raise UsageError("final_slack is a setting of the final verdict, and final is None (the check alone)")
            flat["final"] = replace(flat.get("final") or Final(), slack=flat["final_slack"])
        flat.pop("final_slack", None)
        for field_name, keys, build in _PARTS:
            # a flat selector (early_stop=True, goal='least-visible') is built; the typed part itself passes as given
            given = {k: flat.pop(k) for k in keys if k in flat
                     and not (k == field_name and not isinstance(flat[k], (bool, str)))}
            if given:
                flat[field_name] = build(**given)
        return cls(**flat)

    @classmethod
    def paper(cls, **kw) -> RobustifyConfig:
        """The published algorithm: 100 outer steps, PGD-20 inside, RMSprop on a tanh-reparametrised
        ℓ∞ box from a random start, judged once at the end (2,100 passes per image)."""
        base = dict(steps=100, inner_steps=20, optimizer="rmsprop" if kw.get("norm", "linf") == "linf" else "sign",
                    init="random", early_stop=False, check=CHECKS["pgd"])
        return cls.of(**{**base, **kw})

    @classmethod
    def for_model(cls, model: Model | Sequence[Model], *, check: str | Check | None = None,
                  check_steps: int | None = None, **given) -> RobustifyConfig:
        """The settings robustify runs for ``model`` (the first, for several): the library's defaults, then what
        its card declares (the threat model's norm, ε and δ; the ``robustify`` recommendations, e.g. the
        persistent attackers, δ escalation and the 9-target check of the ImageNet cards), then ``given`` (fields of
        this class; None means not given).  ``check``: a preset name or a :class:`Check` (default: the card's);
        ``check_steps``: its PGD steps.  Two rules keep the card's advice coherent with what was given: its
        ``max_delta`` is dropped when below the δ asked for (no escalation), and a setting of a variant not chosen
        (the attackers' ``loop_precision`` with another inner loss, ``settle`` with early stopping off).
        ``preempt robustify`` calls exactly this."""
        from ...models.card import budgets

        first: Model = model[0] if isinstance(model, (list, tuple)) else model  # type: ignore[assignment]
        norm, eps, delta = budgets(getattr(first, "card", None), given.pop("norm", None), given.pop("eps", None),
                                   given.pop("delta", None))
        if isinstance(check, str) and check not in CHECK_PRESETS:
            raise UsageError(f"check {check!r}: choose {', '.join(CHECK_PRESETS)}")
        chk = CHECKS[check] if isinstance(check, str) else check
        if chk is not None and not isinstance(chk, Check):
            raise UsageError(f"check must be a preempt.verdict.check.Check (e.g. CHECKS['strong']), got {chk!r}")
        settings = {**recommended(first, chk), **given}
        if check_steps is not None:
            settings["check"] = replace(settings["check"], steps=check_steps)
        if "max_delta" not in given and (settings.get("max_delta") or 0) < delta:
            settings.pop("max_delta", None)  # the card's cap is below the δ asked for: no escalation
        chosen = _variants(settings)  # the card's settings of a variant not chosen (its attackers' with another
        for k in set(settings) - set(given):  # inner loss, its settle with early stopping off) are dropped
            if k in FLAT and not set(FLAT[k][0]) & chosen:
                settings.pop(k)
        settings["init"] = resolve_init(settings.get("init", "auto"), first)
        cfg = cls.of(**{**settings, "norm": norm, "eps": eps, "delta": delta})
        cfg.validate()
        return cfg

    def describe(self, device: str = "cpu") -> str:
        """One line that says what runs (the header of ``preempt robustify``): the budgets, the loop, its check,
        the attackers and their precision on ``device``, the δ map and escalation, what decides "robust"."""
        from ...budget import format_budget as b
        from .precision import precision_used

        chk, esc = self.check, self.escalation
        targets = chk.apgd_targets not in (None, 3)
        apgd_t = "" if not targets and chk.apgd_order == "logits" else (
            (f" ({chk.apgd_targets} " if targets else " (") + "APGD-T targets"
            + (" by first-order margin)" if chk.apgd_order == "linear" else ")"))
        return (f"{self.norm} δ={b(self.delta)} ε={b(self.eps)}; ≤{self.steps} outer × {self.inner.steps} inner steps, "
                f"check {chk.name}" + (f" (PGD-{chk.steps})" if chk.steps != 20 else "") + apgd_t
                + (f" at {self.check_at()} resolution" if self.check_resolution else "")
                + f", goal {self.goal.name}"
                + (f", settle {self.early_stop.settle}" if self.early_stop and self.early_stop.settle else "")
                + (" (rechecked by the final verdict)" if self.recheck_by_final else "")
                + (f", inner loss {self.inner_loss}" if self.inner_loss != "ce" else "")
                + (f" ({self.inner.targets} targets) in {precision_used(self, device)}"
                   if isinstance(self.inner, Persistent) else "")
                + (", least change" if self.least_change else "")
                + (f", δ map {self.budget_map}" if self.budget_map != "uniform" else "")
                + (f", δ up to {b(esc.max_delta)}" if esc else "")
                + (f" (next δ after {self.give_up} steps without a failed attack)" if self.give_up and esc else "")
                + (f", give up after {self.give_up} steps without a failed attack" if self.give_up and not esc else "")
                + (f", retry {self.retry}" if self.retry != "none" else "")
                + (f"; surviving {self.survive}" if self.survive else "")
                + (f"; robust = {self.final.describe()}" if self.final is not None else "; robust = the check alone"))

    @property
    def recheck_by_final(self) -> bool:
        """Whether a settled photo skips the loop's second check for the final verdict (``recheck="final"``, with
        settle steps and a final verdict; not with service transforms to survive, which the final verdict does not
        run, nor with the least-visible goal, which shrinks only a change the loop's check verified)."""
        stop = self.early_stop
        return bool(stop and stop.settle and stop.recheck == "final" and self.final is not None and not self.survive
                    and not isinstance(self.goal, LeastVisible))

    def check_at(self) -> str:
        """Where the check attacks a written photo (``check_resolution``, else ``resolution``)."""
        return self.check_resolution or self.resolution

    def delta_ball(self) -> ThreatModel:
        return threat_model(self.norm, self.delta)

    def eps_ball(self) -> ThreatModel:
        return threat_model(self.norm, self.eps)


# field -> its flat names -> what builds the part from them (RobustifyConfig.of), in the order they are built
_PARTS = (("early_stop", STOP_FLAT, early_stop_of), ("escalation", ESCALATION_FLAT, escalation_of),
          ("goal", GOAL_FLAT, goal_of), ("inner", INNER_FLAT, inner_of), ("outer", OUTER_FLAT, outer_of))


def _variants(flat: dict) -> set[type]:
    """The part variants that flat settings choose (each selector's default where not given)."""
    return {Persistent if flat.get("inner_loss") == "margin-mt" else Unrolled,
            TanhBox if flat.get("optimizer") == "rmsprop" else Sign,
            EarlyStop if flat.get("early_stop", True) not in (False, None) else type(None),
            Escalation if flat.get("max_delta") is not None else type(None),
            LeastVisible if flat.get("goal") == "least-visible" else Strongest}


RECOMMENDABLE = ("inner_loss", "inner_steps", "inner_targets", "inner_eps_scale", "kappa", "max_delta", "check_resolution",
                 "give_up", "loop_precision", "least_change", "settle", "recheck", "final_slack")


CARD_CHECK = {"check_apgd_targets": "apgd_targets", "check_apgd_steps": "apgd_steps",
              "check_apgd_order": "apgd_order"}  # card key -> Check field


def recommended(model: Model, check: Check | None = None) -> dict:
    """The robustify settings a model's card recommends (``card["robustify"]``: what was measured to
    work for it, e.g. the persistent multi-target attack for the standard ImageNet models), restricted
    to :data:`RECOMMENDABLE`, with ``check`` (None: the card's preset ``check``, else ``strong``) as the
    card would judge with it (its APGD-T targets, iterations and order, :data:`CARD_CHECK`, where the check runs
    APGD).  ``init`` has its own resolution (:func:`resolve_init`)."""
    rec = ((getattr(model, "card", None) or {}).get("robustify") or {})
    if check is None:
        preset = rec.get("check", "strong")
        if preset not in CHECK_PRESETS:
            raise UsageError(f"{getattr(model, 'name', 'the model')}'s card recommends check {preset!r}: "
                             f"choose {', '.join(CHECK_PRESETS)}")
        check = CHECKS[preset]
    over = {f: rec[k] for k, f in CARD_CHECK.items() if k in rec}
    apgd = any(n in ("apgd-ce", "apgd-t") for n in check.stages.split("+"))
    return {**{k: v for k, v in rec.items() if k in RECOMMENDABLE},
            "check": replace(check, **over) if over and apgd else check}


def resolve_init(init: str, model: Model) -> str:
    """``auto`` → the start the model's card recommends (``card["robustify"]["init"]``, set where
    it was measured to help), else ``original``.

    Measured: on 1,000 test images robustified against fmnist-linf-preempt, PGD-20 accuracy was
    82.2% from the descent start vs 80.4% from the original (and 121 vs 129 passes per image);
    for fmnist-l2-preempt (300 images) 79.0% vs 81.0%, and for the pgd-at model 85.7% vs 86.3% —
    so only the ℓ∞ preempt cards recommend it."""
    if init not in INITS:
        raise UsageError(f"unknown init {init!r}; choose {', '.join(INITS)}")
    if init != "auto":
        return init
    card = getattr(model, "card", None) or {}
    rec = (card.get("robustify") or {}).get("init", "original")
    return rec if rec in INITS[1:] else "original"


def _next_delta(d: float, factor: float) -> float:
    """The next δ of an escalation: ``factor`` × d, rounded to the 8-bit grid (at least one level up) when d
    lies on it, since a written photo's change moves in whole levels (2.83/255 would write as 2/255)."""
    levels = d * 255
    if abs(levels - round(levels)) > 1e-6:
        return d * factor
    return max(math.floor(levels * factor + 0.5), round(levels) + 1) / 255


def escalation_stages(cfg: RobustifyConfig) -> Iterator[RobustifyConfig]:
    """The configs of δ escalation's later stages: 2δ, 4δ, … (``escalate``) up to ``max_delta``, each run from the
    original with a seed of its own, ``give_up`` in all but the last."""
    esc = cfg.escalation
    assert esc is not None
    d, stage = cfg.delta, 0
    while d < esc.max_delta - 1e-12:
        d, stage = min(_next_delta(d, esc.factor), esc.max_delta), stage + 1
        yield replace(cfg, delta=d, escalation=None, seed=cfg.seed + 1000 * stage,
                      give_up=cfg.give_up if d < esc.max_delta - 1e-12 else 0)
