"""What robustify returns: one :class:`ImageResult` per photo in a :class:`RobustifyResult`."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    pass




@dataclass
class ImageResult:
    """What robustify reports for one image."""

    robust: bool
    label: int
    loss: float
    steps: int
    passes: int
    linf: float
    l2: float
    psnr: float
    ssim: float       # luma SSIM of the result against the original
    scale: float      # fraction of the verified change kept (goal least-visible; else 1)
    seconds: float
    delta: float = float("nan")  # the budget this result was made with (δ escalation raises it per image)
    uploads: dict = field(default_factory=dict)  # --survive: per service transform, "ok" or what broke it
    checked: bool = False  # the loop's own check passed (what robustify claimed before its final verdict; with
                           # recheck="final" it passed the first verified photo, the final verdict the one written)
    final: str = ""   # the final verdict on a checked photo: "held", or the attack that broke it; "" not judged
    final_seconds: float = 0.0  # this photo's share of the final verdict's time (counted in seconds too)
    final_margin: float | None = None  # the lowest margin z_y − max_{j≠y} z_j (logits) the final verdict's attacks
                                       # reached on this photo (Final.slack asks at least that much); None: not judged

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RobustifyResult:
    x: torch.Tensor  # (N,C,H,W) float on the 8-bit grid
    images: list[ImageResult]
    config: dict = field(default_factory=dict)
    # recheck="final": the first verified photo behind each settled one (``first``), for the images ``has_first``
    # marks; the final verdict judges it where it breaks the settled photo (robustify's drivers)
    first: torch.Tensor | None = field(default=None, repr=False)
    has_first: torch.Tensor | None = field(default=None, repr=False)

    @property
    def robust(self) -> torch.Tensor:
        return torch.tensor([r.robust for r in self.images])
