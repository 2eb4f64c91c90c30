"""Codecs as building blocks: what a service does to a photo, real (Pillow, on 8-bit pixels) and differentiable.

* **real**: Pillow's own JPEG codec (libjpeg, 4:2:0 chroma) and BICUBIC resampler, exactly what a Python service
  would run (:func:`jpeg_real`, :func:`resize_real`);
* **approx**: the same operations as differentiable torch ops (:func:`jpeg_approx`: BT.601 YCbCr, 4:2:0 averaging,
  8×8 orthonormal DCT, the IJG quantisation tables scaled by quality, Shin & Song's cubic soft rounding
  ``r(x) = round(x) + (x − round(x))³``, triangle chroma upsampling as libjpeg's decoder does;
  :func:`resize_approx`: antialiased bicubic, which is what Pillow's BICUBIC computes).

Operations, chains and their spec syntax live in :mod:`preempt.verdict.upload`."""
from __future__ import annotations

import io
import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import UsageError

__all__ = ["jpeg_approx", "jpeg_real", "jpeg_bytes", "quant_table", "resized_hw", "resize_approx", "resize_real"]

# The IJG (libjpeg) base quantisation tables, Annex K of the JPEG standard.
_LUMA_Q = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
           14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
           49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
_CHROMA_Q = [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
             47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32


def quant_table(base: list[int], quality: int) -> torch.Tensor:
    """libjpeg's ``jpeg_quality_scaling`` applied to a base table (baseline: entries 1..255)."""
    q = min(max(int(quality), 1), 100)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    t = [min(max((b * scale + 50) // 100, 1), 255) for b in base]
    return torch.tensor(t, dtype=torch.float32).view(8, 8)


@lru_cache(maxsize=8)
def _dct_matrix(device: str) -> torch.Tensor:
    n = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d.float().to(device)


def _soft_round(x: torch.Tensor) -> torch.Tensor:
    r = torch.round(x).detach()
    return r + (x - r) ** 3


def _blocks_quantise(p: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """(N,H,W) level-shifted plane, H and W multiples of 8 → the plane after DCT, quantisation,
    dequantisation and inverse DCT."""
    n, h, w = p.shape
    d = _dct_matrix(str(p.device))
    b = p.reshape(n, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)   # (N, bh, bw, 8, 8)
    c = d @ b @ d.t()
    t = table.to(p.device)
    c = _soft_round(c / t) * t
    b = d.t() @ c @ d
    return b.permute(0, 1, 3, 2, 4).reshape(n, h, w)


def _pad_to(x: torch.Tensor, m: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


def jpeg_approx(x: torch.Tensor, quality: int, *, subsampling: bool = True) -> torch.Tensor:
    """Differentiable baseline JPEG encode + decode of (N,C,H,W) images in [0, 1] (C = 1 or 3)."""
    n, c, h, w = x.shape
    v = x * 255
    lq, cq = quant_table(_LUMA_Q, quality), quant_table(_CHROMA_Q, quality)
    if c == 1:
        y = _blocks_quantise(_pad_to(v, 8)[:, 0] - 128, lq) + 128
        return (y[:, None, :h, :w] / 255).clamp(0, 1)
    r, g, b = v[:, 0], v[:, 1], v[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128
    m = 16 if subsampling else 8
    y = _blocks_quantise(_pad_to(y[:, None], m)[:, 0] - 128, lq) + 128
    chroma = _pad_to(torch.stack([cb, cr], 1), m)
    if subsampling:
        chroma = F.avg_pool2d(chroma, 2)
    hc, wc = chroma.shape[-2:]
    padded = _pad_to(chroma, 8)
    chroma = _blocks_quantise(padded.reshape(2 * n, *padded.shape[-2:]) - 128, cq) + 128
    chroma = chroma.view(n, 2, *padded.shape[-2:])[..., :hc, :wc] - 128
    if subsampling:  # libjpeg's "fancy" upsampling: the 3/4, 1/4 triangle filter
        chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    cb, cr = chroma[:, 0, :h, :w], chroma[:, 1, :h, :w]
    y = y[:, :h, :w]
    rgb = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    return (rgb / 255).clamp(0, 1)


def _to_pil(img: torch.Tensor) -> Image.Image:
    a = torch.round(img.detach().clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
    return Image.fromarray(a[0], "L") if a.shape[0] == 1 else Image.fromarray(a.transpose(1, 2, 0), "RGB")


def _from_pil(im: Image.Image, like: torch.Tensor) -> torch.Tensor:
    a = np.array(im)
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(a)).to(like.device, torch.float32).div_(255)


def jpeg_bytes(img: torch.Tensor, quality: int, *, subsampling: bool = True) -> bytes:
    """One (C,H,W) image as JPEG bytes, by Pillow (libjpeg), 4:2:0 chroma unless told otherwise."""
    buf = io.BytesIO()
    _to_pil(img).save(buf, "JPEG", quality=int(quality), subsampling=2 if subsampling else 0)
    return buf.getvalue()


def jpeg_real(x: torch.Tensor, quality: int, *, subsampling: bool = True) -> torch.Tensor:
    """Pillow's real JPEG encode + decode of (N,C,H,W) images (rounded to 8 bits first)."""
    out = [_from_pil(Image.open(io.BytesIO(jpeg_bytes(img, quality, subsampling=subsampling))).convert(
        "L" if img.shape[0] == 1 else "RGB"), img) for img in x]
    return torch.stack(out)


def resized_hw(h: int, w: int, long_side: float | None = None, fraction: float | None = None) -> tuple[int, int]:
    """The size a service resizes an (h, w) photo to: long side at most ``long_side`` px, or a fraction."""
    if fraction is not None:
        f = fraction
    elif long_side is not None:
        f = min(1.0, float(long_side) / max(h, w))
    else:
        raise UsageError("resized_hw needs long_side or fraction")
    if f >= 1.0:
        return h, w
    return max(1, round(h * f)), max(1, round(w * f))


def resize_real(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Pillow's BICUBIC resize (antialiased when shrinking) of (N,C,H,W) 8-bit images."""
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    return torch.stack([_from_pil(_to_pil(img).resize((hw[1], hw[0]), Image.Resampling.BICUBIC), img) for img in x])


def resize_approx(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Antialiased bicubic resize (torch's follows Pillow's kernel), differentiable."""
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    return F.interpolate(x, size=hw, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
