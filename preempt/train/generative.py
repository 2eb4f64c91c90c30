"""Training the defenses' generative networks: MagNet's auto-encoder and Defense-GAN's generator.

``preempt train --method magnet`` trains a denoising auto-encoder on clean training images
(Gaussian noise σ = ``noise``, MSE, Adam), then sets both detectors' thresholds for the
false-positive rate ``fpr`` on held-out clean images: the ℓ1 reconstruction error's and the
Jensen–Shannon divergence's (classifier softmax at temperature ``jsd_temperature`` on x and on
AE(x)).  :func:`recalibrate_magnet` redoes only that step for trained weights.
``preempt train --method defense-gan`` trains an MLP GAN (non-saturating loss, Adam 2e-4,
β1 = 0.5, one-sided label smoothing 0.9).  Both write weights + a card (``kind: defense``) that
names the classifier they defend, checkpoint every epoch into ``run_dir`` and resume from it.
"""
from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from .. import data as datasets
from ..errors import UsageError
from ..models import build, load_model
from ..models.files import sha256

GENERATIVE = ("magnet", "defense-gan")


@dataclass
class DefenseTrainConfig:
    method: str = "magnet"             # magnet | defense-gan
    classifier: str = "fmnist-standard"  # the classifier the defense sits in front of (a bundled name)
    dataset: str = "fashion-mnist"
    data: str | None = None
    epochs: int = 10
    batch_size: int = 128
    lr: float | None = None            # magnet 1e-3, defense-gan 2e-4
    noise: float = 0.1                 # magnet: denoising noise σ
    fpr: float = 0.01                  # magnet: detector false-positive rate on held-out clean images
    jsd_temperature: float = 10.0      # magnet: softmax temperature T of the divergence detector
    width: int | None = None           # magnet-ae channels (3), GAN MLP width (256)
    z_dim: int = 64                    # defense-gan
    proj_steps: int = 100              # defense-gan projection (recorded in the card)
    proj_restarts: int = 4
    proj_lr: float = 0.05
    val_size: int = 2000
    limit: int | None = None
    seed: int = 0
    threads: int | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.method not in GENERATIVE:
            raise UsageError(f"unknown method {self.method!r}; choose from {', '.join(GENERATIVE)}")
        if self.lr is None:
            self.lr = 1e-3 if self.method == "magnet" else 2e-4
        if self.width is None:
            self.width = 3 if self.method == "magnet" else 256


def _data(cfg: DefenseTrainConfig, dev: torch.device, x: torch.Tensor | None = None):
    if x is None:
        x, _, _ = datasets.load(cfg.dataset, "train", cfg.data)
    if cfg.limit:
        x = x[:cfg.limit + cfg.val_size]
    x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.seed))]
    return x[cfg.val_size:].to(dev), x[:cfg.val_size].to(dev)


