"""Running attacks in turn, each only on the points still robust, worst case per point (the
AutoAttack protocol of Croce & Hein 2020): the engine under :class:`preempt.verdict.check.Check`,
which names the attacks (verify's suites and robustify's checks are named checks there).

On CPU the points still robust before each attack are split between ``workers`` Python threads,
each running the attack on its share with 1/``workers`` of torch's threads (the heavy torch ops
release the GIL).  On 2 cores, two threads with one torch thread each made a forward-and-backward
pass of the bundled CNN 1.25× faster than one thread with two torch threads.  Each share draws
from its own generator, seeded from ``generator``: results are reproducible for a given number
of workers.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from ..core.threat import ThreatModel
from ..models.protocol import Model
from .base import AttackResult, Survivors


@dataclass
class SuiteResult:
    robust: torch.Tensor                 # (N,) bool: correct and unbroken by every attack
    x_adv: torch.Tensor                  # worst case found per point (the input where unbroken)
    broken_by: list[str | None]          # the attack that broke each point ("clean": misclassified, None: robust)
    per_attack: dict[str, float] = field(default_factory=dict)   # robust accuracy after each attack
    seconds: dict[str, float] = field(default_factory=dict)
    passes: dict[str, int] = field(default_factory=dict)


def default_workers(model: Model) -> int:
    """Python threads for :func:`run_attacks`: one per torch thread on CPU (at most 4), 1 on GPU."""
    dev = getattr(model, "device", torch.device("cpu"))
    if torch.device(dev).type != "cpu":
        return 1
    return max(1, min(torch.get_num_threads(), 4))


Run = tuple[str, Callable[[torch.Generator | None], Callable[..., AttackResult]]]  # (label, generator -> attack)


def run_attacks(model: Model, x: torch.Tensor, y: torch.Tensor, *, threat: ThreatModel, runs: Sequence[Run],
                survivors: Survivors, result: SuiteResult, generator: torch.Generator | None = None,
                workers: int | None = None, on_attack: Callable[[str, int], None] | None = None) -> None:
    """Each run in turn on the points ``survivors`` still holds robust; its hits are written back there
    and each attack's robust accuracy and seconds into ``result``.  A run is (label, ``make``):
    ``make(generator)`` gives ``attack(model, x, y, threat) -> AttackResult``.  ``workers``: see the
    module docstring (None: :func:`default_workers`; 1: ``generator`` itself throughout).
    ``on_attack(label, n)`` is called as each attack starts on the ``n`` points still robust."""
    s = survivors
    n_workers = workers if workers is not None else default_workers(model)

    def job(chunk, attack, nthreads=None):
        if nthreads is not None:  # OpenMP's thread count is per thread: set it in each worker
            torch.set_num_threads(nthreads)
        return chunk, attack(model, x[chunk], y[chunk], threat)

    for name, make in runs:
        idx = s.index
        t0 = time.perf_counter()
        if on_attack is not None:
            on_attack(name, len(idx))
        if len(idx):
            w = min(n_workers, len(idx))
            if w <= 1:
                results = [job(idx, make(generator))]
            else:
                seeds = torch.randint(0, 2 ** 62, (w,), generator=generator,
                                      device=generator.device if generator is not None else None).tolist()
                gens = [torch.Generator(device=x.device).manual_seed(sd) if generator is not None else None
                        for sd in seeds]
                with _threads_per_worker(w) as per:
                    with ThreadPoolExecutor(w) as ex:
                        results = list(ex.map(lambda cg, make=make, per=per: job(cg[0], make(cg[1]), per),
                                              zip(idx.tensor_split(w), gens)))
            s.passes.setdefault(name, 0)
            for chunk, r in results:
                s.record(name, chunk, r)
        result.seconds[name] = result.seconds.get(name, 0.0) + time.perf_counter() - t0
        result.per_attack[name] = s.robust.float().mean().item()


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
