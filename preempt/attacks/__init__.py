"""Attacks, one file each, all built on :mod:`preempt.core.threat`."""
from .adaptive_attack import adaptive
from .auto_pgd import apgd, apgd_targeted
from .base import AttackResult
from .fab import fab_targeted
from .projected_gradient import pgd, pgd_unrolled
from .square_search import square
from .suite import SuiteResult, run_attacks

__all__ = ["adaptive", "AttackResult", "pgd", "pgd_unrolled", "apgd", "apgd_targeted", "fab_targeted", "square", "run_attacks",
           "SuiteResult"]
