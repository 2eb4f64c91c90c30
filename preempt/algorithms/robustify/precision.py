"""The precision robustify's attackers run in: bfloat16 only where the device runs it natively."""
from __future__ import annotations

import functools
import os
from typing import Protocol

import torch


class _AsksPrecision(Protocol):
    @property
    def loop_precision(self) -> str: ...

FORCE_FLOAT32 = "PREEMPT_FORCE_FLOAT32"  # set to 1: never bfloat16 (emulates a CPU without it, e.g. for benchmarks)


def bfloat16_native(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 matrix maths natively: a CUDA GPU of compute capability 8 or more (Ampere
    on), or a CPU with AVX-512 BF16 or AMX (read from /proc/cpuinfo's flags, so Linux only).  Elsewhere autocast to
    bfloat16 would emulate it, slower than float32.  ``PREEMPT_FORCE_FLOAT32=1`` in the environment: never."""
    if os.environ.get(FORCE_FLOAT32, "").strip() not in ("", "0"):
        return False
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    return device.type == "cpu" and bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def precision_used(cfg: _AsksPrecision, device: torch.device | str) -> str:
    """The precision robustify's attackers actually run in on ``device``: ``bfloat16`` only where it was asked
    for (``loop_precision``) and is native; the checks and the final verdict always run in float32."""
    dev = torch.device(device)
    return "bfloat16" if cfg.loop_precision == "bfloat16" and bfloat16_native(dev) else "float32"


def loop_autocast(precision: str, device: torch.device) -> torch.autocast:
    """The autocast context of robustify's attackers (``loop_precision``): bfloat16 where native, else off."""
    on = precision == "bfloat16" and bfloat16_native(device)
    return torch.autocast(device.type if device.type in ("cpu", "cuda") else "cpu", dtype=torch.bfloat16, enabled=on)
