"""The training loop behind ``preempt train``: data, epochs, checkpoints, resume, JSON-lines log."""
from __future__ import annotations

import json
import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import data as datasets
from ..core.threat import threat_model
from ..errors import UsageError
from ..models import Classifier, Preprocessing, build, save_model
from .config import TrainConfig, dataset_kw
from .methods import batch_loss
from .metrics import accuracy, curve_test_split, curves, robust_accuracy, test_metrics


@dataclass
class TrainResult:
    model: Classifier
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    best_epoch: int = 0
    test: dict = field(default_factory=dict)
    pseudo_labels: dict = field(default_factory=dict)


def _lr(cfg: TrainConfig, it: int, total: int) -> float:
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "step":
        return cfg.lr * (0.1 if it >= 0.5 * total else 1.0) * (0.1 if it >= 0.75 * total else 1.0)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * it / max(total, 1)))


def train(cfg: TrainConfig, *, run_dir: str | Path | None = None, out: str | Path | None = None,
          resume: bool = False, command: str | None = None,
          on_step: Callable[[dict], None] | None = None,
          tensors: tuple[torch.Tensor, torch.Tensor, list[str]] | None = None) -> TrainResult:
    """Train a classifier with ``cfg.method``; checkpoints and a log go to ``run_dir``; the final
    weights and their card to ``out`` (a .safetensors path).  ``tensors=(x, y, classes)`` trains on
    in-memory data instead of ``cfg.dataset``."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    dist = _Dist.setup(cfg.device)
    dev = torch.device(cfg.device if dist.world == 1 or cfg.device == "cpu" else f"cuda:{dist.local_rank}")
    x, y, classes = tensors if tensors is not None else datasets.load(cfg.dataset, "train", cfg.data, **dataset_kw(cfg))
    xv, yv, xt, yt, pseudo = _splits(cfg, x, y, classes, dev)
    c, h = x.shape[1], x.shape[2]
    net = build(cfg.arch, in_channels=c, num_classes=len(classes), width=cfg.width, input_size=h)
    pre = Preprocessing(input_size=(h, x.shape[3]), channels=c, mean=(0.5,) * c, std=(0.5,) * c)
    model = Classifier(net, pre, classes=classes).to(dev)
    # attacks are crafted on the plain model (identical weights on every rank); the weight update
    # goes through DistributedDataParallel when torchrun started several processes
    update_model = dist.wrap(model)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=cfg.momentum > 0)
    assert cfg.delta is not None, "TrainConfig.__post_init__ sets delta (None: equal to eps)"
    threat, dball = threat_model(cfg.norm, cfg.eps), threat_model(cfg.norm, cfg.delta)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed + 1 + 7919 * dist.rank)
    run = Path(run_dir) if run_dir and dist.rank == 0 else None
    start_epoch, best, best_state, elapsed, history = _resume(run, resume, model, opt, gen, dev)
    start_epoch = dist.sync_start(model, opt, start_epoch)
    curve_test = curve_test_split(cfg, dev) if cfg.curve_size and tensors is None and dist.rank == 0 else None
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        order = torch.randperm(len(xt), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch)).to(dev)
        tot_loss, seen = _epoch(cfg, epoch, order, (xt, yt), model, update_model, opt, (threat, dball), gen, dist,
                                on_step)
        if dist.rank != 0:  # only rank 0 validates, logs and saves
            elapsed += time.perf_counter() - t0
            continue
        clean = accuracy(model, xv, yv)
        rob = robust_accuracy(model, xv[:cfg.val_attack_size], yv[:cfg.val_attack_size], threat,
                              cfg.val_attack_steps) if cfg.val_attack_size else float("nan")
        elapsed += time.perf_counter() - t0
        rec = {"epoch": epoch + 1, "loss": tot_loss / max(seen, 1), "val_clean": clean,
               f"val_pgd{cfg.val_attack_steps}": rob, "lr": opt.param_groups[0]["lr"], "seconds": elapsed,
               **curves(model, cfg, threat, (xt, yt), curve_test)}
        history.append(rec)
        score = rob if cfg.early_stop else epoch
        if score >= best:
            best = score
            best_state = {k: v.detach().clone() for k, v in model.net.state_dict().items()}
            rec["best"] = True
        if run:
            with open(run / "log.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
            tmp = run / "checkpoint.pt.tmp"
            torch.save({"model": model.net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                        "best": best, "elapsed": elapsed, "rng": torch.get_rng_state(),
                        "best_model": best_state, "gen": gen.get_state()}, tmp)
            tmp.replace(run / "checkpoint.pt")
        if on_step:
            on_step({**rec, "end_of_epoch": True})
    dist.finish()
    if dist.rank != 0:
        return TrainResult(model.eval(), history, elapsed, cfg.epochs)
    if cfg.early_stop and best_state is not None:
        model.net.load_state_dict(best_state)
    best_epoch = max((r["epoch"] for r in history if r.get("best")), default=cfg.epochs)
    model.eval()
    result = TrainResult(model, history, elapsed, best_epoch, pseudo_labels=pseudo)
    if out:
        result.test = test_metrics(model, cfg, threat) if tensors is None else {}
        card = make_card(cfg, model, result, command)
        model.card = save_model(model, Path(out), card)
    return result


def _splits(cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor, classes: list[str], dev: torch.device):
    """(validation x, y, training x, y, pseudo-label info): ``val_size`` held out of a seeded
    permutation; ``limit``/``labelled`` N keep the first N + val_size images (the same split and
    D for both); with ``labelled`` the rest, pseudo-labelled, join the training images."""
    pool = cfg.limit or cfg.labelled
    rest = (x[cfg.labelled + cfg.val_size:][:cfg.unlabelled], y[cfg.labelled + cfg.val_size:][:cfg.unlabelled]) \
        if cfg.labelled else None
    if pool:
        x, y = x[:pool + cfg.val_size], y[:pool + cfg.val_size]
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.seed))
    x, y = x[perm], y[perm]
    xv, yv = x[:cfg.val_size].to(dev), y[:cfg.val_size].to(dev)
    xt, yt = x[cfg.val_size:].to(dev), y[cfg.val_size:].to(dev)
    pseudo: dict = {}
    if rest is not None:  # D̃: the true labels are thrown away, only their agreement is reported
        xu, yu, pseudo = pseudo_label(cfg, rest[0].to(dev), rest[1].to(dev), classes)
        xt, yt = torch.cat([xt, xu]), torch.cat([yt, yu])
    return xv, yv, xt, yt, pseudo


def _resume(run: Path | None, resume: bool, model: Classifier, opt, gen: torch.Generator, dev):
    """(start epoch, best score, best weights, seconds so far, history) from ``run``'s checkpoint
    when resuming, else a fresh start; creates ``run``."""
    if not run:
        return 0, -1.0, None, 0.0, []
    run.mkdir(parents=True, exist_ok=True)
    ck = run / "checkpoint.pt"
    if not (resume and ck.exists()):
        return 0, -1.0, None, 0.0, []
    state = torch.load(ck, map_location=dev, weights_only=True)
    model.net.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    lines = (run / "log.jsonl").read_text().splitlines()
    history = [json.loads(line) for line in lines if line.strip()][:state["epoch"]]
    torch.set_rng_state(state["rng"])
    if "gen" in state:
        gen.set_state(state["gen"])
    return state["epoch"], state["best"], state.get("best_model"), state["elapsed"], history


def _epoch(cfg: TrainConfig, epoch: int, order: torch.Tensor, data, model: Classifier, update_model, opt, balls, gen, dist,
           on_step) -> tuple[float, int]:
    """One epoch of weight updates over ``data`` in ``order``: (summed loss, images seen)."""
    (xt, yt), (threat, dball) = data, balls
    n_batches = math.ceil(len(xt) / cfg.batch_size)
    tot_loss, seen = 0.0, 0
    for b in range(n_batches):
        idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size][dist.rank::dist.world]
        xb, yb = xt[idx], yt[idx]
        for g_ in opt.param_groups:
            g_["lr"] = _lr(cfg, epoch * n_batches + b, cfg.epochs * n_batches)
        model.train()  # attacks are crafted in train mode (see the model card)
        if cfg.method == "free-at":
            loss = _free_at_batch(update_model, opt, xb, yb, threat, cfg)
        else:
            crafter = model if cfg.attack_bn == "train" else _EvalMode(model)
            loss = batch_loss(cfg.method, crafter, xb, yb, cfg, threat, dball, gen, update_model=update_model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        tot_loss += loss.item() * len(idx)
        seen += len(idx)
        if on_step:
            on_step({"epoch": epoch + 1, "batch": b + 1, "batches": n_batches, "loss": tot_loss / seen})
    return tot_loss, seen


class _EvalMode(torch.nn.Module):
    """Runs the model in eval mode (BatchNorm on running statistics) and restores train mode."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        self.model.eval()
        try:
            return self.model(x)
        finally:
            self.model.train()


