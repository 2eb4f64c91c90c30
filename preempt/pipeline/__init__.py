"""Photos on disk: reading and writing them (photos), planning outputs, batching, and the
file-level robustify and verify jobs with their reports, on top of :mod:`preempt.core`."""
from .results import STATUSES, FileResult, NoImages, Status
from .robustify_job import robustify_files
from .verify_job import VerifyConfig, VerifyReport, verify_files

__all__ = ["FileResult", "NoImages", "Status", "STATUSES", "robustify_files", "verify_files", "VerifyConfig",
           "VerifyReport"]
