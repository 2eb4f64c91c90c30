"""Shares of a job: many processes or machines, each robustifying or verifying a deterministic part.

A share is ``K/N`` (``K`` from 0 to ``N - 1``), given with ``--shard K/N`` by any job runner (a SLURM
array's ``$SLURM_ARRAY_TASK_ID``, ``xargs``, a loop of ``ssh``), or read from ``RANK`` and
``WORLD_SIZE`` when the command is launched by ``torchrun``.  The unit a share takes is a whole
batch, planned over *every* input (from the headers, the same batches one process would run), so a
photo is robustified and verified exactly as a single run would do it, and a rerun of one share alone
finishes that share's photos.  Each share writes its own JSON (``--save-json``); :func:`merge` joins
them into the document a single run writes::

    torchrun --nproc-per-node 2 -m preempt robustify photos/ -o out/ --save-json out/run.json
    preempt merge out/run.*-of-2.json > run.json
"""
from __future__ import annotations

import os
import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from ..errors import UsageError

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    index: int  # 0 … count - 1
    count: int
    launched: bool = field(default=False, compare=False)  # read from torchrun's RANK/WORLD_SIZE, not --shard

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise UsageError(f"share {self.index}/{self.count}: K/N needs N >= 1 and 0 <= K < N")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def to_dict(self) -> dict:
        return {"index": self.index, "count": self.count}

    def takes(self, i: int) -> bool:
        return i % self.count == self.index

    def path(self, path: Path) -> Path:
        """``run.json`` → ``run.0-of-2.json``: where this share writes what one run writes to ``path``."""
        return path.with_name(f"{path.stem}.{self.index}-of-{self.count}{path.suffix}")


def parse_shard(text: str) -> Shard:
    """``"1/4"`` → Shard(1, 4)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m:
        raise UsageError(f"--shard {text!r}: write K/N, e.g. 0/4 (K from 0 to N-1)")
    return Shard(int(m.group(1)), int(m.group(2)))


def from_env(environ: dict | None = None) -> Shard | None:
    """The share torchrun (or any launcher setting ``RANK`` and ``WORLD_SIZE``) gave this process."""
    env = os.environ if environ is None else environ
    try:
        rank, world = int(env.get("RANK", "")), int(env.get("WORLD_SIZE", ""))
    except ValueError:
        return None
    return Shard(rank, world, launched=True) if world > 1 else None


def resolve(text: str | None, environ: dict | None = None) -> Shard | None:
    """``--shard`` when given, else the launcher's ``RANK``/``WORLD_SIZE``, else no sharing (one share)."""
    shard = parse_shard(text) if text else from_env(environ)
    return shard if shard is not None and shard.count > 1 else None


def local_device(device: str, environ: dict | None = None) -> str:
    """One GPU per process: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun."""
    env = os.environ if environ is None else environ
    if device == "cuda" and env.get("LOCAL_RANK", "").isdigit():
        return f"cuda:{env['LOCAL_RANK']}"
    return device


def take(items: Sequence[T], shard: Shard | None, plan: Callable[[list[T]], Iterable[list[T]]]) -> list[T]:
    """The items of ``shard``'s batches, in their order: ``plan`` batches every item (as one process
    would), and the share takes every ``count``-th batch."""
    if shard is None:
        return list(items)
    return [it for b, batch in enumerate(plan(list(items))) if shard.takes(b) for it in batch]


def batch_seed(seed: int, names: Iterable[str]) -> int:
    """A batch's own seed, from the run's seed and its files' names: its random draws do not depend on
    which batches ran before it, in this process or another share."""
    return (seed * 1_000_003 + zlib.crc32("\0".join(names).encode())) % (1 << 63)
