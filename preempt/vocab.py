"""The string vocabularies of preempt, declared once: each is a ``Literal`` type (for annotations and
the CLI's choices, which typer reads from it) and the tuple of its values (for validation).  A leaf
module: every layer may import it."""
from __future__ import annotations

from typing import Literal, get_args

Norm = Literal["linf", "l2"]
Resolution = Literal["auto", "model", "full"]          # where an attack or the loop works for large photos
Init = Literal["auto", "original", "descent", "random"]  # robustify's start
Goal = Literal["strongest", "least-visible"]
InnerLoss = Literal["ce", "ce+dlr-t", "margin-mt"]     # robustify's inner attack
Retry = Literal["none", "rmsprop"]
Optimizer = Literal["sign", "rmsprop"]
Format = Literal["auto", "png", "jpeg"]                # robustify's output format
CheckPreset = Literal["strong", "strong-once", "thorough", "pgd"]  # robustify --check (preempt.verdict.check.PRESETS)
# verify --suite (preempt.verdict.check.SUITES)
SuiteName = Literal["pgd", "strong-once", "strong", "final", "quick", "standard", "rand", "blackbox"]
Schedule = Literal["cosine", "constant", "step"]       # training learning-rate schedule
BudgetMap = Literal["uniform", "taper", "taper+jnd"]  # robustify's per-pixel share of δ (preempt.core.budget_map)
LoopPrecision = Literal["float32", "bfloat16"]         # robustify's persistent attackers (checks: always float32)

NORMS: tuple[str, ...] = get_args(Norm)
RESOLUTIONS: tuple[str, ...] = get_args(Resolution)
INITS: tuple[str, ...] = get_args(Init)
GOALS: tuple[str, ...] = get_args(Goal)
INNER_LOSSES: tuple[str, ...] = get_args(InnerLoss)
RETRIES: tuple[str, ...] = get_args(Retry)
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
FORMATS: tuple[str, ...] = get_args(Format)
CHECK_PRESETS: tuple[str, ...] = get_args(CheckPreset)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
LOOP_PRECISIONS: tuple[str, ...] = get_args(LoopPrecision)
BUDGET_MAPS: tuple[str, ...] = get_args(BudgetMap)
