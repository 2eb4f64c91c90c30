"""Network architectures known to preempt, built by name from a model card."""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

_ARCHS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    def deco(fn):
        _ARCHS[name] = fn
        return fn

    return deco


def build(arch: str, **kwargs: Any) -> nn.Module:
    try:
        return _ARCHS[arch](**kwargs)
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(_ARCHS)}") from None


def names() -> list[str]:
    return sorted(_ARCHS)


@register("cnn")
def cnn(*, in_channels: int = 1, num_classes: int = 10, width: int = 32, input_size: int = 28) -> nn.Module:
    """A small all-convolutional CNN: 3 conv layers (2 strided) + 2 linear layers.

    At width 32 on 28×28 inputs it has ~0.4M parameters and trains an epoch of Fashion-MNIST
    in well under a minute on 2 CPU cores.
    """
    w = width
    feat = input_size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, w, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(2 * w * feat * feat, 4 * w), nn.ReLU(inplace=True),
        nn.Linear(4 * w, num_classes),
    )


@register("cnn-bn")
def cnn_bn(*, in_channels: int = 1, num_classes: int = 10, width: int = 32, input_size: int = 28) -> nn.Module:
    """The ``cnn`` with BatchNorm after each convolution (for the BatchNorm-mode measurement)."""
    w = width
    feat = input_size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
        nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
        nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(2 * w * feat * feat, 4 * w), nn.ReLU(inplace=True),
        nn.Linear(4 * w, num_classes),
    )


@register("mlp")
def mlp(*, in_channels: int = 1, num_classes: int = 10, width: int = 64, input_size: int = 8) -> nn.Module:
    """A tiny MLP, used by the tests."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * input_size * input_size, width), nn.ReLU(),
        nn.Linear(width, num_classes),
    )


@register("efficientnet-lite0")
def efficientnet_lite0(*, num_classes: int = 1000) -> nn.Module:
    """EfficientNet-Lite0 for 224×224 RGB ImageNet (see :mod:`preempt.models.efficientnet`)."""
    from .efficientnet import EfficientNetLite0

    return EfficientNetLite0(num_classes)
