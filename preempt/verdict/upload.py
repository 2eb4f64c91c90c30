"""What a service does to an upload: JPEG re-encoding and resizing, real and differentiable.

A photo posted to a service is usually resized (long side 1080 or 2048 px) and re-encoded as
JPEG (quality 70–95, 4:2:0 chroma).  Robustness that holds for the PNG on disk can vanish there,
so preempt models those transforms in two ways:

* **real** — Pillow's own codec and resampler, on 8-bit pixels, exactly what a Python service
  would run: what ``preempt verify --reencode`` judges with;
* **approx** — the same operations as differentiable torch ops (:func:`jpeg_approx`: BT.601
  YCbCr, 4:2:0 averaging, 8×8 orthonormal DCT, the IJG quantisation tables scaled by quality,
  Shin & Song's cubic soft rounding ``r(x) = round(x) + (x − round(x))³``, triangle chroma
  upsampling as libjpeg's decoder does; antialiased bicubic resize, which is what Pillow's
  BICUBIC computes).

:meth:`Chain.bpda` joins them (Athalye, Carlini & Wagner, "Obfuscated Gradients Give a False
Sense of Security", ICML 2018): the forward value is the real codec's, the gradient the
approximation's.  Attacks and robustify's expectation over transformations use it, so every
label they see is the one the real codec produces.

Spec syntax (``--survive`` / ``--reencode``): comma-separated transforms, each a ``+``-chain of
ops; ``jpeg:Q`` or ``jpeg:Q1-Q2`` (a range: robustify samples it, verify tests both ends and the
middle), ``resize:N`` (long side at most N px; smaller photos pass unchanged) or ``resize:P%``;
a bare number repeats the previous op (``resize:1080,2048``).  ``worst`` is the preset
``jpeg:95,jpeg:85,jpeg:75,jpeg:60,resize:2048+jpeg:85,resize:1080+jpeg:85,jpeg:90+jpeg:75``.

Example::

    from preempt.verdict.upload import parse
    chains = parse("resize:1080+jpeg:85")
    x_service = chains[0].real(x)          # what the classifier behind the service sees
"""
from __future__ import annotations

import io
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import UsageError
from ..models.protocol import Model

__all__ = ["Op", "Chain", "parse", "WORST", "jpeg_real", "jpeg_approx", "resize_real", "resize_approx",
           "Through", "attack_uploads"]

WORST = "jpeg:95,jpeg:85,jpeg:75,jpeg:60,resize:2048+jpeg:85,resize:1080+jpeg:85,jpeg:90+jpeg:75"

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


@dataclass(frozen=True)
class Op:
    """One service operation: ``jpeg`` (quality ``lo``..``hi``) or ``resize`` (long side ``lo`` px,
    or the fraction ``lo`` of the size when ``percent``)."""

    kind: str
    lo: float
    hi: float
    percent: bool = False

    def __str__(self) -> str:
        if self.kind == "jpeg":
            return f"jpeg:{self.lo:g}" if self.lo == self.hi else f"jpeg:{self.lo:g}-{self.hi:g}"
        return f"resize:{self.lo * 100:g}%" if self.percent else f"resize:{self.lo:g}"

    def concrete(self) -> list[Op]:
        """Fixed settings that stand for this op in a verification: a quality range's ends and middle."""
        if self.lo == self.hi:
            return [self]
        mid = float(round((self.lo + self.hi) / 2))
        return [Op(self.kind, v, v, self.percent) for v in sorted({self.lo, mid, self.hi})]

    def sample(self, gen: torch.Generator | None = None) -> Op:
        if self.lo == self.hi:
            return self
        v = float(torch.randint(int(self.lo), int(self.hi) + 1, (1,), generator=gen,
                                device=gen.device if gen is not None else None).item())
        return Op(self.kind, v, v, self.percent)

    def _hw(self, x: torch.Tensor) -> tuple[int, int]:
        h, w = x.shape[-2:]
        return resized_hw(h, w, fraction=self.lo) if self.percent else resized_hw(h, w, long_side=self.lo)

    def real(self, x: torch.Tensor) -> torch.Tensor:
        return jpeg_real(x, int(self.lo)) if self.kind == "jpeg" else resize_real(x, self._hw(x))

    def approx(self, x: torch.Tensor) -> torch.Tensor:
        return jpeg_approx(x, int(self.lo)) if self.kind == "jpeg" else resize_approx(x, self._hw(x))

    def changes(self, hw: tuple[int, int]) -> bool:
        """False where the op leaves a photo of this size as it is (a resize that would not shrink it)."""
        if self.kind == "jpeg":
            return True
        h, w = hw
        return (resized_hw(h, w, fraction=self.lo) if self.percent else resized_hw(h, w, long_side=self.lo)) != (h, w)


