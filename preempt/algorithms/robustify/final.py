"""The final verdict behind every "robust" robustify reports.

robustify's loop stops on its own check (cheap: APGD from one start, 25 iterations); by stopping there
it *selects* photos on which that check is wrong.  So the claim a user sees is decided afterwards by a
second, stronger verification that the loop never optimised against:

* stronger than the reference AutoAttack's gradient attacks: APGD-CE from 3 random starts (the reference
  runs one), then APGD-T on 9 targets (AutoAttack's order, by logits), 100 iterations each
  (``CHECKS["final"]``);
* in the ball the claim is about: the file's own pixels through the model's preprocessing
  (``resolution="full"``), not the model-input ball the loop's check uses for large photos;
* from random starts of its own: its generator is seeded with :func:`final_seed`, never the loop's
  seed nor a δ stage's;
* with ``slack``: a photo the attacks left correctly classified but brought within ``slack`` logits of a wrong
  label (the lowest margin z_y − max_{j≠y} z_j any APGD iterate reached, :attr:`Verdict.closest`) is not robust
  either: another random start may cross (measured: the test claim the reference AutoAttack broke last came within
  0.07 logits under our attacks, and the reference APGD-T broke it from 10 of 16 seeds; two claims its seed 0 held
  that came within 0.17 and 0.45 fell to 1 of 8 of its seeds each: docs/benchmarks.md, "Near misses").

A photo the final verdict breaks is not robust (with δ escalation it moves on to the next δ).  The
final verdict judges the photo exactly as written (the 8-bit grid, and a JPEG as decoded).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ...core.threat import ThreatModel
from ...models.protocol import Model
from ...verdict.check import CHECKS, Check

FINAL_SEED_OFFSET = 1_000_003  # a prime away from the loop's seed and every δ stage's (seed + 1000 k)


def final_seed(seed: int) -> int:
    """The final verdict's seed for a robustify run seeded ``seed`` (never the loop's own)."""
    return seed + FINAL_SEED_OFFSET


@dataclass(frozen=True)
class Final:
    """What decides "robust" after the loop: ``check`` (default ``CHECKS["final"]``: APGD-CE + APGD-T on 9
    targets at 100 iterations) where ``resolution`` says (``full``: the file's own pixels through the model's
    preprocessing; ``model``: the model input over the image of the ε-ball; ``auto``: as the loop's check);
    ``slack``: the margin in logits the attacks must leave (0: correctly classified is enough)."""

    check: Check = field(default_factory=lambda: CHECKS["final"])
    resolution: str = "full"
    slack: float = 0.0

    def describe(self) -> str:
        """One phrase for the header and reports: the attacks and where they run."""
        where = {"full": "the file's pixels", "model": "the model input", "auto": "the check's ball"}[self.resolution]
        runs: list[list] = []  # [label, count] in order, repeats collapsed
        for label in self.check.attacks():
            if runs and runs[-1][0] == label:
                runs[-1][1] += 1
            else:
                runs.append([label, 1])
        attacks = " + ".join(f"{n} × {label}" if n > 1 else label for label, n in runs)
        slack = f", slack {self.slack:g} logits" if self.slack else ""
        return f"final verdict {self.check.name} ({attacks}{slack}) on {where}"


@dataclass
class FinalVerdict:
    """The final verdict on a batch: robust (N,) bool, what broke each photo (None: held, or not judged; "slack":
    held, but nearer a wrong label than ``Final.slack``), passes per photo, seconds, and the lowest margin the
    attacks reached per photo (``closest``, over every model; +inf where not judged)."""

    robust: torch.Tensor
    broken_by: list[str | None]
    passes: torch.Tensor
    seconds: float
    closest: torch.Tensor | None = None


def final_verdict(final: Final, models: Sequence[Model], ys: Sequence[torch.Tensor], photos: torch.Tensor,
                  threat: ThreatModel, seed: int, on: torch.Tensor | None = None) -> FinalVerdict:
    """``final`` on the photos ``photos`` (as written) that ``on`` marks (default: all), against each model's
    label ``ys[m]``: robust only where every model's attacks fail (each model attacks what the ones before it
    left robust), each by ``final.slack`` logits at least.  Runs on a generator of its own, seeded
    ``final_seed(seed)``."""
    t0 = time.perf_counter()
    n = len(photos)
    robust = on.clone() if on is not None else torch.ones(n, dtype=torch.bool, device=photos.device)
    broken: list[str | None] = [None] * n
    passes = torch.zeros(n, dtype=torch.long)
    closest = torch.full((n,), float("inf"))
    gen = torch.Generator(device=photos.device).manual_seed(final_seed(seed))
    for model, y in zip(models, ys):
        idx = robust.nonzero().squeeze(1)
        if not len(idx):
            break
        v = final.check.judge(model, photos[idx], y[idx], threat, generator=gen, resolution=final.resolution)
        passes[idx.cpu()] += int(round(v.total_passes / len(idx)))
        assert v.closest is not None  # Check.judge always reports it (+inf where no APGD stage ran)
        near = v.closest.cpu()
        closest[idx.cpu()] = torch.minimum(closest[idx.cpu()], near)
        for j, i in enumerate(idx.tolist()):
            if not bool(v.robust[j]):
                robust[i] = False
                broken[i] = v.broken_by[j] or "final"
            elif float(near[j]) < final.slack:
                robust[i] = False
                broken[i] = "slack"
    return FinalVerdict(robust, broken, passes, time.perf_counter() - t0, closest)
