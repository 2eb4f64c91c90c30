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

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..core.codecs import jpeg_approx, jpeg_bytes, jpeg_real, quant_table, resize_approx, resize_real, resized_hw
from ..errors import UsageError
from ..models.protocol import Model

__all__ = ["Op", "Jpeg", "Resize", "Chain", "parse", "WORST", "jpeg_real", "jpeg_approx", "jpeg_bytes", "quant_table",
           "resize_real", "resize_approx", "resized_hw", "Through", "attack_uploads"]  # codecs: from preempt.core.codecs

WORST = "jpeg:95,jpeg:85,jpeg:75,jpeg:60,resize:2048+jpeg:85,resize:1080+jpeg:85,jpeg:90+jpeg:75"


@dataclass(frozen=True)
class Jpeg:
    """Re-encoding as JPEG (Pillow's libjpeg, 4:2:0 chroma) at a quality between ``lo`` and ``hi`` (1–100): robustify
    samples the range, a verification tests its ends and middle."""

    lo: int
    hi: int

    def __str__(self) -> str:
        return f"jpeg:{self.lo}" if self.lo == self.hi else f"jpeg:{self.lo}-{self.hi}"

    def concrete(self) -> list[Jpeg]:
        """Fixed qualities that stand for this range in a verification: its ends and middle."""
        return [self] if self.lo == self.hi else [Jpeg(q, q) for q in sorted({self.lo, round((self.lo + self.hi) / 2), self.hi})]

    def sample(self, gen: torch.Generator | None = None) -> Jpeg:
        if self.lo == self.hi:
            return self
        q = int(torch.randint(self.lo, self.hi + 1, (1,), generator=gen, device=gen.device if gen is not None else None).item())
        return Jpeg(q, q)

    def real(self, x: torch.Tensor) -> torch.Tensor:
        return jpeg_real(x, self.lo)

    def approx(self, x: torch.Tensor) -> torch.Tensor:
        return jpeg_approx(x, self.lo)

    def changes(self, hw: tuple[int, int]) -> bool:
        return True


@dataclass(frozen=True)
class Resize:
    """A service's downsize (Pillow's antialiased BICUBIC): the long side to at most ``long_side`` px, or the size times
    ``fraction``; never an enlargement."""

    long_side: float | None = None
    fraction: float | None = None

    def __str__(self) -> str:
        return f"resize:{self.fraction * 100:g}%" if self.fraction is not None else f"resize:{self.long_side:g}"

    def concrete(self) -> list[Resize]:
        return [self]

    def sample(self, gen: torch.Generator | None = None) -> Resize:
        return self

    def hw(self, h: int, w: int) -> tuple[int, int]:
        """The size a photo of (h, w) is resized to."""
        return resized_hw(h, w, long_side=self.long_side, fraction=self.fraction)

    def real(self, x: torch.Tensor) -> torch.Tensor:
        return resize_real(x, self.hw(*x.shape[-2:]))

    def approx(self, x: torch.Tensor) -> torch.Tensor:
        return resize_approx(x, self.hw(*x.shape[-2:]))

    def changes(self, hw: tuple[int, int]) -> bool:
        """False where the resize leaves a photo of this size as it is (it would not shrink it)."""
        return self.hw(*hw) != tuple(hw)


Op = Jpeg | Resize  # one service operation


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
        qs = [op.hi for op in self.ops if isinstance(op, Jpeg)]
        return float(max(qs)) if qs else None


_OP = re.compile(r"^(jpeg|jpg|resize):(.+)$")


def _parse_op(kind: str, arg: str, spec: str) -> Op:
    bad = UsageError(f"{spec!r}: cannot read {kind}:{arg} (jpeg:Q, jpeg:Q1-Q2 with 1 <= Q <= 100, "
                     "resize:N px or resize:P%)")
    if kind in ("jpeg", "jpg"):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", arg)
        if not m:
            raise bad
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if not (1 <= lo <= hi <= 100):
            raise bad
        return Jpeg(lo, hi)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(%?)", arg)
    if not m:
        raise bad
    v = float(m.group(1))
    if m.group(2):
        if not 0 < v <= 100:
            raise bad
        return Resize(fraction=v / 100)
    if v < 8:
        raise bad
    return Resize(long_side=v)


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
