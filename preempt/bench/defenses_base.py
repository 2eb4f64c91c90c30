"""The defenses table's parts: its settings (:class:`BenchConfig`), a measured row (:class:`Row`), the bundled
models each row uses, and the attack helpers the rows share."""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..attacks import adaptive, apgd, apgd_targeted, pgd
from ..attacks.base import Survivors
from ..models.protocol import Model
from .defenses_report import NO_L2, ROWS

MODELS = {"standard": "fmnist-standard", "pgd-at": "fmnist-linf-pgdat", "fast-at": "fmnist-linf-fastat",
          "pgd-at-d": "fmnist-linf-pgdat-d6k", "rst": "fmnist-linf-pgdat-rst",
          "smoothing": "fmnist-gaussian-0.25", "adv-ours": "fmnist-linf-pgdat", "ours-ours": "fmnist-linf-preempt-d3",
          "rst-ours": "fmnist-linf-pgdat-rst"}
# ℓ2 (``--norm l2``): the rows with an ℓ2 meaning, with their ℓ2 models; the others say why not
MODELS_L2 = {"standard": "fmnist-standard", "pgd-at": "fmnist-l2-pgdat", "smoothing": "fmnist-gaussian-0.25",
             "adv-ours": "fmnist-l2-pgdat", "ours-ours": "fmnist-l2-preempt-d3"}
DEFENSES = {"magnet": "fmnist-magnet", "magnet-jsd": "fmnist-magnet", "magnet-both": "fmnist-magnet",
            "defense-gan": "fmnist-defense-gan"}
MAGNET_DETECTORS = {"magnet": ("recon",), "magnet-jsd": ("jsd",), "magnet-both": ("recon", "jsd")}
# a row's code version: a stored row of an older version is measured again
ROW_VERSION = {"magnet": 2, "magnet-jsd": 2, "magnet-both": 2}



@dataclass
class BenchConfig:
    n: int = 1000
    eps: float = 0.1
    seed: int = 0
    sigma: float = 0.25            # smoothing noise
    smooth_n: int = 100            # smoothing: noise draws per prediction (majority vote)
    certify_n0: int = 100          # smoothing CERTIFY
    certify_n: int = 500
    certify_alpha: float = 0.001
    eot: int = 8                   # smoothing: noise draws per gradient of the adaptive PGD
    apgd_targets: int = 3
    batch: int = 250
    cw_steps: int = 100            # MagNet rows: Adam steps per binary-search step of CW-ℓ2
    cw_binary_steps: int = 5
    cw_n: int | None = None        # unbounded CW on the first N images only (None: all n)
    norm: str = "linf"             # linf | l2 (the rows of NO_L2 have no ℓ2 meaning)

    @classmethod
    def for_norm(cls, norm: str, *, eps: float | None = None, **kw: Any) -> BenchConfig:
        """The settings for ``norm``: ε defaults to the paper's 0.1 for ℓ∞ and 1.5 for ℓ2."""
        return cls(norm=norm, eps=eps if eps is not None else (1.5 if norm == "l2" else 0.1), **kw)


@dataclass
class Row:
    key: str
    name: str
    model: str
    n: int
    clean: float
    non_adaptive: float
    non_adaptive_attack: str
    adaptive: float | None
    adaptive_attack: str | None
    per_attack: dict[str, float] = field(default_factory=dict)   # accuracy after each attack, in order
    certified: float | None = None
    train_s: float | None = None
    inference_ms: float = 0.0
    robustify_ms: float | None = None
    robustify_passes: float | None = None
    seconds: float = 0.0
    depends: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def model_for(key: str, norm: str) -> str:
    return MODELS_L2[key] if norm == "l2" else MODELS[key]


def rows_for(norm: str) -> list[str]:
    """The rows measured at ``norm``."""
    return [k for k in ROWS if norm != "l2" or k not in NO_L2]


def chunks(n: int, bs: int):
    return [slice(i, min(i + bs, n)) for i in range(0, n, bs)]


def timed_predict(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, bs: int) -> tuple[torch.Tensor, float]:
    predict(x[:2])  # warm-up: the first call of a model pays for allocations and kernel choices
    t0 = time.perf_counter()
    out = torch.cat([predict(x[s]) for s in chunks(len(x), bs)])
    return out, 1000 * (time.perf_counter() - t0) / max(len(x), 1)


def pgd20(model: Model, x, y, threat, gen, bs):
    return torch.cat([pgd(model, x[s], y[s], threat=threat, steps=20, generator=gen).x_adv for s in chunks(len(x), bs)])


class Worst(Survivors):
    """Worst case per image over a sequence of attacks, each run on the images still robust, with
    the accuracy after each."""

    def __init__(self, ok: torch.Tensor) -> None:
        super().__init__(ok)
        self.after: dict[str, float] = {"clean": self.acc}

    def run(self, name: str, attack: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """``attack(idx) -> still_ok`` (bool per index) on the indices still robust."""
        self.attack_mask(name, lambda idx: ~attack(idx))
        self.after[name] = self.acc

    @property
    def acc(self) -> float:
        return self.robust.float().mean().item()


def classifier_attacks(w: Worst, model: Model, x, y, threat, gen, cfg: BenchConfig, *, robustified: bool) -> None:
    """APGD-CE, APGD-T (and on robustified images preempt's robustification-aware attack)."""
    def batched(fn):
        return lambda idx: torch.cat([~fn(x[idx[s]], y[idx[s]]).success for s in chunks(len(idx), cfg.batch)])

    if robustified:
        w.run("adaptive (undo + PGD)", batched(lambda a, b: adaptive(model, a, b, threat=threat, generator=gen)))
    w.run("apgd-ce", batched(lambda a, b: apgd(model, a, b, threat=threat, loss="ce", generator=gen)))
    w.run(f"apgd-t ({cfg.apgd_targets} targets)", batched(
        lambda a, b: apgd_targeted(model, a, b, threat=threat, n_targets=cfg.apgd_targets, generator=gen)))


def card_train_s(card: Mapping[str, Any]) -> float | None:
    """Training wall time of a card, the pseudo-labeller's included (it is part of the method)."""
    from ..models.registry import bundled

    t = (card.get("training") or {}).get("wall_time_s")
    if t is None:
        return None
    labeller = bundled().get((card.get("pseudo_labels") or {}).get("labeller", ""))
    extra = (labeller.card.get("training") or {}).get("wall_time_s", 0.0) if labeller else 0.0
    return float(t) + float(extra)
