"""What training measures: clean and robust accuracy, robust overfitting's learning curves, the test metrics a card records."""
from __future__ import annotations

import torch

from .. import data as datasets
from ..attacks.projected_gradient import pgd
from ..models import Classifier
from .config import TrainConfig, dataset_kw


@torch.no_grad()
def accuracy(model: torch.nn.Module, x, y, bs: int = 1000) -> float:
    model.eval()
    return sum((model(x[i:i + bs]).argmax(1) == y[i:i + bs]).sum().item() for i in range(0, len(x), bs)) / max(len(x), 1)


def robust_accuracy(model: torch.nn.Module, x, y, threat, steps: int, bs: int = 500, seed: int = 0) -> float:
    model.eval()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    ok: float = 0
    for i in range(0, len(x), bs):
        ok += pgd(model, x[i:i + bs], y[i:i + bs], threat=threat, steps=steps, generator=gen).robust.sum().item()
    return ok / max(len(x), 1)


def curve_test_split(cfg: TrainConfig, dev) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The first ``curve_size`` test images, for the per-epoch learning curves (None: no test split)."""
    try:
        x, y, _ = datasets.load(cfg.dataset, "test", cfg.data, **dataset_kw(cfg))
    except datasets.DataError:
        return None
    return x[:cfg.curve_size].to(dev), y[:cfg.curve_size].to(dev)


def curves(model: torch.nn.Module, cfg: TrainConfig, threat, train: tuple[torch.Tensor, torch.Tensor],
            test: tuple[torch.Tensor, torch.Tensor] | None) -> dict:
    """``curve_size``: clean and PGD-``val_attack_steps`` accuracy on the first N training images (those trained
    on) and the first N test images, after this epoch; the attack is seeded alike every epoch."""
    if not cfg.curve_size:
        return {}
    out = {}
    for name, split in (("train", train), ("test", test)):
        if split is None:
            continue
        xs, ys = split[0][:cfg.curve_size], split[1][:cfg.curve_size]
        out[f"{name}_clean"] = accuracy(model, xs, ys)
        out[f"{name}_pgd{cfg.val_attack_steps}"] = robust_accuracy(model, xs, ys, threat, cfg.val_attack_steps)
    return out


def test_metrics(model: Classifier, cfg: TrainConfig, threat, n_attack: int = 1000) -> dict:
    """Clean accuracy on the whole test split, PGD-20 (step ε/4, random start) on its first n_attack."""
    try:
        x, y, _ = datasets.load(cfg.dataset, "test", cfg.data, **dataset_kw(cfg))
    except datasets.DataError:
        return {}
    dev = next(model.parameters()).device
    x, y = x.to(dev), y.to(dev)
    return {"clean": accuracy(model, x, y), "pgd20": robust_accuracy(model, x[:n_attack], y[:n_attack], threat, 20),
            "n_clean": len(x), "n_attack": min(n_attack, len(x)), "attack": f"PGD-20 {threat} step eps/4 random start"}
