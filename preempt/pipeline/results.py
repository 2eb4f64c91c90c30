"""What the file jobs return: one :class:`FileResult` per input, typed status and metrics."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from ..errors import PreemptError

Status = Literal["robust", "not-robust", "over-budget", "skipped", "failed"]
STATUSES: tuple[Status, ...] = ("robust", "not-robust", "over-budget", "skipped", "failed")
NOT_ROBUST: tuple[Status, ...] = ("not-robust", "over-budget")  # written, but the claim does not hold: exit 3


class NoImages(PreemptError):
    """The paths given hold no image preempt reads; str() is one line saying why."""


@dataclass
class FileResult:
    src: str
    status: Status
    dst: str | None = None
    error: str | None = None
    label: int | None = None
    label_name: str | None = None
    original: str | None = None
    metrics: dict = field(default_factory=dict)
    position: int | None = field(default=None, compare=False)  # index among the run's inputs (not in to_dict)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and v != {} and k != "position"}

    @classmethod
    def from_dict(cls, d: dict) -> FileResult:
        """The inverse of :meth:`to_dict` (a JSON report's row back to a result)."""
        return cls(**{k: d[k] for k in ("src", "status", "dst", "error", "label", "label_name", "original", "metrics")
                      if k in d})

    @property
    def breaks_claim(self) -> bool:
        """The file on disk is not known to be robust for this run: written not robust or over budget,
        or skipped (it existed) without a record that it was written robust for these settings."""
        return self.status in NOT_ROBUST or (self.status == "skipped" and not self.metrics.get("robust", False))


def in_input_order(results: list[FileResult], inputs: list | None = None) -> list[FileResult]:
    """``results`` sorted by their position among the run's inputs; with ``inputs`` (the run's input paths, in
    order) each result's ``position`` is set from them first."""
    if inputs is not None:
        order = {str(src): i for i, src in enumerate(inputs)}
        for r in results:
            r.position = order.get(r.src)
    return sorted(results, key=lambda r: (r.position is None, r.position or 0))


def label_name(classes: list[str] | None, label: int) -> str | None:
    """The class name of ``label``, where the model has names."""
    return classes[label] if classes and 0 <= label < len(classes) else None
