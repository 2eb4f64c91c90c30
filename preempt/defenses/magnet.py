"""MagNet (Meng & Chen, "MagNet: a Two-Pronged Defense against Adversarial Examples", CCS 2017).

An auto-encoder trained on clean images serves twice: as **detectors** and as a **reformer**
that hands the classifier AE(x) instead of x, pulling off-manifold perturbations back.  Two
detectors, each thresholded for a chosen false-positive rate on clean validation images:

* ``"recon"`` — the reconstruction error ‖x − AE(x)‖_p (mean over pixels, p = 1 as the paper's
  detector I);
* ``"jsd"`` — the Jensen–Shannon divergence between the classifier's softmax at temperature T on
  x and on AE(x) (the paper's probability-divergence detector, T = 10 and 40 there):
  JSD(P‖Q) = ½ KL(P‖M) + ½ KL(Q‖M), M = ½(P + Q).

An input is rejected when any active detector rejects it (``detectors=`` picks them; default all
that the card calibrates).

Scoring, as the MagNet paper and Carlini & Wagner's reply do: a clean image counts as correct
when it is accepted and classified correctly; an attacked one is defended when it is rejected or
classified correctly.  ``predict`` returns −1 for rejected inputs.

Attacks: ``forward`` is the whole differentiable pipeline f(AE(x)) — a white-box attacker
differentiates through the reformer; :func:`attack` adds the detector to the objective (Carlini &
Wagner, "MagNet and 'Efficient Defenses…' Are Not Robust", 2017) and counts an iterate only if it
is both misclassified and accepted.

Example::

    from preempt.defenses import load_defense
    magnet = load_defense("fmnist-magnet")        # both detectors
    labels = magnet.predict(x)                    # -1: rejected by a detector
    res = attack(magnet, x, y, threat=Linf(0.1))  # adaptive, detector-aware PGD
    res = cw(magnet, x, y)                        # the Carlini-Wagner ℓ2 attack on MagNet
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks.base import AttackResult
from ..attacks.bpda import bpda
from ..attacks.cw import cw_l2
from ..attacks.losses import ce
from ..core.threat import ThreatModel
from ..errors import UsageError
from ..models.wrapping import Wrapped

REJECTED = -1
DETECTORS = ("recon", "jsd")


def reconstruction_error(x: torch.Tensor, rec: torch.Tensor, p: int = 1) -> torch.Tensor:
    """Per-sample mean |x − rec|^p."""
    return (x - rec).abs().pow(p).flatten(1).mean(1)


def threshold_for_fpr(errors: torch.Tensor, fpr: float) -> float:
    """The smallest threshold that rejects at most a fraction ``fpr`` of ``errors`` (clean images)."""
    if not 0 <= fpr < 1:
        raise UsageError(f"fpr must be in [0, 1), got {fpr}")
    e = errors.detach().flatten().sort().values
    k = int(len(e) * (1 - fpr))  # keep the k smallest: reject those above e[k-1]
    return float(e[max(k - 1, 0)]) if len(e) else float("inf")


def js_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-sample Jensen–Shannon divergence (nats) between softmax(logits_p / T) and softmax(logits_q / T)."""
    lp, lq = F.log_softmax(logits_p / temperature, 1), F.log_softmax(logits_q / temperature, 1)
    lm = torch.logsumexp(torch.stack([lp, lq]), 0) - torch.log(torch.tensor(2.0, device=lp.device))
    return 0.5 * ((lp.exp() * (lp - lm)).sum(1) + (lq.exp() * (lq - lm)).sum(1))


