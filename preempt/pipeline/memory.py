"""How much memory a photo will need, and how much there is: so that one huge photo fails alone,
with one line, instead of taking the whole batch down with it.

Measured (benchmarks/results/photos.md, 2-core CPU): a 12 MP photo needs 1.4 GB peak RSS on the
model-resolution path and 3.1 GB on the full-resolution path; per pixel, with the process's own
~0.4 GB on top, that is about 90 and 230 bytes; with ``--survive resize:1080+jpeg:85`` (full
resolution plus the real codec's buffers) 4.8 GB, about 360 bytes.  The estimates round those up.
"""
from __future__ import annotations

import os
from pathlib import Path

BYTES_PER_PIXEL = {"model": 110, "full": 280, "survive": 400}  # survive: 12 MP took 4.8 GB
BASE = 500 * 2 ** 20  # the interpreter, torch and the model


def available() -> int | None:
    """Bytes this process may still allocate: the cgroup's limit minus its use where there is a
    limit, else the kernel's MemAvailable; None where neither can be read."""
    cands = []
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            cands.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                cands.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    env = os.environ.get("PREEMPT_MEMORY_LIMIT")  # e.g. "6G": what a user wants preempt to stay under
    if env:
        units = {"k": 2 ** 10, "m": 2 ** 20, "g": 2 ** 30}
        try:
            v = env.strip().lower()
            cands.append(int(float(v[:-1]) * units[v[-1]]) if v[-1] in units else int(v))
        except (ValueError, KeyError):
            pass
    return min(cands) if cands else None


def needed(pixels: int, path: str) -> int:
    """Estimated peak bytes to robustify one photo of ``pixels`` pixels on ``path`` (model | full | survive)."""
    return BASE + BYTES_PER_PIXEL[path] * pixels


def check_fits(pixels: int, path: str) -> str | None:
    """None if the photo fits in memory, else one line saying what it needs and what there is."""
    have = available()
    need = needed(pixels, path)
    if have is None or need <= have:
        return None
    gb = 2 ** 30
    return (f"needs about {need / gb:.1f} GB of memory to robustify ({pixels / 1e6:.0f} MP, {path}-resolution path), "
            f"{have / gb:.1f} GB available: shrink it first, or run where there is more memory")