@dataclass(frozen=True)
class Chain:
    """Operations applied in order, e.g. resize to 1080 px then JPEG at quality 85."""

    ops: tuple[Op, ...]

    def __str__(self) -> str:
        return "+".join(map(str, self.ops))

    def real(self, x: torch.Tensor) -> torch.Tensor:
        """What the service's real codec makes of 8-bit images x."""
        x = torch.round(x.detach().clamp(0, 1) * 255) / 255
        for op in self.ops:
            x = op.real(x)
        return x

    def approx(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            x = op.approx(x)
        return x

    def bpda(self, x: torch.Tensor) -> torch.Tensor:
        """Forward: the real codec; backward: the differentiable approximation."""
        if not x.requires_grad:
            return self.real(x)
        a = self.approx(x)
        return a + (self.real(x) - a).detach()

    def concrete(self) -> list[Chain]:
        out: list[Chain] = [Chain(())]
        for op in self.ops:
            out = [Chain((*c.ops, o)) for c in out for o in op.concrete()]
        return out

    def sample(self, gen: torch.Generator | None = None) -> Chain:
        return Chain(tuple(op.sample(gen) for op in self.ops))

    def for_size(self, hw: tuple[int, int]) -> Chain:
        """The chain without the ops that would leave a photo of this size unchanged."""
        return Chain(tuple(op for op in self.ops if op.changes(hw)))

    @property
    def max_quality(self) -> float | None:
        qs = [op.hi for op in self.ops if op.kind == "jpeg"]
        return max(qs) if qs else None


_OP = re.compile(r"^(jpeg|jpg|resize):(.+)$")


def _parse_op(kind: str, arg: str, spec: str) -> Op:
    bad = ValueError(f"{spec!r}: cannot read {kind}:{arg} (jpeg:Q, jpeg:Q1-Q2 with 1 <= Q <= 100, "
                     "resize:N px or resize:P%)")
    if kind in ("jpeg", "jpg"):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", arg)
        if not m:
            raise bad
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if not (1 <= lo <= hi <= 100):
            raise bad
        return Op("jpeg", float(lo), float(hi))
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(%?)", arg)
    if not m:
        raise bad
    v = float(m.group(1))
    if m.group(2):
        if not 0 < v <= 100:
            raise bad
        return Op("resize", v / 100, v / 100, percent=True)
    if v < 8:
        raise bad
    return Op("resize", v, v)


def parse(spec: str | None) -> list[Chain]:
    """``"jpeg:75-95,resize:1080,2048"`` → [jpeg:75-95, resize:1080, resize:2048]; ``worst`` → the preset."""
    if spec is None or not spec.strip():
        return []
    chains: list[Chain] = []
    last_kind = None
    for item in spec.replace(" ", "").split(","):
        if item == "worst":
            chains += parse(WORST)
            continue
        ops = []
        for part in item.split("+"):
            m = _OP.match(part)
            if m:
                kind, arg = m.group(1), m.group(2)
            elif re.fullmatch(r"\d+(?:\.\d+)?%?(?:-\d+)?", part) and last_kind and len(item.split("+")) == 1:
                kind, arg = last_kind, part
            else:
                raise UsageError(f"{spec!r}: cannot read {part!r}; write e.g. jpeg:85, jpeg:75-95, resize:1080, "
                                 "resize:50%, resize:1080+jpeg:85, or worst")
            ops.append(_parse_op(kind, arg, spec))
            last_kind = kind
        chains.append(Chain(tuple(ops)))
    return chains


def service_spec(reencode: str | None, resize: str | None) -> str | None:
    """verify's ``--reencode`` and ``--resize`` as one spec: each resize, then each re-encode
    (``--resize 1080 --reencode jpeg:85`` → ``resize:1080+jpeg:85``)."""
    codecs = parse(reencode)
    sizes = parse(",".join(f"resize:{v}" for v in resize.replace(" ", "").split(",") if v)) if resize else []
    if not sizes:
        return reencode or None
    if not codecs:
        return ",".join(map(str, sizes))
    return ",".join(f"{s}+{c}" for s in sizes for c in codecs)


def concrete(chains: list[Chain], hw: tuple[int, int]) -> list[Chain]:
    """The fixed chains that verify a photo of size ``hw``: ranges expanded, no-op resizes dropped,
    duplicates and the identity removed (the file itself is judged separately)."""
    out: list[Chain] = []
    for c in chains:
        for k in c.concrete():
            k = k.for_size(hw)
            if k.ops and k not in out:
                out.append(k)
    return out


class Through:
    """``model ∘ chain``: the classifier behind a service that applies ``chain`` to what it
    receives (real codec forward, approximation backward).  Works with every attack."""

    def __init__(self, model: Model, chain: Chain) -> None:
        self.model, self.chain = model, chain
        self.pre, self.classes, self.card = model.pre, model.classes, model.card
        self.differentiable = True

    @property
    def name(self) -> str:
        return f"{self.model.name}∘{self.chain}"

    @property
    def passes(self) -> int:
        return self.model.passes

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.chain.bpda(x))

    @torch.inference_mode()
    def predict(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        return self.model.predict(self.chain.real(x), batch_size)


ORDERS = ("after", "before")  # attack then service (the attacker sends the upload) | service then attack


def attack_uploads(model: Model, x: torch.Tensor, y: torch.Tensor, threat, chains: list[Chain], *, steps: int = 20,
                   restarts: int = 1, resolution: str = "auto",
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[dict], int]:
    """Attack 8-bit images ``x`` as uploads through each chain, in both orders.

    For each chain: the service's output of the file alone must keep label ``y``; PGD on the
    upload (``after``: the attacker's ε-change goes in, then the real codec) and PGD on the
    service's output (``before``: the codec, then the attacker) must not change it.
    Returns (robust mask, per image {chain: "ok" | "no attack" | "after" | "before"}, passes)."""
    from ..attacks.base import AttackResult, Survivors
    from ..attacks.projected_gradient import pgd
    from ..core.resolution import at_model_input

    robust = torch.ones(len(x), dtype=torch.bool, device=x.device)
    detail: list[dict] = [{} for _ in range(len(x))]
    passes = 0
    for chain in concrete(chains, (int(x.shape[-2]), int(x.shape[-1]))):
        name = str(chain)
        for i in range(len(x)):
            detail[i][name] = "ok"
        z = chain.real(x)
        with torch.inference_mode():
            keep = model.predict(z) == y
        passes += len(x)
        s = Survivors(keep, initially="no attack")  # what the transform alone breaks needs no attack

        def attack(order: str, chain: Chain = chain, z: torch.Tensor = z) -> Callable[[torch.Tensor], AttackResult]:
            def run(idx: torch.Tensor) -> AttackResult:
                if order == "after":  # the attacker perturbs the upload, the service transforms it
                    return pgd(Through(model, chain), x[idx], y[idx], threat=threat, steps=steps, generator=generator)
                mi = at_model_input(model, z[idx], threat, resolution)  # ... or perturbs what the service made
                return pgd(mi.model, mi.x, y[idx], threat=mi.threat, steps=steps, generator=generator)
            return run

        for order in ORDERS:
            for _ in range(restarts):
                if s.attack(order, attack(order)) is None:
                    break
        passes += sum(s.passes.values())
        for i, b in enumerate(s.broken_by):
            detail[i][name] = b or "ok"
        robust &= s.robust
    return robust, detail, passes