class MagNet(Wrapped):
    """Detectors + reformer in front of ``classifier``; implements :class:`preempt.models.Model`
    (the logits are the classifier's on the reformed image).

    ``threshold``/``p``: the reconstruction-error detector; ``jsd``: ``{"temperature": T,
    "threshold": τ}`` for the divergence detector (None: not calibrated); ``detectors``: the
    active ones (default every calibrated one)."""

    def __init__(self, classifier: Any, autoencoder: nn.Module, *, threshold: float, p: int = 1,
                 jsd: dict[str, float] | None = None, detectors: Sequence[str] | None = None,
                 card: dict[str, Any] | None = None) -> None:
        super().__init__(classifier, card or {"name": "magnet"})
        self.autoencoder = autoencoder.eval()
        for q in self.autoencoder.parameters():
            q.requires_grad_(False)
        self.threshold, self.p = float(threshold), p
        self.jsd = dict(jsd) if jsd else None
        calibrated = ("recon",) + (("jsd",) if self.jsd else ())
        self.detectors = tuple(detectors) if detectors is not None else calibrated
        bad = [d for d in self.detectors if d not in calibrated]
        if bad or not self.detectors:
            raise UsageError(f"detectors {list(self.detectors)}: choose one or more of {', '.join(calibrated)}")

    def using(self, *detectors: str) -> MagNet:
        """The same networks with only ``detectors`` active."""
        return MagNet(self.classifier, self.autoencoder, threshold=self.threshold, p=self.p, jsd=self.jsd,
                      detectors=detectors, card=dict(self.card))

    def thresholds(self) -> dict[str, float]:
        """τ of each active detector."""
        return {d: self.threshold if d == "recon" else float(self.jsd["threshold"]) for d in self.detectors}  # type: ignore[index]

    def scores(self, x: torch.Tensor, rec: torch.Tensor | None = None,
               logits_rec: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Each active detector's score (differentiable); ``rec`` = AE(x) and ``logits_rec`` =
        f(AE(x)) are reused when given."""
        rec = self.reform(x) if rec is None else rec
        out = {}
        if "recon" in self.detectors:
            out["recon"] = reconstruction_error(x, rec, self.p)
        if "jsd" in self.detectors:
            assert self.jsd is not None
            lr = self.classifier(rec) if logits_rec is None else logits_rec
            out["jsd"] = js_divergence(self.classifier(x), lr, float(self.jsd["temperature"]))
        return out

    def rejected(self, scores: dict[str, torch.Tensor]) -> torch.Tensor:
        """True where any detector's score is above its threshold."""
        tau = self.thresholds()
        return torch.stack([scores[d] > tau[d] for d in self.detectors]).any(0)

    def excess(self, scores: dict[str, torch.Tensor]) -> torch.Tensor:
        """Σ over active detectors of max(0, D(x) − τ)/τ: the detector hinge of the adaptive attacks."""
        tau = self.thresholds()
        return sum(torch.relu(scores[d] - tau[d]) / max(tau[d], 1e-12) for d in self.detectors)  # type: ignore[return-value]

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

    def detect(self, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """True where an active detector rejects x."""
        with torch.no_grad():
            out = [self.rejected(self.scores(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool, device=x.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.reform(x))

    def predict(self, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                xb = x[i:i + batch_size]
                rec = self.reform(xb)
                logits = self.classifier(rec)
                label = logits.argmax(1)
                label[self.rejected(self.scores(xb, rec, logits))] = REJECTED
                out.append(label)
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=x.device)


def attack(magnet: MagNet, x: torch.Tensor, y: torch.Tensor, *, threat: ThreatModel, steps: int = 50,
           step_size: float | None = None, penalty: float = 10.0, reformer_grad: str = "exact",
           generator: torch.Generator | None = None) -> AttackResult:
    """Detector-aware PGD on MagNet: maximise CE(f(AE(x)), y) − penalty·Σ_d max(0, D(x) − τ_d)/τ_d
    over the active detectors d.

    ``reformer_grad="exact"`` differentiates through the auto-encoder; ``"bpda"`` runs it forward
    and takes the identity backward (BPDA) on the classifier's path (the detectors' scores stay
    exact).  Success: some iterate is accepted by every detector and misclassified (that iterate
    is returned)."""
    alpha = threat.eps / 4 if step_size is None else step_size
    x = x.detach()
    if reformer_grad not in ("exact", "bpda"):
        raise UsageError(f"reformer_grad must be 'exact' or 'bpda', got {reformer_grad!r}")
    reform = magnet.reform if reformer_grad == "exact" else bpda(magnet.reform)
    x_adv = threat.random_start(x, generator=generator)
    best, success, passes = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device), 0
    per_pass = 1 + ("jsd" in magnet.detectors)
    for t in range(steps + 1):
        leaf = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            rec = reform(leaf)
            logits = magnet.classifier(rec)
            exact = magnet.reform(leaf) if reformer_grad == "bpda" else rec
            scores = magnet.scores(leaf, exact, logits if reformer_grad == "exact" else None)
            obj = ce(logits, y) - penalty * magnet.excess(scores)
        passes += per_pass * len(x)
        hit = (logits.argmax(1) != y) & ~magnet.rejected({k: v.detach() for k, v in scores.items()}) & ~success
        best[hit] = leaf.detach()[hit]
        success |= hit
        if t == steps or bool(success.all()):
            break
        (g,) = torch.autograd.grad(obj.sum(), leaf)
        x_adv = threat.project(threat.step(leaf.detach(), g, alpha), x)
    best[~success] = x_adv[~success]
    return AttackResult(best, success, passes, {"attack": f"magnet-pgd-{reformer_grad}", "steps": steps,
                                                "penalty": penalty, "threat": str(threat),
                                                "detectors": list(magnet.detectors)})


def cw(magnet: MagNet, x: torch.Tensor, y: torch.Tensor, *, threat: ThreatModel | None = None,
       confidence: float = 0.0, detector_weight: float = 10.0, binary_steps: int = 6, steps: int = 200,
       lr: float = 0.01, initial_c: float = 1.0, generator: torch.Generator | None = None) -> AttackResult:
    """The Carlini–Wagner attack on MagNet (Carlini & Wagner, "MagNet and 'Efficient Defenses
    Against Adversarial Attacks' are Not Robust to Adversarial Examples", 2017), as the lecture
    writes it: minimise ‖x′ − x‖₂² + c·L_c(x′) + d·L_d(x′) with L_c the CW margin
    max(Z_y − max_{j≠y} Z_j, −κ) of the classifier on the reformed input AE(x′) and
    L_d = Σ_detectors max(D(x′) − τ, 0)/τ, binary search on c (d = ``detector_weight`` fixed).

    A point counts as broken by the smallest x′ found that is misclassified on AE(x′) *and*
    accepted by every active detector; ``threat`` (an ℓ∞ ball) confines x′ to it, for accuracy at
    a table's ℓ∞ budget.  ``info["l2"]`` holds ‖x′ − x‖₂ per point (inf where none was found)."""
    last: dict[str, torch.Tensor] = {}  # the scores penalty computed for this step's iterate

    def penalty(xa: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        scores = magnet.scores(xa, logits_rec=logits)
        last.clear()
        last.update({k: v.detach() for k, v in scores.items()})
        return detector_weight * magnet.excess(scores)

    def accept(xa: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return ~magnet.rejected(last)  # cw_l2 asks after penalty, of the same iterate: no second AE pass

    res = cw_l2(magnet, x, y, threat=threat, confidence=confidence, binary_steps=binary_steps, steps=steps, lr=lr,
                initial_c=initial_c, penalty=penalty, accept=accept, generator=generator)
    res.passes *= 1 + ("jsd" in magnet.detectors)
    res.info.update(attack="magnet-cw", detectors=list(magnet.detectors), detector_weight=detector_weight)
    return res
