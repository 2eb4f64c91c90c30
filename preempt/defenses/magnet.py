"""MagNet (Meng & Chen, "MagNet: a Two-Pronged Defense against Adversarial Examples", CCS 2017).

An auto-encoder trained on clean images serves twice: a **detector** rejects inputs whose
reconstruction error ‖x − AE(x)‖_p (mean over pixels, p = 1 by default as the paper's detector I)
exceeds a threshold set for a chosen false-positive rate on clean validation images, and a
**reformer** hands the classifier AE(x) instead of x, pulling off-manifold perturbations back.
(The paper's second, probability-divergence detector is not built here.)

Scoring, as the MagNet paper and Carlini & Wagner's reply do: a clean image counts as correct
when it is accepted and classified correctly; an attacked one is defended when it is rejected or
classified correctly.  ``predict`` returns −1 for rejected inputs.

Attacks: ``forward`` is the whole differentiable pipeline f(AE(x)) — a white-box attacker
differentiates through the reformer; :func:`attack` adds the detector to the objective (Carlini &
Wagner, "MagNet and 'Efficient Defenses…' Are Not Robust", 2017) and counts an iterate only if it
is both misclassified and accepted.

Example::

    from preempt.defenses import load_defense
    magnet = load_defense("fmnist-magnet")
    labels = magnet.predict(x)                    # -1: rejected by the detector
    res = attack(magnet, x, y, threat=Linf(0.1))  # adaptive, detector-aware PGD
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..attacks.base import AttackResult
from ..attacks.bpda import bpda
from ..attacks.losses import ce
from ..core.threat import ThreatModel
from ..models.wrapping import Wrapped

REJECTED = -1


def reconstruction_error(x: torch.Tensor, rec: torch.Tensor, p: int = 1) -> torch.Tensor:
    """Per-sample mean |x − rec|^p."""
    return (x - rec).abs().pow(p).flatten(1).mean(1)


def threshold_for_fpr(errors: torch.Tensor, fpr: float) -> float:
    """The smallest threshold that rejects at most a fraction ``fpr`` of ``errors`` (clean images)."""
    if not 0 <= fpr < 1:
        raise ValueError(f"fpr must be in [0, 1), got {fpr}")
    e = errors.detach().flatten().sort().values
    k = int(len(e) * (1 - fpr))  # keep the k smallest: reject those above e[k-1]
    return float(e[max(k - 1, 0)]) if len(e) else float("inf")


class MagNet(Wrapped):
    """Detector + reformer in front of ``classifier``; implements :class:`preempt.models.Model`
    (the logits are the classifier's on the reformed image)."""

    def __init__(self, classifier: Any, autoencoder: nn.Module, *, threshold: float, p: int = 1,
                 card: dict[str, Any] | None = None) -> None:
        super().__init__(classifier, card or {"name": "magnet"})
        self.autoencoder = autoencoder.eval()
        for q in self.autoencoder.parameters():
            q.requires_grad_(False)
        self.threshold, self.p = float(threshold), p

    @property
    def classifier(self) -> Any:
        return self.model

    @property
    def name(self) -> str:
        return str(self.card.get("name", "magnet"))

    def reform(self, x: torch.Tensor) -> torch.Tensor:
        return self.autoencoder(x)

    def error(self, x: torch.Tensor) -> torch.Tensor:
        return reconstruction_error(x, self.reform(x), self.p)

    def detect(self, x: torch.Tensor) -> torch.Tensor:
        """True where the detector rejects x."""
        with torch.no_grad():
            return self.error(x) > self.threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.reform(x))

    def predict(self, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                xb = x[i:i + batch_size]
                rec = self.reform(xb)
                label = self.classifier(rec).argmax(1)
                label[reconstruction_error(xb, rec, self.p) > self.threshold] = REJECTED
                out.append(label)
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=x.device)


def attack(magnet: MagNet, x: torch.Tensor, y: torch.Tensor, *, threat: ThreatModel, steps: int = 50,
           step_size: float | None = None, penalty: float = 10.0, reformer_grad: str = "exact",
           generator: torch.Generator | None = None) -> AttackResult:
    """Detector-aware PGD on MagNet: maximise CE(f(AE(x)), y) − penalty·max(0, err(x) − τ)/τ.

    ``reformer_grad="exact"`` differentiates through the auto-encoder; ``"bpda"`` runs it forward
    and takes the identity backward (BPDA).  Success: some iterate is accepted by the detector
    and misclassified (that iterate is returned)."""
    alpha = threat.eps / 4 if step_size is None else step_size
    x = x.detach()
    if reformer_grad not in ("exact", "bpda"):
        raise ValueError(f"reformer_grad must be 'exact' or 'bpda', got {reformer_grad!r}")
    reform = magnet.reform if reformer_grad == "exact" else bpda(magnet.reform)
    tau = max(magnet.threshold, 1e-12)
    x_adv = threat.random_start(x, generator=generator)
    best, success, passes = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device), 0
    for t in range(steps + 1):
        leaf = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            rec = reform(leaf)
            logits = magnet.classifier(rec)
            err = reconstruction_error(leaf, magnet.reform(leaf) if reformer_grad == "bpda" else rec, magnet.p)
            obj = ce(logits, y) - penalty * torch.relu(err - tau) / tau
        passes += len(x)
        hit = (logits.argmax(1) != y) & (err <= magnet.threshold) & ~success
        best[hit] = leaf.detach()[hit]
        success |= hit
        if t == steps or bool(success.all()):
            break
        (g,) = torch.autograd.grad(obj.sum(), leaf)
        x_adv = threat.project(threat.step(leaf.detach(), g, alpha), x)
    best[~success] = x_adv[~success]
    return AttackResult(best, success, passes, {"attack": f"magnet-pgd-{reformer_grad}", "steps": steps,
                                                "penalty": penalty, "threat": str(threat)})
