"""Bring your own model: torchvision architectures and TorchScript files.

* ``torchvision:NAME`` — ``torchvision.models.get_model(NAME)``.  With a weights file (a
  state_dict, read with ``weights_only=True``, or safetensors) the weights are yours; without one,
  torchvision's own pretrained weights are taken from torch's cache (``~/.cache/torch/hub``),
  downloaded only if torchvision can reach its server.  Preprocessing and class names default to
  those torchvision publishes for the architecture's pretrained weights (resize the shorter side,
  centre crop, ImageNet mean/std); a card or flags override them.
* a TorchScript file — ``torch.jit.load``.  It carries no preprocessing, so a card beside it
  (``NAME.json``/``NAME.toml``), ``--card`` or the preprocessing flags must give at least the
  input size.  Like any model you run, a TorchScript file executes its own code: load only
  files you trust.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .assemble import classifier, from_card, known_torchvision, torchvision_module, with_preprocessing
from .files import ModelError, card_beside, read_card, read_state
from .wrapper import Classifier


def torchvision_card(name: str) -> dict[str, Any]:
    """Preprocessing and classes that torchvision publishes for ``name``'s default weights."""
    tv = known_torchvision(name)
    card: dict[str, Any] = {"name": f"torchvision:{name}", "arch": f"torchvision:{name}",
                            "source": {"torchvision": tv.__version__}}
    try:
        w = tv.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return card
    t = w.transforms()
    crop = list(getattr(t, "crop_size", [224]))
    resize = list(getattr(t, "resize_size", [256]))
    interp = str(getattr(t, "interpolation", "bilinear")).lower()
    card["preprocessing"] = {
        "input_size": crop * 2 if len(crop) == 1 else crop, "channels": 3,
        "mean": list(getattr(t, "mean", [0.485, 0.456, 0.406])), "std": list(getattr(t, "std", [0.229, 0.224, 0.225])),
        "resize": "bicubic" if "bicubic" in interp else "bilinear", "policy": "crop", "resize_size": resize[0],
    }
    card["classes"] = list(w.meta.get("categories") or []) or None
    card["source"]["weights"] = str(w)
    card["threat_model"] = {"norm": "linf", "eps": 2 / 255, "delta": 8 / 255}
    return card


def _pretrained_state(name: str) -> dict[str, torch.Tensor]:
    tv = torchvision_module()
    try:
        w = tv.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        raise ModelError(f"torchvision:{name}: torchvision has no pretrained weights for it; pass --weights FILE") from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(w.url).name
    try:
        return w.get_state_dict(progress=False, check_hash=True)
    except Exception as e:
        raise ModelError(f"torchvision:{name}: its pretrained weights are not in torch's cache ({cached}) and could not "
                         f"be downloaded ({type(e).__name__}); pass --weights FILE (a state_dict)") from e


def load_torchvision(name: str, *, weights: str | Path | None = None, card: dict[str, Any] | None = None,
                     preprocessing: dict[str, Any] | None = None) -> Classifier:

    base = torchvision_card(name)
    c = {**base, **(card or {})}
    if weights is None:
        state = _pretrained_state(name)
        where = f"torchvision:{name}"
    else:
        state = read_state(Path(weights))
        where = str(weights)
        c["source"] = {**base.get("source", {}), "weights": str(weights)}
        if card is None and "classes" in base:
            # your weights, torchvision's class list: only if the head has as many outputs
            out = [v for k, v in state.items() if k.endswith(".weight") and v.dim() == 2]
            if out and out[-1].shape[0] != len(base["classes"] or []):
                c["classes"] = None
                c["arch_kwargs"] = {"num_classes": int(out[-1].shape[0])}
    c = with_preprocessing(c, preprocessing)
    if "preprocessing" not in c:
        raise ModelError(f"{where}: torchvision publishes no preprocessing for {name}; give --card or --input-size")
    return from_card(c, state, where=where)


def load_torchscript(path: Path, *, card: dict[str, Any] | None = None,
                     preprocessing: dict[str, Any] | None = None) -> Classifier:

    if card is None:
        cp = card_beside(path)
        card = read_card(cp) if cp else {}
    c = with_preprocessing(dict(card), preprocessing)
    if "input_size" not in (c.get("preprocessing") or {}):
        raise ModelError(f"{path}: a TorchScript file says nothing about its input: give a card {path.stem}.json "
                         "beside it (or --card) or --input-size")
    try:
        net = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        raise ModelError(f"{path}: torch.jit.load failed ({type(e).__name__}: {str(e).splitlines()[0][:160]})") from e
    c.setdefault("name", path.stem)
    c.setdefault("format", "torchscript")
    return classifier(net, c, str(path))
