"""Network architectures known to preempt, built by name from a model card."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import UsageError

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
        raise UsageError(f"unknown architecture {arch!r}; known: {sorted(_ARCHS)}") from None


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


def _efficientnet_lite(variant: int, size: int) -> None:
    def build_lite(*, num_classes: int = 1000) -> nn.Module:
        from .efficientnet import EfficientNetLite

        return EfficientNetLite(variant, num_classes)

    build_lite.__doc__ = (f"EfficientNet-Lite{variant} for {size}×{size} RGB ImageNet (see :mod:`preempt.models.efficientnet`).")
    register(f"efficientnet-lite{variant}")(build_lite)


for _variant, _size in ((0, 224), (1, 240), (2, 260)):
    _efficientnet_lite(_variant, _size)


# -- networks of the defenses measured beside preemptive robustification (preempt.defenses) ----------

@register("magnet-ae")
def magnet_ae(*, in_channels: int = 1, width: int = 3) -> nn.Module:
    """MagNet's MNIST auto-encoder (Meng & Chen 2017, Table 1, "Detector I & Reformer"): two 3×3
    sigmoid convolutions, average pooling, one, upsampling, one, and a 3×3 sigmoid convolution back
    to the image — a few hundred parameters, outputs in [0, 1]."""
    w = width
    return nn.Sequential(
        nn.Conv2d(in_channels, w, 3, padding=1), nn.Sigmoid(),
        nn.AvgPool2d(2),
        nn.Conv2d(w, w, 3, padding=1), nn.Sigmoid(),
        nn.Conv2d(w, w, 3, padding=1), nn.Sigmoid(),
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(w, w, 3, padding=1), nn.Sigmoid(),
        nn.Conv2d(w, in_channels, 3, padding=1), nn.Sigmoid(),
    )


@register("gan-generator")
def gan_generator(*, z_dim: int = 64, width: int = 256, out_shape: tuple[int, int, int] = (1, 28, 28)) -> nn.Module:
    """An MLP generator z ∈ R^z_dim → image in [0, 1] (Defense-GAN's G, kept small for CPUs)."""
    c, h, w_ = out_shape
    return nn.Sequential(
        nn.Linear(z_dim, width), nn.LeakyReLU(0.2),
        nn.Linear(width, 2 * width), nn.LeakyReLU(0.2),
        nn.Linear(2 * width, 4 * width), nn.LeakyReLU(0.2),
        nn.Linear(4 * width, c * h * w_), nn.Sigmoid(),
        nn.Unflatten(1, (c, h, w_)),
    )


@register("gan-discriminator")
def gan_discriminator(*, width: int = 256, in_shape: tuple[int, int, int] = (1, 28, 28)) -> nn.Module:
    """The MLP discriminator trained against :func:`gan_generator` (logit: real vs generated)."""
    c, h, w_ = in_shape
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(c * h * w_, 4 * width), nn.LeakyReLU(0.2), nn.Dropout(0.3),
        nn.Linear(4 * width, 2 * width), nn.LeakyReLU(0.2), nn.Dropout(0.3),
        nn.Linear(2 * width, width), nn.LeakyReLU(0.2),
        nn.Linear(width, 1),
    )
