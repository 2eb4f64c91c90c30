"""The one interface every model preempt attacks or robustifies against implements."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from .card import Card
from .wrapper import Preprocessing


@runtime_checkable
class Model(Protocol):
    """Logits from photos in their own [0, 1] pixel space, of any size.

    ``pre`` says how the photo reaches the network (input size, resize policy, colour,
    normalisation); ``classes`` names the outputs; ``card`` carries the rest of the model's
    description (threat model, training, metrics, licence); ``differentiable`` is False for
    back-ends without gradients (ONNX), which only score-based and transfer attacks can attack
    and which robustify refuses; ``passes`` counts images forwarded.

    Implemented by :class:`~preempt.models.Classifier` (bundled, torchvision, TorchScript and
    card-described models), :class:`~preempt.defenses.smoothing.Smoothed` and
    :class:`~preempt.models.onnx.OnnxClassifier`.
    """

    @property
    def pre(self) -> Preprocessing: ...

    classes: list[str] | None
    card: Card
    differentiable: bool
    passes: int

    @property
    def name(self) -> str: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def predict(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor: ...


class Logits(Protocol):
    """What a gradient attack needs: photos in [0, 1] to logits, differentiably.  Every
    :class:`Model` is one; so are a defense's pipeline (MagNet's f(AE(x))), BPDA wrappers and the
    training loop's eval-mode view.  Attacks that also ask for labels take a :class:`Model`."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...