def pseudo_label(cfg: TrainConfig, xu: torch.Tensor, y_hidden: torch.Tensor,
                 classes: list[str]) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Label D̃ with ``cfg.pseudo_labeller`` (step 2 of adversarial training with unlabelled data).

    The labeller must have been trained on D alone: when its card says how it was trained, its
    dataset, seed, validation size and ``limit`` must equal this run's (``--labelled N``), so
    that it never saw D̃'s labels nor the validation images.  ``y_hidden`` (D̃'s true labels) only
    measures the pseudo-labels' accuracy for the card; training never sees it."""
    from ..models import load_model

    assert cfg.pseudo_labeller is not None
    teacher = load_model(cfg.pseudo_labeller, device=xu.device)
    tc = (teacher.card.get("training") or {}).get("config") or {}
    if tc:
        want = {"dataset": cfg.dataset, "seed": cfg.seed, "val_size": cfg.val_size, "limit": cfg.labelled}
        bad = {k: (tc.get(k), v) for k, v in want.items() if tc.get(k) != v}
        if bad:
            raise UsageError(f"pseudo-labeller {cfg.pseudo_labeller}: not trained on this run's labelled subset D ("
                             + ", ".join(f"{k} {a!r}, this run {b!r}" for k, (a, b) in bad.items())
                             + f"); train it with --method standard --limit {cfg.labelled} --val-size {cfg.val_size} "
                             f"--seed {cfg.seed}")
    if teacher.classes and list(teacher.classes) != list(classes):
        raise UsageError(f"pseudo-labeller {cfg.pseudo_labeller}: its classes differ from the dataset's")
    with torch.inference_mode():
        yu = teacher.predict(xu, batch_size=1000).to(xu.device)
    info = {"labeller": teacher.name, "labeller_sha256": teacher.card.get("sha256"), "labelled": cfg.labelled,
            "unlabelled": len(xu), "accuracy": round((yu == y_hidden).float().mean().item(), 4),
            "labeller_trained_on_d": bool(tc)}
    return xu, yu.clone(), info


