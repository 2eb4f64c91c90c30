"""Attacks, one file each, all built on :mod:`preempt.threat`."""
from .adaptive import adaptive
from .apgd import apgd, apgd_targeted
from .base import AttackResult
from .fab import fab_targeted
from .pgd import pgd, pgd_unrolled
from .square import square
from .suite import SUITES, SuiteResult, run_suite

__all__ = ["adaptive", "AttackResult", "pgd", "pgd_unrolled", "apgd", "apgd_targeted", "fab_targeted", "square", "run_suite",
           "SuiteResult", "SUITES"]
