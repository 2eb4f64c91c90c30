"""Attacks, one file each, all built on :mod:`preempt.threat`."""
from .base import AttackResult
from .pgd import pgd, pgd_unrolled

__all__ = ["AttackResult", "pgd", "pgd_unrolled"]