class _Run:
    """Per-epoch checkpoint (atomic) and JSON-lines log in ``run_dir``; ``resume`` reloads both."""

    def __init__(self, run_dir: Path | None, modules: dict[str, Any], resume: bool) -> None:
        self.dir, self.modules = run_dir, modules
        self.epoch, self.elapsed, self.history = 0, 0.0, []
        if run_dir is None:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        ck = run_dir / "checkpoint.pt"
        if resume and ck.exists():
            state = torch.load(ck, map_location="cpu", weights_only=True)
            for k, m in modules.items():
                m.load_state_dict(state[k])
            self.epoch, self.elapsed = state["epoch"], state["elapsed"]
            torch.set_rng_state(state["rng"])
            log = run_dir / "log.jsonl"
            self.history = [json.loads(line) for line in log.read_text().splitlines() if line.strip()][:self.epoch]

    def end_epoch(self, rec: dict) -> None:
        self.epoch = rec["epoch"]
        self.history.append(rec)
        if self.dir is None:
            return
        with open(self.dir / "log.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        tmp = self.dir / "checkpoint.pt.tmp"
        torch.save({**{k: m.state_dict() for k, m in self.modules.items()}, "epoch": self.epoch,
                    "elapsed": self.elapsed, "rng": torch.get_rng_state()}, tmp)
        tmp.replace(self.dir / "checkpoint.pt")


def train_defense(cfg: DefenseTrainConfig, *, out: str | Path, run_dir: str | Path | None = None,
                  resume: bool = False, command: str | None = None,
                  on_step: Callable[[dict], None] | None = None, images: torch.Tensor | None = None) -> dict[str, Any]:
    """Train ``cfg.method``'s network, write ``out`` (.safetensors) and its card; returns the card.
    ``images`` trains on in-memory images instead of ``cfg.dataset`` (and skips the test metrics)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    dev = torch.device(cfg.device)
    classifier = load_model(cfg.classifier, device=dev)
    xt, xv = _data(cfg, dev, images)
    train_epoch, net, extra = (_magnet_setup if cfg.method == "magnet" else _gan_setup)(cfg, xt, dev)
    run = _Run(Path(run_dir) if run_dir else None, {"net": net, **extra}, resume)
    for epoch in range(run.epoch, cfg.epochs):
        t0 = time.perf_counter()
        order = torch.randperm(len(xt), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch)).to(dev)
        rec = train_epoch(order, epoch, on_step)
        run.elapsed += time.perf_counter() - t0
        rec.update(epoch=epoch + 1, seconds=round(run.elapsed, 1))
        run.end_epoch(rec)
        if on_step:
            on_step({**rec, "end_of_epoch": True})
    net.eval()
    body = (_magnet_card(cfg, net, classifier, xv) if cfg.method == "magnet"
            else _gan_card(cfg, net, classifier, dev, test=images is None))
    card = {
        "kind": "defense", **body, "classifier": cfg.classifier, "classifier_sha256": classifier.card.get("sha256"),
        "dataset": cfg.dataset,
        "training": {"method": cfg.method, "command": command, "config": asdict(cfg), "seed": cfg.seed,
                     "epochs": cfg.epochs, "wall_time_s": round(run.elapsed, 1),
                     "machine": f"{platform.machine()} {torch.get_num_threads()} threads",
                     "torch": torch.__version__, "python": sys.version.split()[0], "history": run.history},
        "licence": "MIT (weights); Fashion-MNIST is MIT-licensed by Zalando Research",
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(out))
    card.update(name=out.stem, sha256=sha256(out))
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return card


# -- MagNet ----------------------------------------------------------------------------------------

def _magnet_setup(cfg: DefenseTrainConfig, xt: torch.Tensor, dev: torch.device):
    net = build("magnet-ae", in_channels=xt.shape[1], width=cfg.width).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr or 1e-3)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed + 1)

    def epoch_fn(order, epoch, on_step):
        net.train()
        tot, n_b = 0.0, (len(order) + cfg.batch_size - 1) // cfg.batch_size
        for b in range(n_b):
            xb = xt[order[b * cfg.batch_size:(b + 1) * cfg.batch_size]]
            noisy = (xb + cfg.noise * torch.randn(xb.shape, generator=gen, device=dev)).clamp(0, 1)
            loss = F.mse_loss(net(noisy), xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += loss.item()
            if on_step:
                on_step({"epoch": epoch + 1, "batch": b + 1, "batches": n_b, "loss": tot / (b + 1)})
        return {"loss": tot / n_b}

    return epoch_fn, net, {"opt": opt}


def _magnet_card(cfg: DefenseTrainConfig, net, classifier, xv: torch.Tensor) -> dict[str, Any]:
    return {"defense": "magnet", "arch": "magnet-ae", "arch_kwargs": {"in_channels": xv.shape[1], "width": cfg.width},
            **calibrate_magnet(net, classifier, xv, fpr=cfg.fpr, temperature=cfg.jsd_temperature)}


def calibrate_magnet(net, classifier, xv: torch.Tensor, *, fpr: float, temperature: float) -> dict[str, Any]:
    """Both detectors' thresholds for false-positive rate ``fpr`` on the clean images ``xv``: the
    card's ``detector`` (ℓ1 reconstruction error), ``jsd_detector`` and ``metrics`` sections."""
    from ..defenses.magnet import js_divergence, reconstruction_error, threshold_for_fpr

    errs, jsds = [], []
    with torch.no_grad():
        for i in range(0, len(xv), 1000):
            xb = xv[i:i + 1000]
            rec = net(xb)
            errs.append(reconstruction_error(xb, rec, 1))
            jsds.append(js_divergence(classifier(xb), classifier(rec), temperature))
    e, j = torch.cat(errs), torch.cat(jsds)
    tau, tau_j = threshold_for_fpr(e, fpr), threshold_for_fpr(j, fpr)
    return {"detector": {"error": "l1", "p": 1, "threshold": tau, "fpr": fpr, "n_val": len(xv),
                         "val_fpr": float((e > tau).float().mean())},
            "jsd_detector": {"temperature": temperature, "threshold": tau_j, "fpr": fpr, "n_val": len(xv),
                             "val_fpr": float((j > tau_j).float().mean())},
            "metrics": {"val_l1_error_mean": float(e.mean()), "val_jsd_mean": float(j.mean())}}


def recalibrate_magnet(out: str | Path, *, temperature: float | None = None, fpr: float | None = None,
                       data: str | None = None, command: str | None = None) -> dict[str, Any]:
    """Recompute the detectors of trained MagNet weights ``out`` on the validation split its card's
    training config holds out (the same images as at training), and rewrite the card (atomically);
    the weights are untouched.  Returns the card."""
    out = Path(out)
    card_path = out.with_suffix(".json")
    card = json.loads(card_path.read_text())
    if card.get("defense") != "magnet":
        raise UsageError(f"{card_path}: not a MagNet card")
    if card.get("sha256") and sha256(out) != card["sha256"]:
        raise UsageError(f"{out}: sha256 does not match its card")
    from ..models.files import read_state

    known = set(DefenseTrainConfig.__dataclass_fields__)
    cfg = DefenseTrainConfig(**{k: v for k, v in card["training"]["config"].items() if k in known})
    cfg.data = data or cfg.data
    cfg.fpr = fpr if fpr is not None else cfg.fpr
    cfg.jsd_temperature = temperature if temperature is not None else cfg.jsd_temperature
    net = build(card["arch"], **card.get("arch_kwargs", {}))
    net.load_state_dict(read_state(out))
    net.eval()
    classifier = load_model(card["classifier"])
    _, xv = _data(cfg, torch.device("cpu"))
    card.update(calibrate_magnet(net, classifier, xv, fpr=cfg.fpr, temperature=cfg.jsd_temperature))
    card["calibration"] = {"command": command, "torch": torch.__version__}
    tmp = card_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    tmp.replace(card_path)
    return card


# -- Defense-GAN -----------------------------------------------------------------------------------

def _gan_setup(cfg: DefenseTrainConfig, xt: torch.Tensor, dev: torch.device):
    shape = tuple(xt.shape[1:])
    g = build("gan-generator", z_dim=cfg.z_dim, width=cfg.width, out_shape=shape).to(dev)
    d = build("gan-discriminator", width=cfg.width, in_shape=shape).to(dev)
    og = torch.optim.Adam(g.parameters(), lr=cfg.lr or 2e-4, betas=(0.5, 0.999))
    od = torch.optim.Adam(d.parameters(), lr=cfg.lr or 2e-4, betas=(0.5, 0.999))
    gen = torch.Generator(device=dev).manual_seed(cfg.seed + 1)

    def epoch_fn(order, epoch, on_step):
        g.train(), d.train()
        tot_g, tot_d, n_b = 0.0, 0.0, (len(order) + cfg.batch_size - 1) // cfg.batch_size
        for b in range(n_b):
            xb = xt[order[b * cfg.batch_size:(b + 1) * cfg.batch_size]]
            z = torch.randn((len(xb), cfg.z_dim), generator=gen, device=dev)
            fake = g(z)
            ld = (F.binary_cross_entropy_with_logits(d(xb), torch.full((len(xb), 1), 0.9, device=dev))
                  + F.binary_cross_entropy_with_logits(d(fake.detach()), torch.zeros(len(xb), 1, device=dev)))
            od.zero_grad(set_to_none=True)
            ld.backward()
            od.step()
            lg = F.binary_cross_entropy_with_logits(d(fake), torch.ones(len(xb), 1, device=dev))
            og.zero_grad(set_to_none=True)
            lg.backward()
            og.step()
            tot_g, tot_d = tot_g + lg.item(), tot_d + ld.item()
            if on_step:
                on_step({"epoch": epoch + 1, "batch": b + 1, "batches": n_b, "loss": tot_g / (b + 1)})
        return {"loss": tot_g / n_b, "loss_d": tot_d / n_b}

    return epoch_fn, g, {"discriminator": d, "opt_g": og, "opt_d": od}


def _gan_card(cfg: DefenseTrainConfig, g, classifier, dev, test: bool = True, n: int = 500) -> dict[str, Any]:
    from ..defenses.defensegan import DefenseGAN

    card: dict[str, Any] = {"defense": "defense-gan", "arch": "gan-generator",
                            "arch_kwargs": {"z_dim": cfg.z_dim, "width": cfg.width, "out_shape": list(g[-1].unflattened_size)},
                            "projection": {"steps": cfg.proj_steps, "restarts": cfg.proj_restarts, "lr": cfg.proj_lr,
                                           "optimizer": "adam", "error": "squared l2"}}
    if not test:
        return card
    try:
        x, y, _ = datasets.load(cfg.dataset, "test", cfg.data)
    except datasets.DataError:
        return card
    dg = DefenseGAN(classifier, g, z_dim=cfg.z_dim, steps=cfg.proj_steps, restarts=cfg.proj_restarts, lr=cfg.proj_lr)
    x, y = x[:n].to(dev), y[:n].to(dev)
    xp, err = dg.project(x)
    with torch.no_grad():
        acc = float((classifier(xp).argmax(1) == y).float().mean())
    card["metrics"] = {"test": {"n": n, "projection_sq_error_mean": float(err.mean()),
                                "projection_linf_mean": float((xp - x).flatten(1).abs().amax(1).mean()),
                                "clean_accuracy_through_projection": acc}}
    return card
