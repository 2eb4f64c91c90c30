"""Per-image bookkeeping of one robustify run."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from .results import ImageResult

if TYPE_CHECKING:
    pass


class Ledger:
    """Per-image bookkeeping of one robustify call: the photo kept (the last one checked, or with
    ``recheck="final"`` the settled one, its first verified photo in ``first``), whether it is verified, outer
    steps, passes, last loss, seconds, upload outcomes, shrink scale."""

    def __init__(self, x_o: torch.Tensor, first_passes: int, t0: float) -> None:
        n, dev = len(x_o), x_o.device
        self.x_o, self.t0 = x_o, t0
        self.final = x_o.clone()
        self.done = torch.zeros(n, dtype=torch.bool, device=dev)
        self.robust = torch.zeros(n, dtype=torch.bool, device=dev)
        self.verified_at = torch.full((n,), -1, dtype=torch.long, device=dev)  # outer step of the first pass (settle)
        self.ever_survived = torch.zeros(n, dtype=torch.bool, device=dev)  # some step's inner attack failed (give_up)
        self.anchor = torch.empty(0)  # variable of each first verified photo (settle; made at the first pass)
        self.steps = torch.zeros(n, dtype=torch.long)
        self.passes = torch.full((n,), first_passes, dtype=torch.long)
        self.loss = torch.full((n,), float("nan"))
        self.seconds = torch.zeros(n)
        self.scale = torch.ones(n)
        self.uploads: list[dict] = [{} for _ in range(n)]
        self.first: torch.Tensor | None = None  # recheck="final": the first verified photo behind each settled one
        self.has_first = torch.zeros(n, dtype=torch.bool, device=dev)

    def pending(self) -> torch.Tensor:
        return (~self.done).nonzero().squeeze(1)

    def stepped(self, idx: torch.Tensor, k: int, passes: int, loss: torch.Tensor) -> None:
        i = idx.cpu()
        self.passes[i] += passes
        self.steps[i] = k
        self.loss[i] = loss.cpu()

    def checked(self, idx: torch.Tensor, q: torch.Tensor, ok: torch.Tensor, passes: int, det: list[dict],
                k: int = 0, settle: int = 0, v: torch.Tensor | None = None) -> torch.Tensor:
        """The check's verdict on the photos ``q`` (variables ``v``) of images ``idx`` at outer step
        ``k``.  A first pass makes an image final, or with ``settle`` > 0 starts its extra steps (its
        photo and variable kept meanwhile, the variable in ``anchor``); a second check (after them)
        is final whatever it says, and its photo replaces the first one only if it passed too.
        Returns the images whose second check failed (their variable is ``anchor``'s again)."""
        self.passes[idx.cpu()] += int(round(passes / max(len(idx), 1)))
        second = self.verified_at[idx] >= 0
        first = ~second & ok
        if settle and v is not None and first.any():
            if not self.anchor.numel():
                self.anchor = v.new_zeros((len(self.final), *v.shape[1:]))
            self.anchor[idx[first]] = v[first]
        keep = ~second | ok  # a failed second check keeps the verified first photo
        self.final[idx[keep]] = q[keep]
        self.robust[idx] |= ok
        for j, i in enumerate(idx.tolist()):
            if keep[j]:
                self.uploads[i] = det[j]
        fin = idx[second | (ok & (settle == 0))]
        self.verified_at[idx[first]] = k
        self.done[fin] = True
        self.finish(fin)
        return idx[second & ~ok]

    def finish(self, idx: torch.Tensor) -> None:
        self.seconds[idx.cpu()] = time.perf_counter() - self.t0

    def settled(self, idx: torch.Tensor, q: torch.Tensor) -> None:
        """Images ``idx`` took their settle steps and are done, as the photos ``q``, without a second check (the
        final verdict judges them, the first verified photo kept in ``first`` in case it breaks them)."""
        if self.first is None:
            self.first = torch.zeros_like(self.final)
        self.first[idx] = self.final[idx]
        self.has_first[idx] = True
        self.final[idx] = q
        self.done[idx] = True
        self.finish(idx)

    def unverified(self, idx: torch.Tensor, q: torch.Tensor) -> None:
        """Images ``idx`` are done without a pass, written as the photos ``q`` (their best iterates)."""
        self.final[idx] = q
        self.done[idx] = True
        self.finish(idx)

    def shrunk(self, idx: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, passes: int) -> None:
        self.final[idx], self.scale[idx.cpu()] = q, scale.cpu()
        self.passes[idx.cpu()] += passes
        self.finish(idx)

    def images(self, y: torch.Tensor, delta: float) -> list[ImageResult]:
        """The images' results, their change not measured yet (robustify measures the photos it keeps, once)."""
        nan = float("nan")
        return [ImageResult(robust=bool(self.robust[i]), label=int(y[i]), loss=float(self.loss[i]),
                            steps=int(self.steps[i]), passes=int(self.passes[i]), linf=nan, l2=nan, psnr=nan, ssim=nan,
                            scale=float(self.scale[i]), seconds=float(self.seconds[i]), uploads=self.uploads[i], delta=delta)
                for i in range(len(self.final))]
