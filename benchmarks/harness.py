"""The benchmarks' one harness: what every result records, how it is written, and the one reference AutoAttack.

* :func:`stamp`: the command, machine, CPU flags, threads, precision and git revision, for every result;
* :func:`write` (JSON + Markdown, atomically) and :func:`append` (one JSONL row, stamped);
* :func:`reference_autoattack`: the reference AutoAttack (PyPI ``pyautoattack``, Croce & Hein 2020) on a batch,
  through any preempt model wrapper (its preprocessing included, so it attacks the photo's own pixels), with the
  attacks of its ``standard`` version or any subset of them (``attacks=("apgd-t",)``).  Every benchmark that
  judges with the reference calls this, so they all judge alike;
* :func:`read_rows`, :func:`saved_file_args` and :func:`saved_files`: the rows of a final-verdict run and, for
  scripts that judge its written files again, the files in ``--save`` with their originals in ``--folder``;
* :func:`robustify_batched`: ``preempt.robustify`` over a tensor of photos in batches, the outputs joined, timed
  and counted (the one chunked loop the scripts share).

Scripts import it as ``from harness import …`` (they run from ``benchmarks/``, or with it on ``sys.path``).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return rev + ("+changes" if dirty else "") if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_flags() -> list[str]:
    """The CPU features that decide a pass's speed and precision (Linux: from /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(set(flags) & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma"})


def stamp() -> dict[str, Any]:
    """What a result needs to be rerun and compared: command, machine, CPU flags, threads, precision, revision."""
    import torch

    from preempt.algorithms.robustify.precision import FORCE_FLOAT32, bfloat16_native

    return {"command": "python " + " ".join([Path(sys.argv[0]).name if sys.argv[0].endswith(".py") else sys.argv[0],
                                             *sys.argv[1:]]),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
            "cpu_flags": cpu_flags(), "threads": torch.get_num_threads(),
            "precision": "bfloat16 where asked" if bfloat16_native(torch.device("cpu")) else "float32",
            "force_float32": os.environ.get(FORCE_FLOAT32, "") not in ("", "0"),
            "git": _git_revision()}


def _atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write(stem: str | Path, doc: dict[str, Any], markdown: str | None = None) -> None:
    """``stem``.json (the document with :func:`stamp` under ``"stamp"``) and ``stem``.md, each written atomically."""
    stem = Path(stem)
    _atomic(stem.with_suffix(".json"), json.dumps({**doc, "stamp": doc.get("stamp") or stamp()}, indent=1) + "\n")
    if markdown is not None:
        _atomic(stem.with_suffix(".md"), markdown.rstrip() + "\n")


def append(path: str | Path, row: dict[str, Any]) -> None:
    """One result row, stamped, appended to a JSONL file (one write: rows of concurrent runs do not interleave)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps({**stamp(), **row}) + "\n")  # the row's own keys win (its precision, say)


def reference_autoattack(model, x, y, eps: float, *, norm: str = "linf", seed: int = 0,
                         attacks: Sequence[str] | None = None, batch_size: int | None = None, verbose: bool = True):
    """The reference AutoAttack on ``x`` (N, C, H, W in [0, 1]) with labels ``y``, through ``model``.

    ``attacks`` None runs its ``standard`` version (APGD-CE, APGD-T on 9 targets, FAB-T, Square, each on what the
    ones before left); a subset runs those alone (``version="custom"``).  Returns (robust: a bool tensor, x_adv),
    x_adv checked to lie in the ε-ball.  Points the model already gets wrong count as not robust, as in AutoAttack."""
    import torch
    from pyautoattack import AutoAttack

    name, dev = {"linf": "Linf", "l2": "L2"}[norm], str(x.device)
    if attacks is None:
        aa = AutoAttack(model, eps=eps, norm=name, version="standard", seed=seed, device=dev)
    else:
        aa = AutoAttack(model, attacks=list(attacks), version="custom", eps=eps, norm=name, seed=seed, device=dev)
    aa.verbose = verbose
    x_adv = aa.run_standard_evaluation(x, y, batch_size=batch_size or len(x))
    x_adv = x_adv[0] if isinstance(x_adv, tuple) else x_adv  # pyautoattack returns (x_adv, y_adv)
    d = (x_adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert bool((size <= eps + 1e-5).all()), "the reference AutoAttack left the ε-ball"
    with torch.inference_mode():
        robust = model.predict(x_adv) == y
    return robust, x_adv


@dataclass
class Batched:
    """What :func:`robustify_batched` returns: the photos written (joined), each photo's result, the wall-clock
    seconds of all the calls, and the passes robustify counted (its own count, the model-input copy's included)."""

    x: Any
    images: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passes(self) -> int:
        return sum(im.passes for im in self.images)

    @property
    def claims(self) -> list[bool]:
        return [im.robust for im in self.images]


def robustify_batched(model, x, y=None, *, batch: int, **settings) -> Batched:
    """``preempt.robustify(model, x[i:i+batch], y[i:i+batch], **settings)`` over ``x``, batch by batch, the outputs
    joined in order.  A photo's result depends on its batch (random starts are drawn for the batch at once), so
    the batch size is one of a result's settings: record it."""
    import time

    import torch

    from preempt import robustify

    outs, images, t0 = [], [], time.perf_counter()
    for i in range(0, len(x), batch):
        r = robustify(model, x[i:i + batch], None if y is None else y[i:i + batch], **settings)
        outs.append(r.x)
        images += r.images
    return Batched(torch.cat(outs), images, time.perf_counter() - t0)


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a JSONL results file ([] when there is none yet)."""
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def saved_file_args(ap, out: Path) -> None:
    """The options of a script that judges a final-verdict run's written files again: ``--rows`` (that run's
    JSONL), ``--save`` (its written files), ``--folder`` (the originals), ``--model``, ``--out``, ``--summary``."""
    ap.add_argument("--rows", type=Path, default=RESULTS / "final-verdict-settle10.jsonl")
    ap.add_argument("--save", type=Path, default=Path("runs/fv/test-256-settle10-fp32"))
    ap.add_argument("--folder", type=Path, default=Path("corpus/test-256"))
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--out", type=Path, default=out)
    ap.add_argument("--summary", action="store_true")


def saved_files(args) -> Iterator[tuple[dict[str, Any], Path, Path]]:
    """(row, written file, original) for each row of ``args.rows`` from ``args.folder`` whose written file is in
    ``args.save`` and that ``args.out`` does not hold yet (a rerun resumes)."""
    done = {(r["rows"], r["photo"]) for r in read_rows(args.out)}
    for r in read_rows(args.rows):
        f = args.save / f"{r['photo']}.png"
        if r["folder"] == args.folder.name and (args.rows.name, r["photo"]) not in done and f.exists():
            yield r, f, args.folder / f"{r['photo']}.png"
