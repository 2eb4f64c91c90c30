"""Preemptive robustification (Moon, Lee & Song, "Preemptive Image Robustification for
Protecting Users against Man-in-the-Middle Adversarial Attacks", AAAI 2022).

Given originals x_o, a classifier f and budgets (δ, ε), find

    x_r = argmin_{x_r ∈ B_δ(x_o) ∩ [0,1]}  ℓ( PGD_T(x_r; ε), y ),   y = f(x_o),

by an outer descent on x_r whose gradient flows through the unrolled T-step inner attack.
Differences from the paper's Algorithm 1, each measured in ``benchmarks/robustify.py``:

* images are batched and leave the batch once they are *verified*: every ``check_every`` outer
  steps the current x_r is quantised to 8 bits and attacked with a full PGD check (default
  PGD-20, ε/4 steps, random start).  If no iterate changes the label the quantised image is
  final.  A check is only spent on images the inner attack itself failed to break.  With
  ``settle`` > 0 a verified image takes that many more outer steps (to a deeper point) and is
  checked again (by the loop's check, or with ``recheck="final"`` by the final verdict); the later photo is kept
  only if it passes too;
* the outer step size decays (cosine) from ``step_size`` to a tenth of it;
* the result is judged as saved: the returned pixels are the quantised ones the check ran on;
* with ``least_change`` (ℓ∞, a model that resizes the photo) the photo checked and written is the change of
  least ℓ2 norm with the variable's model input (:mod:`preempt.core.least_change`): what the resize
  discards is dropped, so the same verdict comes at a higher PSNR;
* what robustify reports as robust is decided by a final verdict the loop never optimised against
  (:mod:`.final`: APGD-CE and 9-target APGD-T at 100 iterations on the file's pixels, a seed of its own).

The package, one job a module: :mod:`.config` (settings, the card's advice, δ stages), :mod:`.space`
(where the variable lives: the photo, the lifted grid, the per-pixel budget), :mod:`.optim` (the outer
optimisers, the best iterate), :mod:`.ledger` (per-image bookkeeping), :mod:`.loop` (one run at one δ),
:mod:`.final` (the final verdict), :mod:`.drivers` (retry, final verdict and δ escalation around the loop),
:mod:`.precision` (bfloat16 where native), :mod:`.results` (what is returned).
"""
from __future__ import annotations

from .config import CARD_CHECK, RECOMMENDABLE, RobustifyConfig, escalation_stages, recommended, resolve_init
from .drivers import judge, robustify, validate_images
from .final import FINAL_SEED_OFFSET, Final, FinalVerdict, final_seed, final_verdict
from .precision import FORCE_FLOAT32, bfloat16_native, loop_autocast, precision_used
from .results import ImageResult, RobustifyResult

__all__ = ["CARD_CHECK", "FINAL_SEED_OFFSET", "FORCE_FLOAT32", "Final", "FinalVerdict", "ImageResult", "RECOMMENDABLE",
           "RobustifyConfig", "RobustifyResult", "bfloat16_native", "escalation_stages", "final_seed", "final_verdict",
           "judge", "loop_autocast", "precision_used", "recommended", "resolve_init", "robustify", "validate_images"]