class _Dist:
    """torchrun's environment: rank, world size; gloo on CPU, nccl on GPU."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0) -> None:
        self.rank, self.world, self.local_rank = rank, world, local_rank

    @classmethod
    def setup(cls, device: str) -> _Dist:
        import os

        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as td

        if not td.is_initialized():
            td.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return cls(td.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))

    def wrap(self, model: Classifier):
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(model, device_ids=None if model.device.type == "cpu" else [model.device.index])

    def sync_start(self, model: Classifier, opt, start_epoch: int) -> int:
        """Make every rank start from rank 0's weights and epoch (fresh or resumed)."""
        if self.world == 1:
            return start_epoch
        import torch.distributed as td

        for p in model.net.state_dict().values():
            td.broadcast(p, 0)
        t = torch.tensor([start_epoch], device=model.device)
        td.broadcast(t, 0)
        return int(t.item())

    def finish(self) -> None:
        if self.world > 1:
            import torch.distributed as td

            td.barrier()


def _free_at_batch(model: torch.nn.Module, opt, x, y, threat, cfg):
    """Free adversarial training: m replays, one backward serves weights and perturbation."""
    delta = torch.zeros_like(x)
    for _ in range(cfg.replays):
        xa = threat.project(x + delta, x).detach().requires_grad_(True)
        loss = F.cross_entropy(model(xa), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        g = xa.grad.detach()
        opt.step()
        delta = threat.project(threat.step(xa.detach(), g, threat.eps), x) - x
    return loss.detach()


def make_card(cfg: TrainConfig, model: Classifier, result: TrainResult, command: str | None) -> dict:
    last = result.history[-1] if result.history else {}
    return {
        "arch": cfg.arch,
        "arch_kwargs": {"in_channels": model.pre.channels, "num_classes": len(model.classes or []),
                        "width": cfg.width, "input_size": model.pre.input_size[0]},
        "preprocessing": model.pre.to_card(),
        "classes": model.classes,
        "dataset": cfg.dataset,
        "threat_model": {"norm": cfg.norm, "eps": cfg.eps, "delta": cfg.delta},
        "training": {"method": cfg.method, "command": command, "config": asdict(cfg), "seed": cfg.seed,
                     "epochs": cfg.epochs, "best_epoch": result.best_epoch, "wall_time_s": round(result.seconds, 1),
                     "machine": f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads".strip(),
                     "torch": torch.__version__, "python": sys.version.split()[0],
                     "batchnorm_mode_during_attacks": cfg.attack_bn if any(
                         isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
                     else f"{cfg.attack_bn} (this architecture has no BatchNorm)"},
        **({"pseudo_labels": result.pseudo_labels} if result.pseudo_labels else {}),
        "metrics": {"validation": {k: v for k, v in last.items() if k.startswith("val_")}, "test": result.test},
        "licence": "MIT (weights); Fashion-MNIST is MIT-licensed by Zalando Research",
    }
