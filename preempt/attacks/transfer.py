"""Transfer attacks: adversarial examples crafted on a differentiable *surrogate* model and
replayed against the target (for example a model behind onnxruntime, whose gradients we do not
have).  Distance: the threat model's; the surrogate runs PGD-20 or APGD-CE with its defaults.

Example::

    res = transfer(onnx_model, x, y, threat=Linf(0.1), surrogate=load_model(), attack="apgd-ce")
"""
from __future__ import annotations

import torch

from ..errors import UsageError
from ..models.protocol import Model
from .auto_pgd import apgd
from .base import AttackResult
from .projected_gradient import pgd


def transfer(model: Model, x: torch.Tensor, y: torch.Tensor, *, threat, surrogate, attack: str = "pgd",
             generator: torch.Generator | None = None) -> AttackResult:
    if attack == "pgd":
        r = pgd(surrogate, x, y, threat=threat, steps=20, early_stop=False, keep="last", generator=generator)
    elif attack == "apgd-ce":
        r = apgd(surrogate, x, y, threat=threat, generator=generator)
    else:
        raise UsageError(f"unknown transfer attack {attack!r}")
    fooled = model.predict(r.x_adv) != y
    return AttackResult(r.x_adv, fooled, r.passes + len(x), {"attack": f"transfer-{attack}", "threat": str(threat)})
