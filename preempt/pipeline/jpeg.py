"""The output format of a robustified photo, and JPEG encoding that stays inside the δ-ball."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from ..algorithms.robustify import RobustifyConfig
from ..core.threat import ThreatModel
from ..errors import UsageError
from .photos import Photo, decode, encode, from_tensor

FORMATS = ("auto", "png", "jpeg")
JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")


def file_format(src: Path, fmt: str, cfg: RobustifyConfig) -> str:
    """png or jpeg for one input under ``--format fmt``."""
    if fmt in ("jpeg", "jpg"):
        return "jpeg"
    if fmt == "png":
        return "png"
    if fmt != "auto":
        raise UsageError(f"format {fmt!r}: choose {', '.join(FORMATS)}")
    robust_for_jpeg = any(c.max_quality is not None for c in cfg.chains())
    return "jpeg" if robust_for_jpeg and Path(src).suffix.lower() in JPEG_SUFFIXES else "png"


def jpeg_quality(quality: int | None, cfg: RobustifyConfig) -> int:
    """The JPEG quality to write: as asked, else the highest quality robustified for, else 95."""
    if quality is not None:
        return int(quality)
    qs = [c.max_quality for c in cfg.chains() if c.max_quality is not None]
    return int(max(qs)) if qs else 95


def encode_jpeg_within(photo: Photo, x_o: torch.Tensor, dball: ThreatModel, quality: int, *, strip_metadata: bool = False,
                       meta: dict | None = None, iters: int = 3) -> tuple[bytes, torch.Tensor, int, bool]:
    """A JPEG of ``photo`` whose decoded pixels stay inside ``dball`` around the original ``x_o``.

    The encoder's error is pushed back: where the decoded file leaves the ball, the input is
    moved by the overshoot (and one level more) the other way and encoded again (``iters``
    times); if that does not converge the quality is raised in steps of 5 up to 100, and there
    less of δ is spent (ℓ∞: the change clipped to 1, 2, 3, 4, 6, … levels inside the bound).  Returns (bytes, decoded
    (C,H,W) tensor, quality used, within budget).  When nothing fits, the encoding at the asked
    quality is returned with ``within = False`` — the caller reports it over budget."""
    x_r = photo.tensor(x_o.device)
    ko = torch.round(x_o * 255)
    m = math.floor(dball.eps * 255 + 1e-6)
    first = None
    kr = torch.round(x_r * 255)
    per_pixel = dball.separable  # ℓ∞: each pixel's overshoot can be pushed back on its own
    qualities = sorted({int(quality), *range(int(quality) + 5, 101, 5), 100})
    margins = [g for g in (1, 2, 3, 4, 6, 8, 12, 16) if g < m] if per_pixel else []
    # first the quality asked and higher ones with all of δ; then, at quality 100, less of δ
    for q, margin in [(q, 0) for q in qualities] + [(100, g) for g in margins]:
        k_in = ko + dball.with_eps((m - margin) / 255).restore_budget(kr - ko, lambda: kr - ko) if per_pixel else kr
        for _ in range(iters):
            data = encode(from_tensor(k_in / 255, photo), "jpeg", quality=q, strip_metadata=strip_metadata, meta=meta)
            xs = decode(data).tensor(x_o.device)
            if first is None:
                first = (data, xs, q)
            if float(dball.distance(xs[None], x_o[None])[0]) <= dball.eps + 1e-6:
                return data, xs, q, True
            # the encoder's overshoot, in whole levels, pushed back with one level to spare
            ks = torch.round(xs * 255)
            if per_pixel:  # the part of the change outside the ball
                d = ks - ko
                over = d - dball.restore_budget(d.clone(), lambda: d)  # noqa: B023 (called at once)
            else:
                over = ks - torch.round(dball.project(xs[None], x_o[None])[0] * 255)
            k_in = (k_in - over - torch.sign(over)).clamp(0, 255)
    assert first is not None
    return first[0], first[1], first[2], False


