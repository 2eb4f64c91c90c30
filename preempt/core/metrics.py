"""Image-quality measures of a robustified photo against its original (batched, [0, 1] pixels)."""
from __future__ import annotations

import torch

_LUMA = (0.299, 0.587, 0.114)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image (inf where equal)."""
    mse = (a - b).flatten(1).pow(2).mean(1)
    return torch.where(mse > 0, 10 * torch.log10(1.0 / mse.clamp_min(1e-20)), torch.full_like(mse, float("inf")))


def _luma(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x[:, :3] * w).sum(1, keepdim=True)


def ssim(a: torch.Tensor, b: torch.Tensor, *, window: int = 11, sigma: float = 1.5, strip: int = 256) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image, on the luma channel: Gaussian window
    11 (the largest odd size that fits, for smaller images), σ 1.5, K1 0.01, K2 0.03, the mean of the
    SSIM map over valid positions (one image and one strip of rows at a time, so a 12 MP photo needs
    no photo-sized buffers)."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    side = min(a.shape[-2:]) if a.numel() else window
    if side < window:  # a thumbnail: the largest odd window that fits
        window = side if side % 2 else side - 1
    r = torch.arange(window, dtype=torch.float32, device=a.device) - (window - 1) / 2
    g = torch.exp(-r ** 2 / (2 * sigma ** 2))
    weights = (g / g.sum()).tolist()
    out = []
    for i in range(len(a)):
        x, y = _luma(a[i:i + 1]), _luma(b[i:i + 1])
        total, count = 0.0, 0
        rows = x.shape[-2] - window + 1  # valid output rows, computed in strips to bound memory
        for r0 in range(0, rows, strip):
            r1 = min(rows, r0 + strip)
            xs, ys = x[..., r0:r1 + window - 1, :], y[..., r0:r1 + window - 1, :]
            m = _ssim_map(xs, ys, weights, c1, c2)
            total += float(m.double().sum())
            count += m.numel()
        out.append(torch.tensor(total / count))
    return torch.stack(out) if out else torch.zeros(0)


def _blur(t: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """Separable Gaussian blur over the valid positions of the last two dimensions, as a sum of shifted
    slices (5× faster than two single-channel convolutions on a CPU)."""
    n = len(weights) - 1
    h, w = t.shape[-2:]
    rows = weights[0] * t[..., :h - n, :]
    for k in range(1, n + 1):
        rows = rows + weights[k] * t[..., k:h - n + k, :]
    out = weights[0] * rows[..., :w - n]
    for k in range(1, n + 1):
        out = out + weights[k] * rows[..., k:w - n + k]
    return out


def _ssim_map(x: torch.Tensor, y: torch.Tensor, weights: list[float], c1: float, c2: float) -> torch.Tensor:
    # the five local moments blurred together: one stack, one blur
    m = _blur(torch.cat([x, y, x * x, y * y, x * y], 1), weights)
    mx, my = m[:, 0], m[:, 1]
    sxx = m[:, 2] - mx * mx
    syy = m[:, 3] - my * my
    sxy = m[:, 4] - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def change(x: torch.Tensor, x_o: torch.Tensor) -> dict[str, torch.Tensor]:
    """How far each image of ``x`` moved from its original ``x_o``: ℓ∞ and ℓ2 distance, PSNR and
    SSIM, each an (N,) tensor on the CPU."""
    from .threat import L2, Linf

    return {"linf": Linf(0).distance(x, x_o).cpu(), "l2": L2(0).distance(x, x_o).cpu(),
            "psnr": psnr(x, x_o).cpu(), "ssim": ssim(x, x_o).cpu()}
