"""The classifier wrapper: owns preprocessing so every algorithm works in pixel space.

``Classifier(net, ...)`` takes images in the photo's own [0, 1] pixel space, of any size, with
1 (grey), 3 (RGB) channels, and applies — as differentiable torch ops — colour conversion to
what the network expects, an antialiased resize to the network's input size, and mean/std
normalisation.  Gradients therefore flow back to the full-resolution photo.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# ITU-R BT.601 luma, the weights PIL uses for "L"
_LUMA = (0.299, 0.587, 0.114)


@dataclass
class Preprocessing:
    input_size: tuple[int, int]
    channels: int = 3
    mean: Sequence[float] = (0.0,)
    std: Sequence[float] = (1.0,)
    resize: str = "bilinear"  # antialiased bilinear or bicubic

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> "Preprocessing":
        p = card["preprocessing"]
        return cls(
            input_size=tuple(p["input_size"]),
            channels=int(p["channels"]),
            mean=tuple(p.get("mean", (0.0,))),
            std=tuple(p.get("std", (1.0,))),
            resize=p.get("resize", "bilinear"),
        )

    def to_card(self) -> dict[str, Any]:
        return {
            "input_size": list(self.input_size), "channels": self.channels,
            "mean": list(self.mean), "std": list(self.std), "resize": self.resize,
            "pixel_range": [0, 1],
        }


def resize(x: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Antialiased, differentiable resize of (N, C, H, W) to ``size`` (torch's, same weights as PIL).

    (We measured a separable matrix-product version against this: the same speed for a
    4000×3000 photo, forward and backward, so the plain call stays.)"""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode=mode, antialias=True, align_corners=False)


class Classifier(nn.Module):
    """A network plus its preprocessing.  ``forward(x)`` maps [0,1] images to logits.

    ``passes`` counts images forwarded (one forward(+backward) per image), which is how the
    benchmarks count classifier passes.

    Convolutional networks run in the channels-last memory layout (``channels_last=None`` picks it
    when the network has a 2-d convolution): on CPU that made a forward-and-backward pass of the
    bundled CNN about 1.4× faster (oneDNN's NHWC kernels), with the same logits up to float
    rounding.  Weights are saved contiguous whatever the layout.
    """

    def __init__(self, net: nn.Module, pre: Preprocessing, *, classes: Sequence[str] | None = None,
                 card: dict[str, Any] | None = None, channels_last: bool | None = None) -> None:
        super().__init__()
        if channels_last is None:
            channels_last = any(isinstance(m, nn.Conv2d) for m in net.modules())
        self.channels_last = bool(channels_last)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        self.pre = pre
        self.classes = list(classes) if classes is not None else None
        self.card = card or {}
        c = pre.channels
        self.register_buffer("mean", torch.tensor(pre.mean, dtype=torch.float32).view(1, -1, 1, 1).expand(1, c, 1, 1).clone(), persistent=False)
        self.register_buffer("std", torch.tensor(pre.std, dtype=torch.float32).view(1, -1, 1, 1).expand(1, c, 1, 1).clone(), persistent=False)
        self.passes = 0

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
        x = resize(x, tuple(self.pre.input_size), self.pre.resize)
        c = x.shape[1]
        want = self.pre.channels
        if c != want:
            if want == 1 and c == 3:
                w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
                x = (x * w).sum(1, keepdim=True)
            elif want == 3 and c == 1:
                x = x.expand(-1, 3, -1, -1)
            else:
                raise ValueError(f"cannot feed a {c}-channel image to a {want}-channel model")
        return (x - self.mean) / self.std

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
