"""Attack suites: several attacks in order, each only on the points still robust, worst case per
point (the AutoAttack protocol of Croce & Hein 2020).

* ``pgd`` — PGD-20 (step ε/4, random start), ``restarts`` times (``steps`` sets its length).
* ``strong`` — PGD-20 twice, then APGD-CE and APGD-T (3 targets) at 25 iterations: the attacks of
  robustify's default check (``preempt.verdict.check``), so that ``preempt verify`` (whose default
  this is) and ``preempt robustify`` mean one thing by "robust"; the random starts are verify's own,
  and APGD runs from one start where the check runs it from two.
* ``quick`` — PGD-20, then APGD-CE.
* ``standard`` — APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5,000 queries):
  AutoAttack's "standard" version.
* ``rand`` — APGD-CE and APGD-DLR with EOT over 20 draws, for randomized models.
* ``blackbox`` — Square, then transfer attacks (PGD-20, APGD-CE) crafted on a surrogate model:
  for models without gradients (ONNX).

Example::

    from preempt.attacks.suite import run_suite
    res = run_suite(model, x, y, threat=Linf(0.1), suite="standard")
    res.robust, res.per_attack   # final mask; robust accuracy after each attack

On CPU the points still robust before each attack are split between ``workers`` Python threads,
each running the attack on its share with 1/``workers`` of torch's threads (the heavy torch ops
release the GIL).  On 2 cores, two threads with one torch thread each made a forward-and-backward
pass of the bundled CNN 1.25× faster than one thread with two torch threads.  Each share draws
from its own generator, seeded from ``generator``: results are reproducible for a given number
of workers.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..core.threat import ThreatModel
from ..models.protocol import Model
from .base import Survivors
from .registry import get as get_attack


@dataclass(frozen=True)
class Suite:
    """A named sequence of attacks; ``attacks(steps, restarts, surrogate)`` gives their names."""

    name: str
    help: str
    attacks: Callable[[int, int, object], list[str]]


# The one definition of every suite: run_suite runs these, reports and the CLI help name them.
SUITES: dict[str, Suite] = {s.name: s for s in [
    Suite("pgd", "PGD-STEPS (step ε/4, random start), --restarts times",
          lambda steps, restarts, sur: [f"pgd-{steps}"] * restarts),
    Suite("strong", "the attacks of robustify's default check, from verify's own random starts: PGD-STEPS twice, "
                    "then APGD-CE and APGD-T (3 targets) at 25 iterations, APGD from one start",
          lambda steps, restarts, sur: [f"pgd-{steps}"] * 2 + ["apgd-ce-25", "apgd-t-25"]),
    Suite("quick", "PGD-20, APGD-CE", lambda steps, restarts, sur: ["pgd-20", "apgd-ce"]),
    Suite("standard", "APGD-CE, APGD-T, FAB-T, Square (AutoAttack's standard version)",
          lambda steps, restarts, sur: ["apgd-ce", "apgd-t", "fab-t", "square"]),
    Suite("rand", "APGD-CE and APGD-DLR with EOT over 20 draws (randomized models)",
          lambda steps, restarts, sur: ["apgd-ce-eot", "apgd-dlr-eot"]),
    Suite("blackbox", "Square, then transfer PGD-20 and APGD-CE from a surrogate (models without gradients, ONNX)",
          lambda steps, restarts, sur: ["square"] + (["transfer-pgd-20", "transfer-apgd-ce"] if sur is not None else [])),
]}


SuiteName = Literal["pgd", "strong", "quick", "standard", "rand", "blackbox"]  # for type hints and the CLI's choices


def suite_help() -> str:
    """One line per suite, for --help."""
    return " | ".join(f"{s.name} ({s.help})" for s in SUITES.values())


def attack_names(suite: str, surrogate=None, *, steps: int = 20, restarts: int = 1) -> list[str]:
    """The attacks ``suite`` runs, in order (``adaptive`` is the adaptive attack on its own)."""
    if suite == "adaptive":
        return ["adaptive"]
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}")
    return SUITES[suite].attacks(steps, restarts, surrogate)


def _attack(name: str, gen: torch.Generator | None, surrogate=None, step_size: float | None = None) -> Callable:
    """The registered attack ``name`` as ``f(model, x, y, threat)``, drawing from ``gen``."""
    attack = get_attack(name)
    kw: dict = {}
    if name.startswith("pgd-"):
        kw["step_size"] = step_size
    if name.startswith("transfer-"):
        kw["surrogate"] = surrogate
    return lambda m, x, y, t: attack(m, x, y, t, generator=gen, **kw)


@dataclass
class SuiteResult:
    robust: torch.Tensor                 # (N,) bool: correct and unbroken by every attack
    x_adv: torch.Tensor                  # worst case found per point (the input where unbroken)
    broken_by: list[str | None]          # the attack that broke each point ("clean": misclassified, None: robust)
    per_attack: dict[str, float] = field(default_factory=dict)   # robust accuracy after each attack
    seconds: dict[str, float] = field(default_factory=dict)
    passes: dict[str, int] = field(default_factory=dict)


def default_workers(model: Model) -> int:
    """Python threads for :func:`run_suite`: one per torch thread on CPU (at most 4), 1 on GPU."""
    dev = getattr(model, "device", torch.device("cpu"))
    if torch.device(dev).type != "cpu":
        return 1
    return max(1, min(torch.get_num_threads(), 4))


def run_suite(model: Model, x: torch.Tensor, y: torch.Tensor, *, threat: ThreatModel, suite: str = "standard",
              generator: torch.Generator | None = None, surrogate=None, workers: int | None = None,
              steps: int = 20, restarts: int = 1, step_size: float | None = None,
              correct: torch.Tensor | None = None,
              on_attack: Callable[[str, int], None] | None = None) -> SuiteResult:
    """Run ``suite`` (see :data:`SUITES`) on ``x``; worst case per point.  ``suite="blackbox"``
    (for models without gradients, such as ONNX ones): Square, then transfer attacks crafted on
    ``surrogate`` when one is given.  ``steps``, ``restarts``, ``step_size``: the ``pgd`` suite's
    PGD.  ``correct``: the clean predictions already compared with ``y`` (saves a forward pass).
    ``workers``: see the module docstring (default :func:`default_workers`).  ``on_attack(name, n)``
    is called as each attack starts on the ``n`` points still robust (for progress bars)."""
    x = x.detach()
    robust = (model.predict(x) == y) if correct is None else correct.clone()
    s = Survivors(robust, x)
    assert s.x_adv is not None
    res = SuiteResult(s.robust, s.x_adv, s.broken_by, passes=s.passes)
    res.per_attack["clean"] = s.robust.float().mean().item()
    n_workers = workers if workers is not None else default_workers(model)

    def job(chunk, attack, nthreads=None):
        if nthreads is not None:  # OpenMP's thread count is per thread: set it in each worker
            torch.set_num_threads(nthreads)
        return chunk, attack(model, x[chunk], y[chunk], threat)

    pgd_step = step_size if suite == "pgd" else None  # --step-size is the pgd suite's; the others keep ε/4
    for name in attack_names(suite, surrogate, steps=steps, restarts=restarts):
        idx = s.index
        t0 = time.perf_counter()
        if on_attack is not None:
            on_attack(name, len(idx))
        if len(idx):
            w = min(n_workers, len(idx))
            if w <= 1:
                results = [job(idx, _attack(name, generator, surrogate, pgd_step))]
            else:
                seeds = torch.randint(0, 2 ** 62, (w,), generator=generator,
                                      device=generator.device if generator is not None else None).tolist()
                gens = [torch.Generator(device=x.device).manual_seed(sd) if generator is not None else None
                        for sd in seeds]
                with _threads_per_worker(w) as per:
                    with ThreadPoolExecutor(w) as ex:
                        results = list(ex.map(
                            lambda cg, name=name, per=per: job(cg[0], _attack(name, cg[1], surrogate, pgd_step), per),
                            zip(idx.tensor_split(w), gens)))
            s.passes.setdefault(name, 0)
            for chunk, r in results:
                s.record(name, chunk, r)
        res.seconds[name] = res.seconds.get(name, 0.0) + time.perf_counter() - t0
        res.per_attack[name] = s.robust.float().mean().item()
    return res  # res.robust, .x_adv, .broken_by and .passes are the Survivors' own, updated in place


@contextmanager
def _threads_per_worker(workers: int):
    """torch's thread count split between ``workers`` Python threads for the block, restored after
    it (the only place the attacks change the process-wide count, never beyond the block; the
    training and bench commands set it once for their process, from --threads)."""
    threads = torch.get_num_threads()
    per = max(1, threads // workers)
    torch.set_num_threads(per)
    try:
        yield per
    finally:
        torch.set_num_threads(threads)
