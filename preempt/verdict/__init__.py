"""The verdict layer: what "robust" means.  The check robustify runs and its presets
(:mod:`.check`), the service transforms a photo must survive through the real codecs
(:mod:`.upload`).  Above :mod:`preempt.attacks` (it refers to attacks by their registered
names), below the algorithms, the pipeline and the CLI."""
from .check import CHECKS, SUITES, Check, Verdict, run_suite

__all__ = ["Check", "CHECKS", "SUITES", "Verdict", "run_suite"]
