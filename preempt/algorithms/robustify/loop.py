"""One robustify run at one δ: outer steps, the inner attack's loss, the check, the least-visible shrink."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from ...attacks import losses
from ...attacks.projected_gradient import pgd_unrolled
from ...errors import UsageError
from ..persistent import PersistentAdversaries
from .config import RobustifyConfig, resolve_init
from .ledger import Ledger
from .optim import BestIterate, Optimizer, SignDescent, TanhRMSprop
from .parts import EarlyStop, LeastVisible, Persistent, TanhBox, Unrolled
from .precision import loop_autocast
from .results import RobustifyResult
from .space import Problem, working_grid

if TYPE_CHECKING:
    from ...models.protocol import Model


def run_at_delta(models: list[Model], x_o: torch.Tensor, y: torch.Tensor | None, cfg: RobustifyConfig,
         on_step: Callable[[int, int, int], None] | None) -> RobustifyResult:
    """One robustify run at ``cfg.delta`` (no retry, no escalation; the images' change not measured yet)."""
    gen = torch.Generator(device=x_o.device).manual_seed(cfg.seed)
    t0 = time.perf_counter()
    joint = _Joint(models, x_o, y, cfg, gen)
    y = joint.ys[0]
    prob = joint.probs[0]
    init = resolve_init(cfg.init, models[0])
    opt: Optimizer = (TanhRMSprop if isinstance(cfg.outer, TanhBox) else SignDescent)(prob, cfg, joint.start(init, gen))
    book = Ledger(x_o, first_passes=len(models) if init == "descent" else 0, t0=t0)

    def run_check(idx: torch.Tensor, k: int = 0) -> None:
        v = opt.current(idx)
        q = prob.photo(v, idx)
        ok, p, det = joint.check(q, idx, gen)
        back = book.checked(idx, q, ok, p, det, k, settle=stop.settle if k < cfg.steps else 0, v=v)
        if len(back):  # the extra steps lost the pass: back to the first verified variable (least-visible shrinks it)
            opt.restore(back, book.anchor[back])

    stop = cfg.early_stop or EarlyStop()  # without early stopping: its defaults for min_steps, one check at the end
    by_final = cfg.recheck_by_final  # settled photos go to the final verdict without a second check
    best = BestIterate(opt, len(x_o), stop.min_steps)
    esc = cfg.escalation
    give_up = cfg.give_up if esc is None or esc.max_delta > cfg.delta + 1e-12 else 0
    for k in range(1, cfg.steps + 1):
        idx = book.pending()
        if len(idx) == 0:
            break
        with torch.enable_grad():
            leaf, xr = opt.variable(idx)
            g, loss, survived, p = joint.outer(leaf, xr, idx, k, gen)
        best.offer(idx, k, loss)
        book.stepped(idx, k, p, loss)
        opt.update(idx, leaf, xr, g, k)
        book.ever_survived[idx] |= survived
        if give_up and k == give_up and k < cfg.steps:  # the inner attack never failed: this δ is hopeless, stop here
            idx, survived = _give_up(book, prob, best, idx, survived)
        last = k == cfg.steps
        settling = book.verified_at[idx] >= 0
        if settling.any():  # verified images whose extra steps are done (or ran out) get their second check
            due = idx[settling & ((k - book.verified_at[idx] >= stop.settle) | last)]
            if len(due):
                if by_final:  # ... from the final verdict, after the loop
                    book.settled(due, prob.photo(opt.current(due), due))
                else:
                    run_check(due, k)
        if last or (cfg.early_stop and k >= stop.min_steps and (k - stop.min_steps) % stop.check_every == 0):
            fresh = idx[~settling]
            cand = fresh if last else fresh[survived[~settling]]  # a check only where the inner attack itself failed
            if len(cand):
                run_check(cand, k)
        if on_step is not None:
            on_step(k, cfg.steps, int(book.robust.sum()))
    left = book.pending()
    if len(left):
        if cfg.steps == 0:
            run_check(left)
            book.finish(left)
        else:  # not verified: the iterate whose outer loss was lowest, not merely the last one
            book.unverified(left, prob.photo(best.current(left), left))
    if isinstance(cfg.goal, LeastVisible):
        won = book.robust.nonzero().squeeze(1)
        if len(won):
            s, q, p = _shrink(joint, opt.current(won), won, gen, cfg.goal.shrink_steps, book.uploads)
            book.shrunk(won, q, s, p)
    return RobustifyResult(book.final, book.images(y, cfg.delta), {**cfg.record(), **prob.applied(), "init": init},
                           book.first, book.has_first if book.first is not None else None)


def _give_up(book: Ledger, prob: Problem, best: BestIterate, idx: torch.Tensor,
             survived: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``give_up``: the images of ``idx`` whose inner attack never failed so far (and not settling) stop,
    not robust, written as their best iterate; returns the images that go on, with their ``survived``."""
    hopeless = ~book.ever_survived[idx] & (book.verified_at[idx] < 0)
    if hopeless.any():
        gone = idx[hopeless]
        book.unverified(gone, prob.photo(best.current(gone), gone))
    return idx[~hopeless], survived[~hopeless]


def _adversaries(prob: Problem, cfg: RobustifyConfig, gen: torch.Generator) -> PersistentAdversaries | None:
    """The persistent attackers of ``inner_loss='margin-mt'``, in the space the inner attack works in."""
    a = cfg.inner
    if not isinstance(a, Persistent):
        return None
    all_ = torch.arange(len(prob.centre), device=prob.centre.device)
    with torch.no_grad():
        z = prob.inputs(prob.centre[:1] if prob.work is not None else prob.x_o[:1], all_[:1])
    ball = prob.eball.with_eps(prob.eball.eps * a.eps_scale)
    return PersistentAdversaries(len(prob.centre), tuple(z.shape[1:]), ball, targets=a.targets,
                                 kappa=a.kappa, step_size=a.step_size, restart_every=a.restart_every,
                                 generator=gen, device=z.device, dtype=z.dtype)


class _Joint:
    """The models robustify works for, one :class:`Problem` each over one shared variable: the outer
    loss is the sum of theirs, and a photo is robust when it is robust for each (against each model's
    own label).  With one model this is exactly that model's problem.  With several the photo itself is
    the variable (their input sizes differ, so no one working grid serves them all)."""

    def __init__(self, models: list[Model], x_o: torch.Tensor, y: torch.Tensor | None, cfg: RobustifyConfig,
                 gen: torch.Generator) -> None:
        hw = (int(x_o.shape[-2]), int(x_o.shape[-1]))
        self.cfg, self.probs, self.ys = cfg, [], []
        for i, m in enumerate(models):
            r, work = working_grid(m, hw, cfg)
            self.probs.append(Problem(m, x_o, cfg, r, work if len(models) == 1 else None,
                                       least_change=cfg.least_change and len(models) == 1))
            self.ys.append((m.predict(x_o) if y is None or i > 0 else y).to(x_o.device))
        lims = [p.lim for p in self.probs if p.lim is not None]
        if len(lims) > 1:  # one variable for every model: δ wherever any of them looks (the largest share)
            self.probs[0].lim = torch.stack(lims).amax(0)
        self.advs = [_adversaries(p, cfg, gen) for p in self.probs]

    def start(self, init: str, gen: torch.Generator) -> torch.Tensor:
        if init != "descent" or len(self.probs) == 1:
            return self.probs[0].start(init, self.ys[0], gen)
        raise UsageError("init='descent' is for one model (the start preempt training taught that model)")

    def outer(self, leaf: torch.Tensor, xr: torch.Tensor, idx: torch.Tensor, k: int,
              gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """(gradient with respect to ``leaf``, outer loss, whether every model's inner attack failed,
        passes per image) at the variables ``xr`` of images ``idx``."""
        g_sum: torch.Tensor | None = None
        loss_sum = survived_all = None
        passes = 0
        for prob, y, adv in zip(self.probs, self.ys, self.advs):
            if adv is None:
                loss, survived, p = _outer_loss(prob, xr, idx, y[idx], k, gen)
                (g,) = torch.autograd.grad(loss[0].sum(), leaf, retain_graph=len(self.probs) > 1)
                value = loss[1]
            else:
                z = prob.inputs(xr, idx)
                with loop_autocast(self.cfg.loop_precision, z.device):
                    value, gz, worst, p = adv.loss_and_grad(prob.model, z, y[idx], idx, k, self.cfg.inner.steps)
                (g,) = torch.autograd.grad(z, leaf, grad_outputs=gz, retain_graph=len(self.probs) > 1)
                survived = worst < 0
            g_sum = g if g_sum is None else g_sum + g
            loss_sum = value if loss_sum is None else loss_sum + value
            survived_all = survived if survived_all is None else survived_all & survived
            passes += p
        assert g_sum is not None and loss_sum is not None and survived_all is not None
        return g_sum, loss_sum, survived_all, passes

    def check(self, photo: torch.Tensor, idx: torch.Tensor, gen: torch.Generator,
              extra_restarts: int = 0) -> tuple[torch.Tensor, int, list[dict]]:
        """Each model's check on the photos ``photo`` of images ``idx``: robust only where all pass
        (each runs only on what the ones before it left robust); passes summed."""
        ok, passes, det = self.probs[0].check(photo, self.ys[0][idx], gen, extra_restarts)
        for prob, y in zip(self.probs[1:], self.ys[1:]):
            still = ok.nonzero().squeeze(1)
            if not len(still):
                break
            ok_m, p, _ = prob.check(photo[still], y[idx][still], gen, extra_restarts)
            ok[still] = ok_m
            passes += p
        return ok, passes, det


def _outer_loss(prob: Problem, xr: torch.Tensor, idx: torch.Tensor, y: torch.Tensor, k: int,
                gen: torch.Generator) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor, int]:
    """The outer objective at ``xr`` (differentiable): CE of the unrolled inner attack's point,
    plus, with ``survive``, the expectation over the service transforms.  Returns ((total, CE),
    whether the inner attack failed per image, passes per image)."""
    c = prob.cfg.inner
    assert isinstance(c, Unrolled)
    z = prob.inputs(xr, idx)
    attack_loss: str | losses.Loss = "ce"
    targeted = c.loss == "ce+dlr-t" and k % 2 == 0
    if targeted:  # even steps: targeted DLR at the k/2-th most likely wrong class
        with torch.no_grad():
            wrong = prob.model(z).scatter(1, y[:, None], float("-inf"))
        if wrong.shape[1] < 4:
            raise UsageError("inner_loss='ce+dlr-t' needs a model with at least 4 classes (targeted DLR's scale)")
        target = wrong.argsort(1, descending=True)[:, (k // 2 - 1) % 3]

        def attack_loss(logits: torch.Tensor, y_: torch.Tensor) -> torch.Tensor:
            return losses.dlr_targeted(logits, y_, target)
    x_a, p = pgd_unrolled(prob.model, z, y, threat=prob.eball, steps=c.steps, loss=attack_loss,
                          step_size=c.step_size, create_graph=c.create_graph, generator=gen)
    p += len(xr) if targeted else 0  # the pass that picked the targets
    logits = prob.model(x_a)
    loss = losses.ce(logits, y)
    total = loss
    if prob.chains:
        eot, p_eot = prob.eot_loss(xr, y, k, gen)
        total, p = loss + eot, p + p_eot
    return (total, loss.detach()), (logits.argmax(1) == y).detach(), p // len(xr) + 1


def _shrink(joint: _Joint, v: torch.Tensor, idx: torch.Tensor, gen: torch.Generator,
            steps: int, uploads: list[dict], margin: float = 0.5,
            extra_restarts: int = 2) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Least visible change: bisection on the scale s ∈ [0, 1] of the verified change.

    A scale counts as robust only if its photo (quantised, as written) passes the check with
    ``extra_restarts`` more restarts than usual; the result keeps a ``margin`` of the way back to
    the full change (s* = s + margin·(1 − s)), which must pass that stronger check too, else the
    full, already verified change is kept.  Measured on the tests' 20 upscaled images: stopping
    right at the first passing scale left 6 of 19 claims that an independent PGD-20 broke.
    Returns (s*, photos, passes per image)."""
    prob = joint.probs[0]
    centre = prob.centre[idx]
    d = v - centre
    shape = (-1, *[1] * (d.dim() - 1))
    lo = torch.zeros(len(idx), device=v.device)
    hi = torch.ones(len(idx), device=v.device)
    passes = 0

    def strong(scale: torch.Tensor, at: torch.Tensor, record: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The stronger check on the photos of images ``idx[at]`` scaled by ``scale[at]``."""
        nonlocal passes
        q = prob.photo(centre[at] + scale[at].view(shape) * d[at], idx[at])
        ok, p, det = joint.check(q, idx[at], gen, extra_restarts)
        passes += p
        if record:
            for j, i in enumerate(idx[at].tolist()):
                if ok[j]:
                    uploads[i] = det[j]
        return ok, q

    every = torch.arange(len(idx), device=v.device)
    for _ in range(steps):
        mid = (lo + hi) / 2
        ok, _ = strong(mid, every)
        hi = torch.where(ok, mid, hi)
        lo = torch.where(ok, lo, mid)
    s = hi + margin * (1 - hi)
    best = prob.photo(v, idx)  # the full, verified change: kept where no smaller scale passed
    smaller = (hi < 1).nonzero().squeeze(1)  # (hi = 1: s* = 1 is that very photo, checked already)
    if len(smaller):
        ok, q = strong(s, smaller, record=True)
        best[smaller[ok]] = q[ok]
        s[smaller[~ok]] = 1.0
    return s, best, int(round(passes / max(len(idx), 1)))
