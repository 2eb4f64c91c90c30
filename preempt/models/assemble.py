"""Building a :class:`~preempt.models.wrapper.Classifier` from a card: the architecture (preempt's
or ``torchvision:NAME``), its weights, the card's preprocessing and classes, with one-line errors.
Used by every model source (:mod:`.registry`, :mod:`.byo`), below both of them."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .architectures import build
from .files import ModelError
from .wrapper import Classifier, Preprocessing


def torchvision_module():
    try:
        import torchvision
    except ImportError:
        raise ModelError("torchvision:… models need torchvision: pip install torchvision") from None
    return torchvision


def known_torchvision(name: str):
    tv = torchvision_module()
    if name not in tv.models.list_models():
        raise ModelError(f"torchvision:{name}: torchvision {tv.__version__} has no such model "
                         f"(e.g. {', '.join(tv.models.list_models()[:4])}, …)")
    return tv


def torchvision_net(name: str, **kwargs: Any) -> nn.Module:
    return known_torchvision(name).models.get_model(name, weights=None, **kwargs)


def with_preprocessing(card: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The card with preprocessing keys replaced by ``overrides`` (command-line flags)."""
    if not overrides:
        return card
    pre = dict(card.get("preprocessing") or {})
    pre.update({k: v for k, v in overrides.items() if v is not None})
    return dict(card, preprocessing=pre)


def classifier(net: torch.nn.Module, card: dict[str, Any], where: str) -> Classifier:
    """Wrap ``net`` with the card's preprocessing and classes; one-line errors naming ``where``."""
    try:
        pre = Preprocessing.from_card(card)
    except KeyError as e:
        raise ModelError(f"{where}: the card has no preprocessing {e} (input size, colour, mean/std)") from e
    except (TypeError, ValueError) as e:
        raise ModelError(f"{where}: the card's preprocessing is wrong: {e}") from e
    classes = card.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise ModelError(f"{where}: the card's classes must be a list of names")
    return Classifier(net, pre, classes=classes, card=card).eval()


def from_card(card: dict[str, Any], state: dict[str, torch.Tensor] | None = None, where: str = "model card") -> Classifier:
    """Build the card's architecture (``arch``: preempt's or ``torchvision:NAME``) and load ``state``."""
    arch = card.get("arch")
    if not isinstance(arch, str):
        raise ModelError(f"{where}: the card names no architecture ('arch')")
    try:
        if arch.startswith("torchvision:"):
            net = torchvision_net(arch.split(":", 1)[1], **card.get("arch_kwargs", {}))
        else:
            net = build(arch, **card.get("arch_kwargs", {}))
    except (TypeError, ValueError) as e:
        raise ModelError(f"{where}: {e}") from e
    if state is not None:
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise ModelError(f"{where}: weights do not fit architecture {arch!r}: {str(e).splitlines()[0]}") from e
    return classifier(net, card, where)
