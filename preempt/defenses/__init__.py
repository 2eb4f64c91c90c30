"""The other defenses, measured beside preemptive robustification (``preempt bench defenses``).

* :class:`MagNet` — detector + reformer auto-encoder (Meng & Chen 2017);
* :class:`DefenseGAN` — projection onto a generator's range (Samangouei et al. 2018);
* BPDA, the attack that breaks such preprocessing, is :mod:`preempt.attacks.bpda`;
* randomized smoothing is :mod:`preempt.defenses.smoothing`; adversarial training is ``preempt train``.

Bundled defense weights live in ``weights/`` beside the classifiers, with cards whose ``kind``
is ``"defense"``; :func:`load_defense` builds one around the classifier its card names.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..models import ModelError, build, load_model
from ..models.files import read_state, sha256
from ..models.registry import bundled_defenses
from .defensegan import DefenseGAN
from .magnet import MagNet, reconstruction_error, threshold_for_fpr

__all__ = ["MagNet", "DefenseGAN", "load_defense", "reconstruction_error", "threshold_for_fpr"]


def load_defense(name: str, *, device: str | torch.device = "cpu", **overrides: Any) -> MagNet | DefenseGAN:
    """A bundled defense by name (``fmnist-magnet``, ``fmnist-defense-gan``), around the classifier
    its card names; ``overrides`` replace card settings (``steps``/``restarts`` of Defense-GAN,
    ``detectors=("recon",)`` to use only some of MagNet's detectors)."""
    have = bundled_defenses()
    if name not in have:
        raise ModelError(f"{name}: no such defense (bundled: {', '.join(sorted(have)) or 'none'})")
    info = have[name]
    card = info.card
    if card.get("sha256") and sha256(info.path) != card["sha256"]:
        raise ModelError(f"{info.path}: sha256 does not match its card")
    net = build(card["arch"], **card.get("arch_kwargs", {}))
    net.load_state_dict(read_state(info.path))
    classifier = load_model(card["classifier"], device=device)
    net = net.to(device)
    if card["defense"] == "magnet":
        det = dict(card["detector"], **{k: v for k, v in overrides.items() if k != "detectors"})
        jsd = card.get("jsd_detector")
        return MagNet(classifier, net, threshold=det["threshold"], p=det.get("p", 1), card=card,
                      jsd={"temperature": jsd["temperature"], "threshold": jsd["threshold"]} if jsd else None,
                      detectors=overrides.get("detectors"))
    if card["defense"] == "defense-gan":
        proj = dict(card["projection"], **overrides)
        return DefenseGAN(classifier, net, z_dim=card["arch_kwargs"]["z_dim"], steps=proj["steps"],
                          restarts=proj["restarts"], lr=proj["lr"], card=card)
    raise ModelError(f"{Path(info.path)}: unknown defense {card['defense']!r}")
