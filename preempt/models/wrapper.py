"""The classifier wrapper: owns preprocessing so every algorithm works in pixel space.

``Classifier(net, ...)`` takes images in the photo's own [0, 1] pixel space, of any size, with
1 (grey), 3 (RGB) channels, and applies — as differentiable torch ops — colour conversion to
what the network expects, an antialiased resize to the network's input size, and mean/std
normalisation.  Gradients therefore flow back to the full-resolution photo.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from .card import Card, as_card
from .resample import POLICIES, Resampling, crop_box

# ITU-R BT.601 luma, the weights PIL uses for "L"
_LUMA = (0.299, 0.587, 0.114)


@dataclass
class Preprocessing:
    """How a photo becomes the network's input: geometry, colour and normalisation.

    ``policy="whole"`` resizes the whole photo to ``input_size`` (aspect ratio not kept);
    ``policy="crop"`` resizes the shorter side to ``resize_size`` and takes the centre
    ``input_size`` crop, as torchvision's ImageNet transforms do.  A card may give the
    normalisation as ``mean``/``std`` or as ``scale``/``offset`` (input = x·scale + offset)."""

    input_size: tuple[int, int]
    channels: int = 3
    mean: Sequence[float] = (0.0,)
    std: Sequence[float] = (1.0,)
    resize: str = "bilinear"  # antialiased bilinear or bicubic
    policy: str = "whole"     # whole | crop
    resize_size: int | None = None  # shorter side before the centre crop (policy crop)

    def __post_init__(self) -> None:
        size = tuple(int(v) for v in self.input_size)
        if len(size) != 2 or min(size) < 1:
            raise UsageError(f"input_size must be two positive integers, got {self.input_size!r}")
        object.__setattr__(self, "input_size", size)
        if self.channels not in (1, 3):
            raise UsageError(f"channels must be 1 or 3, got {self.channels!r}")
        if self.policy not in POLICIES:
            raise UsageError(f"resize policy {self.policy!r}: choose {' or '.join(POLICIES)}")
        if self.resize not in ("bilinear", "bicubic"):
            raise UsageError(f"resize {self.resize!r}: choose bilinear or bicubic")
        for name in ("mean", "std"):
            v = tuple(float(a) for a in getattr(self, name))
            if len(v) not in (1, self.channels) or not all(math.isfinite(a) for a in v):
                raise UsageError(f"{name} must be 1 or {self.channels} finite numbers, got {list(v)}")
            object.__setattr__(self, name, v)
        if any(a <= 0 for a in self.std):
            raise UsageError(f"std must be > 0, got {list(self.std)}")

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> Preprocessing:
        p = dict(card["preprocessing"])
        if "scale" in p:  # input = x·scale + offset  ⇔  mean = −offset/scale, std = 1/scale
            scale, offset = float(p.pop("scale")), float(p.pop("offset", 0.0))
            if scale <= 0:
                raise UsageError(f"scale must be > 0, got {scale}")
            p.setdefault("mean", [-offset / scale]), p.setdefault("std", [1 / scale])
        size = p["input_size"]
        return cls(
            input_size=(size, size) if isinstance(size, int) else tuple(size),
            channels=int(p.get("channels", 3)),
            mean=tuple(p.get("mean", (0.0,))),
            std=tuple(p.get("std", (1.0,))),
            resize=p.get("resize", "bilinear"),
            policy=p.get("policy", "whole"),
            resize_size=p.get("resize_size"),
        )

    def to_card(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "input_size": list(self.input_size), "channels": self.channels,
            "mean": list(self.mean), "std": list(self.std), "resize": self.resize,
            "policy": self.policy, "pixel_range": [0, 1],
        }
        if self.resize_size is not None:
            out["resize_size"] = self.resize_size
        return out

    def resampling(self, hw: tuple[int, int], device: str | torch.device = "cpu", scale: int = 1) -> Resampling:
        """The linear map from a photo of size ``hw`` to the network input (see :mod:`.resample`);
        ``scale`` k: to a grid k times finer over the same region (robustify's working grid)."""
        size = (self.input_size[0] * scale, self.input_size[1] * scale)
        return Resampling.of(hw, size, policy=self.policy,
                             resize_size=self.resize_size * scale if self.resize_size else None,
                             mode=self.resize, device=device)


def resize(x: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Antialiased, differentiable resize of (N, C, H, W) to ``size`` (torch's, same weights as PIL).

    (We measured a separable matrix-product version against this: the same speed for a
    4000×3000 photo, forward and backward, so the plain call stays.)"""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode=mode, antialias=True, align_corners=False)


class Classifier(nn.Module):
    """A network plus its preprocessing.  ``forward(x)`` maps [0,1] images to logits.

    Implements :class:`preempt.models.Model`, differentiably.

    ``passes`` counts images forwarded (one forward(+backward) per image), which is how the
    benchmarks count classifier passes.

    Convolutional networks run in the channels-last memory layout (``channels_last=None`` picks it
    when the network has a 2-d convolution): on CPU that made a forward-and-backward pass of the
    bundled CNN about 1.4× faster (oneDNN's NHWC kernels), with the same logits up to float
    rounding.  Weights are saved contiguous whatever the layout.
    """

    mean: torch.Tensor  # (1, C, 1, 1) buffers, registered in __init__
    std: torch.Tensor

    def __init__(self, net: nn.Module, pre: Preprocessing, *, classes: Sequence[str] | None = None,
                 card: Card | Mapping[str, Any] | None = None, channels_last: bool | None = None) -> None:
        super().__init__()
        if channels_last is None:
            channels_last = any(isinstance(m, nn.Conv2d) for m in net.modules())
        self.channels_last = bool(channels_last)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        self.pre = pre
        self.classes = list(classes) if classes is not None else None
        self.card = as_card(card)
        c = pre.channels
        def per_channel(v):
            return torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1).expand(1, c, 1, 1).clone()

        self.register_buffer("mean", per_channel(pre.mean), persistent=False)
        self.register_buffer("std", per_channel(pre.std), persistent=False)
        self.passes = 0

    differentiable = True

    @property
    def name(self) -> str:
        return self.card.get("name", type(self.net).__name__)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.shape[1] == 4:  # alpha is never seen by the classifier
            x = x[:, :3]
        # resize first: it is linear and per channel, so it commutes with the colour conversion
        # below, which then runs on the small image
        x = self.geometry(x)
        c = x.shape[1]
        want = self.pre.channels
        if c != want:
            if want == 1 and c == 3:
                w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
                x = (x * w).sum(1, keepdim=True)
            elif want == 3 and c == 1:
                x = x.expand(-1, 3, -1, -1)
            else:
                raise UsageError(f"cannot feed a {c}-channel image to a {want}-channel model")
        return (x - self.mean) / self.std

    def geometry(self, x: torch.Tensor) -> torch.Tensor:
        """Resize (and crop) to the network's input size; linear, so equal to
        ``self.pre.resampling(hw).apply(x)`` (tested), computed here with torch's resize."""
        size = self.pre.input_size
        if self.pre.policy == "whole":
            return resize(x, size, self.pre.resize)
        h, w = x.shape[-2:]
        nh, nw, top, left = crop_box((int(h), int(w)), size, self.pre.resize_size)
        return resize(x, (nh, nw), self.pre.resize)[..., top:top + size[0], left:left + size[1]]

    def at_input_size(self) -> Classifier:
        """The same network and colour/normalisation, for inputs already at the network's input
        size (no resize or crop): what attacks run on once a photo has been resampled."""
        head = Classifier(self.net, replace(self.pre, policy="whole", resize_size=None), classes=self.classes,
                          card=self.card, channels_last=self.channels_last)
        return head.eval() if not self.training else head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.passes += x.shape[0] if x.dim() == 4 else 1
        x = self.preprocess(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def predict(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Predicted labels (no gradient); a normal tensor, usable later in autograd."""
        with torch.inference_mode():
            parts = [self(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
            out = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long, device=x.device)
        return out.clone()
