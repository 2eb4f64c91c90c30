"""``preempt bench defenses``: the defenses of the literature and preemptive robustification,
measured side by side on the same Fashion-MNIST test images at the same ℓ∞ ε.

Rows (each a bundled model or defense, see ``weights/TRAIN.sh``):

==============  ===========================================================================
standard        ``fmnist-standard``, no defense
magnet          MagNet: detector + reformer auto-encoder in front of ``fmnist-standard``
defense-gan     Defense-GAN: projection onto a GAN's range in front of ``fmnist-standard``
pgd-at          ``fmnist-linf-pgdat`` (Madry et al.)
fast-at         ``fmnist-linf-fastat`` (Wong et al.)
smoothing       ``fmnist-gaussian-0.25`` smoothed with σ = 0.25 (Cohen et al.)
adv-ours        ``fmnist-linf-pgdat`` on images robustified against it (δ = ε)
ours-ours       ``fmnist-linf-preempt-d3`` on images robustified against it (δ = ε)
==============  ===========================================================================

Columns: clean accuracy (true labels), accuracy under a **non-adaptive** attack (PGD-20 crafted on
the undefended classifier and handed to the defense, the threat model MagNet and Defense-GAN
report) and under **adaptive** attacks, the worst case per image over every attack run on that
row (for the preprocessing defenses BPDA/EOT/detector-aware PGD; for classifiers APGD-CE and
APGD-T; for robustified images preempt's robustification-aware attack too), then training
cost, inference cost and robustification cost per image.  A row whose adaptive column is empty
was evaluated with a non-adaptive attack only, and the report says so.

Every row is stored in the JSON as soon as it is done, with what it depends on (model and
defense sha256, n, ε, seed, settings); a rerun keeps a stored row whose dependencies are
unchanged and computes the rest, so an interrupted run resumes.
"""
from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..attacks import adaptive, apgd, apgd_targeted, pgd
from ..attacks.base import Survivors
from ..attacks.bpda import BPDA
from ..core.threat import Linf, ThreatModel
from ..models import load_model

ROWS: dict[str, str] = {
    "standard": "Standard model", "magnet": "MagNet", "defense-gan": "Defense-GAN", "pgd-at": "PGD-AT",
    "fast-at": "Fast-AT", "smoothing": "Randomized smoothing", "adv-ours": "ADV / Ours", "ours-ours": "Ours / Ours",
}
MODELS = {"standard": "fmnist-standard", "pgd-at": "fmnist-linf-pgdat", "fast-at": "fmnist-linf-fastat",
          "smoothing": "fmnist-gaussian-0.25", "adv-ours": "fmnist-linf-pgdat", "ours-ours": "fmnist-linf-preempt-d3"}
DEFENSES = {"magnet": "fmnist-magnet", "defense-gan": "fmnist-defense-gan"}


@dataclass
class BenchConfig:
    n: int = 1000
    eps: float = 0.1
    seed: int = 0
    sigma: float = 0.25            # smoothing noise
    smooth_n: int = 100            # smoothing: noise draws per prediction (majority vote)
    certify_n0: int = 100          # smoothing CERTIFY
    certify_n: int = 500
    certify_alpha: float = 0.001
    eot: int = 8                   # smoothing: noise draws per gradient of the adaptive PGD
    apgd_targets: int = 3
    batch: int = 250


@dataclass
class Row:
    key: str
    name: str
    model: str
    n: int
    clean: float
    non_adaptive: float
    non_adaptive_attack: str
    adaptive: float | None
    adaptive_attack: str | None
    per_attack: dict[str, float] = field(default_factory=dict)   # accuracy after each attack, in order
    certified: float | None = None
    train_s: float | None = None
    inference_ms: float = 0.0
    robustify_ms: float | None = None
    robustify_passes: float | None = None
    seconds: float = 0.0
    depends: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _chunks(n: int, bs: int):
    return [slice(i, min(i + bs, n)) for i in range(0, n, bs)]


def _timed_predict(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, bs: int) -> tuple[torch.Tensor, float]:
    predict(x[:2])  # warm-up: the first call of a model pays for allocations and kernel choices
    t0 = time.perf_counter()
    out = torch.cat([predict(x[s]) for s in _chunks(len(x), bs)])
    return out, 1000 * (time.perf_counter() - t0) / max(len(x), 1)


def _pgd20(model, x, y, threat, gen, bs):
    return torch.cat([pgd(model, x[s], y[s], threat=threat, steps=20, generator=gen).x_adv for s in _chunks(len(x), bs)])


class _Worst(Survivors):
    """Worst case per image over a sequence of attacks, each run on the images still robust, with
    the accuracy after each."""

    def __init__(self, ok: torch.Tensor) -> None:
        super().__init__(ok)
        self.after: dict[str, float] = {"clean": self.acc}

    def run(self, name: str, attack: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """``attack(idx) -> still_ok`` (bool per index) on the indices still robust."""
        self.attack_mask(name, lambda idx: ~attack(idx))
        self.after[name] = self.acc

    @property
    def acc(self) -> float:
        return self.robust.float().mean().item()


def _classifier_attacks(w: _Worst, model, x, y, threat, gen, cfg: BenchConfig, *, robustified: bool) -> None:
    """APGD-CE, APGD-T (and on robustified images preempt's robustification-aware attack)."""
    def batched(fn):
        return lambda idx: torch.cat([~fn(x[idx[s]], y[idx[s]]).success for s in _chunks(len(idx), cfg.batch)])

    if robustified:
        w.run("adaptive (undo + PGD)", batched(lambda a, b: adaptive(model, a, b, threat=threat, generator=gen)))
    w.run("apgd-ce", batched(lambda a, b: apgd(model, a, b, threat=threat, loss="ce", generator=gen)))
    w.run(f"apgd-t ({cfg.apgd_targets} targets)", batched(
        lambda a, b: apgd_targeted(model, a, b, threat=threat, n_targets=cfg.apgd_targets, generator=gen)))


def _card_train_s(card: Mapping[str, Any]) -> float | None:
    t = (card.get("training") or {}).get("wall_time_s")
    return float(t) if t is not None else None


def _row_classifier(key: str, x, y, threat: ThreatModel, cfg: BenchConfig, gen) -> Row:
    from ..core.robustify import RobustifyConfig, robustify

    model = load_model(MODELS[key])
    robust = key.endswith("-ours")
    rob_ms = rob_passes = None
    if robust:
        rcfg = RobustifyConfig(norm="linf", eps=cfg.eps, delta=cfg.eps, seed=cfg.seed)
        model.passes = 0
        t0 = time.perf_counter()
        x = torch.cat([robustify(model, x[s], config=rcfg).x for s in _chunks(len(x), cfg.batch)])
        rob_ms, rob_passes = 1000 * (time.perf_counter() - t0) / len(x), model.passes / len(x)
    pred, inf_ms = _timed_predict(model.predict, x, cfg.batch)
    w = _Worst(pred == y)
    w.run("pgd-20", lambda idx: model.predict(_pgd20(model, x[idx], y[idx], threat, gen, cfg.batch)) == y[idx])
    non_adaptive = w.acc
    _classifier_attacks(w, model, x, y, threat, gen, cfg, robustified=robust)
    names = ["PGD-20"] + (["robustification-aware (undo + PGD)"] if robust else []) + ["APGD-CE", f"APGD-T ({cfg.apgd_targets})"]
    return Row(key, ROWS[key], model.name, len(x), w.after["clean"], non_adaptive, "PGD-20 (white-box: no defense to adapt to)"
               if not robust else "PGD-20 on the robustified images", w.acc, " + ".join(names), w.after,
               train_s=_card_train_s(model.card), inference_ms=inf_ms, robustify_ms=rob_ms, robustify_passes=rob_passes,
               depends={"model": model.card.get("sha256")})


def _in_front(defense, x, y, threat: ThreatModel, cfg: BenchConfig, gen,
              defended: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> tuple[_Worst, float, float]:
    """What both preprocessing defenses share: clean accuracy (timed), then the non-adaptive attack
    (PGD-20 on the undefended classifier, judged by ``defended(x_adv, y)``); returns the running
    worst case, the inference ms per image and the training seconds (defense + classifier)."""
    clf = defense.classifier
    pred, inf_ms = _timed_predict(defense.predict, x, cfg.batch)
    w = _Worst(pred == y)
    w.run("pgd-20 on the classifier (non-adaptive)",
          lambda idx: defended(_pgd20(clf, x[idx], y[idx], threat, gen, cfg.batch), y[idx]))
    train_s = sum(v for v in (_card_train_s(defense.card), _card_train_s(clf.card)) if v is not None)
    return w, inf_ms, train_s


def _row_magnet(x, y, threat: ThreatModel, cfg: BenchConfig, gen) -> Row:
    from ..defenses import MagNet, load_defense
    from ..defenses.magnet import REJECTED
    from ..defenses.magnet import attack as magnet_attack

    mg = load_defense(DEFENSES["magnet"])
    assert isinstance(mg, MagNet)
    clf = mg.classifier

    def defended(xa, yy):
        p = mg.predict(xa)
        return (p == yy) | (p == REJECTED)

    w, inf_ms, train_s = _in_front(mg, x, y, threat, cfg, gen, defended)
    non_adaptive = w.acc
    variants: tuple[tuple[str, dict[str, Any]], ...] = (
        ("pgd-50 through the reformer (ignores the detector)", {"penalty": 0.0}),
        ("pgd-50 through the reformer + detector penalty", {"penalty": 10.0}),
        ("bpda pgd-50 (identity reformer) + detector penalty", {"penalty": 10.0, "reformer_grad": "bpda"}))
    for label, kw in variants:
        def adaptive_attack(idx: torch.Tensor, kw: dict[str, Any] = kw) -> torch.Tensor:
            return torch.cat([defended(magnet_attack(mg, x[idx[s]], y[idx[s]], threat=threat, generator=gen, **kw).x_adv,
                                       y[idx[s]]) for s in _chunks(len(idx), cfg.batch)])

        w.run(label, adaptive_attack)
    det = mg.card["detector"]
    fpr = (mg.detect(x).float().mean().item())
    return Row("magnet", ROWS["magnet"], mg.name, len(x), w.after["clean"], non_adaptive,
               "PGD-20 on the undefended classifier, then MagNet", w.acc,
               "PGD-50 through the reformer (with and without the detector in the loss) and BPDA PGD-50", w.after,
               train_s=train_s, inference_ms=inf_ms,
               depends={"defense": mg.card.get("sha256"), "classifier": clf.card.get("sha256")},
               notes=[f"detector: ℓ1 reconstruction error > {det['threshold']:.4f} (set for {100 * det['fpr']:g}% false "
                      f"positives on {det['n_val']} held-out training images); it rejects {100 * fpr:.1f}% of these clean "
                      "test images, counted as errors in the clean column; an attacked image counts as defended when it is "
                      "rejected or classified correctly"])


def _row_defense_gan(x, y, threat: ThreatModel, cfg: BenchConfig, gen) -> Row:
    from ..defenses import DefenseGAN, load_defense

    dg = load_defense(DEFENSES["defense-gan"])
    assert isinstance(dg, DefenseGAN)
    clf = dg.classifier
    w, inf_ms, train_s = _in_front(dg, x, y, threat, cfg, gen, lambda xa, yy: dg.predict(xa) == yy)
    non_adaptive = w.acc
    attacked = BPDA(clf, lambda v: dg.project(v)[0])
    w.run("bpda pgd-20 (identity projection backward)",
          lambda idx: dg.predict(_pgd20(attacked, x[idx], y[idx], threat, gen, cfg.batch)) == y[idx])
    lin = dg.linearized()
    w.run("bpda pgd-20 (linearized projection backward)",
          lambda idx: dg.predict(_pgd20(lin, x[idx], y[idx], threat, gen, cfg.batch)) == y[idx])
    w.run("bpda apgd-dlr-50 (linearized projection backward)", lambda idx: dg.predict(torch.cat([
        apgd(lin, x[idx[s]], y[idx[s]], threat=threat, steps=50, loss="dlr", generator=gen).x_adv
        for s in _chunks(len(idx), cfg.batch)])) == y[idx])
    return Row("defense-gan", ROWS["defense-gan"], dg.name, len(x), w.after["clean"], non_adaptive,
               "PGD-20 on the undefended classifier, then Defense-GAN", w.acc,
               "BPDA PGD-20 (projection forward, identity backward), then BPDA PGD-20 and APGD-DLR-50 with the "
               "projection's linearized (Gauss–Newton) backward", w.after, train_s=train_s, inference_ms=inf_ms,
               depends={"defense": dg.card.get("sha256"), "classifier": clf.card.get("sha256"),
                        "steps": dg.steps, "restarts": dg.restarts},
               notes=[f"projection: {dg.steps} Adam steps (lr {dg.lr:g}) from each of {dg.restarts} random z, the best "
                      "kept; every prediction, also of attacked images, draws new restarts",
                      "linearized backward: ∂G(z*)/∂x ≈ J(JᵀJ + λI)⁻¹Jᵀ with J = ∂G/∂z at z* (implicit function theorem, "
                      "Gauss–Newton); the identity is a poor approximation here because G(z*) is far from x (mean ℓ∞ 0.75)"])


def _row_smoothing(x, y, threat: ThreatModel, cfg: BenchConfig, gen) -> Row:
    from ..defenses.smoothing import Smoothed, certify

    base = load_model(MODELS["smoothing"])
    ngen = torch.Generator().manual_seed(cfg.seed + 7)

    def vote(xb):  # majority vote of smooth_n noisy predictions
        with torch.inference_mode():
            counts = torch.zeros(len(xb), 10, dtype=torch.long)
            for _ in range(cfg.smooth_n):
                p = base(xb + cfg.sigma * torch.randn(xb.shape, generator=ngen)).argmax(1)
                counts[torch.arange(len(xb)), p] += 1
        return counts.argmax(1)

    pred, inf_ms = _timed_predict(vote, x, cfg.batch)
    w = _Worst(pred == y)
    w.run("pgd-20 on the base classifier (non-adaptive)",
          lambda idx: vote(_pgd20(base, x[idx], y[idx], threat, gen, cfg.batch)) == y[idx])
    non_adaptive = w.acc
    smoothed = Smoothed(base, cfg.sigma, samples=cfg.eot, generator=ngen)
    w.run(f"pgd-20 on the smoothed classifier (EOT {cfg.eot})",
          lambda idx: vote(_pgd20(smoothed, x[idx], y[idx], threat, gen, cfg.batch)) == y[idx])
    radii = []
    for i in range(len(x)):
        c = certify(base, x[i], sigma=cfg.sigma, n0=cfg.certify_n0, n=cfg.certify_n, alpha=cfg.certify_alpha,
                    batch=cfg.certify_n, num_classes=10, generator=ngen)
        radii.append(c.radius if c.prediction == int(y[i]) else -1.0)
    r = torch.tensor(radii)
    need = cfg.eps * math.sqrt(x[0].numel())  # the ℓ2 ball that holds the ℓ∞ ball
    cert = {f"{v:g}": (r >= v).float().mean().item() for v in (0.25, 0.5, 1.0)}
    rmax = cfg.sigma * float(torch.special.ndtri(torch.tensor(cfg.certify_alpha ** (1 / cfg.certify_n), dtype=torch.float64)))
    return Row("smoothing", ROWS["smoothing"], f"{base.name} σ={cfg.sigma:g}", len(x), w.after["clean"], non_adaptive,
               "PGD-20 on the base classifier, then the smoothed prediction", w.acc,
               f"PGD-20 on the smoothed classifier (expected softmax over {cfg.eot} draws)", w.after,
               certified=(r >= need).float().mean().item(), train_s=_card_train_s(base.card), inference_ms=inf_ms,
               depends={"model": base.card.get("sha256"), "sigma": cfg.sigma},
               notes=[f"prediction: majority vote of {cfg.smooth_n} noisy copies; CERTIFY (Cohen et al.) with n0 = "
                      f"{cfg.certify_n0}, n = {cfg.certify_n}, α = {cfg.certify_alpha:g}: ℓ∞ ε = {cfg.eps:g} is certified "
                      f"through the ℓ2 ball of radius ε·√d = {need:.2f} that holds it, beyond the largest radius these "
                      f"settings can certify ({rmax:.2f}), so its certified accuracy at ε is "
                      f"{100 * (r >= need).float().mean().item():.1f}%; "
                      "certified ℓ2 accuracy at radius " + ", ".join(f"{k}: {100 * v:.1f}%" for k, v in cert.items())])


_RUNNERS: dict[str, Callable[..., Row]] = {
    "standard": lambda x, y, t, c, g: _row_classifier("standard", x, y, t, c, g),
    "pgd-at": lambda x, y, t, c, g: _row_classifier("pgd-at", x, y, t, c, g),
    "fast-at": lambda x, y, t, c, g: _row_classifier("fast-at", x, y, t, c, g),
    "adv-ours": lambda x, y, t, c, g: _row_classifier("adv-ours", x, y, t, c, g),
    "ours-ours": lambda x, y, t, c, g: _row_classifier("ours-ours", x, y, t, c, g),
    "magnet": _row_magnet, "defense-gan": _row_defense_gan, "smoothing": _row_smoothing,
}


def _depends(key: str) -> dict[str, Any]:
    """What a stored row depends on, read from the cards (cheap: no model is built)."""
    from ..models.registry import bundled, bundled_defenses

    if key in DEFENSES:
        d = bundled_defenses().get(DEFENSES[key])
        return {"defense": d.card.get("sha256") if d else None}
    m = bundled().get(MODELS[key])
    return {"model": m.card.get("sha256") if m else None}


def run(rows: list[str] | None = None, *, out: str | Path = "defenses", config: BenchConfig | None = None,
        data: str | None = None, force: bool = False, on_row: Callable[[Row], None] | None = None) -> dict[str, Any]:
    """Measure ``rows`` (default all), keeping stored rows of ``out``.json whose dependencies and
    settings are unchanged unless ``force``; writes ``out``.json/.md (and .png when matplotlib is
    installed) after every row.  Returns the document."""
    from ..data import fashion_mnist

    cfg = config or BenchConfig()
    rows = rows or list(ROWS)
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise ValueError(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    out = Path(out)
    js = out.with_suffix(".json")
    doc: dict[str, Any] = json.loads(js.read_text()) if js.exists() else {}
    if doc.get("config") != asdict(cfg):
        doc = {"config": asdict(cfg), "rows": {}}
    doc.update(machine=f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
               norm="linf", eps=cfg.eps)
    x, y = fashion_mnist("test", data)
    x, y = x[:cfg.n], y[:cfg.n]
    threat = Linf(cfg.eps)
    for key in rows:
        stored = doc["rows"].get(key)
        if stored and not force and all(stored["depends"].get(k) == v for k, v in _depends(key).items()):
            continue
        gen = torch.Generator().manual_seed(cfg.seed + 100)
        t0 = time.perf_counter()
        row = _RUNNERS[key](x, y, threat, cfg, gen)
        row.seconds = time.perf_counter() - t0
        doc["rows"][key] = asdict(row)
        _write(doc, out)
        if on_row:
            on_row(row)
    _write(doc, out)
    return doc


def _write(doc: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(doc, indent=2) + "\n"), (".md", render(doc))):
        tmp = out.with_suffix(suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out.with_suffix(suffix))
    plot(doc, out.with_suffix(".png"))


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _cost(v: float | None, unit: str = "ms") -> str:
    if v is None:
        return "–"
    if unit == "s":
        return f"{v / 60:.0f} min" if v >= 600 else f"{v:.0f} s"
    return f"{v:.1f} ms" if v < 100 else f"{v:.0f} ms"


def render(doc: dict[str, Any]) -> str:
    cfg = doc["config"]
    md = ["# Defenses side by side on Fashion-MNIST", "",
          f"`preempt bench defenses` — the first {cfg['n']} test images, true labels, ℓ∞ ε = {cfg['eps']:g}, seed "
          f"{cfg['seed']}, {doc.get('machine', '')}. Accuracy in %. *Non-adaptive*: the attack the defense's paper "
          "reports (PGD-20 crafted without knowing the defense). *Adaptive*: the worst case per image over every "
          "attack of the row, the non-adaptive one included. Costs: training wall time (the defense's networks and "
          "its classifier), inference and robustification per image, measured in this run on this machine.", "",
          "| Defense | Model | Clean | Non-adaptive | Adaptive | Certified | Training | Inference / img | "
          "Robustify / img |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows = doc["rows"]
    for key in ROWS:
        if key not in rows:
            continue
        r = rows[key]
        rob = "–" if r["robustify_ms"] is None else f"{_cost(r['robustify_ms'])} ({r['robustify_passes']:.0f} passes)"
        md.append(f"| {r['name']} | `{r['model']}` | {_pct(r['clean'])} | {_pct(r['non_adaptive'])} | "
                  f"{_pct(r['adaptive']) if r['adaptive'] is not None else 'not evaluated'} | {_pct(r['certified'])} | "
                  f"{_cost(r['train_s'], 's')} | {_cost(r['inference_ms'])} | {rob} |")
    md += ["", "## What each row ran", ""]
    for key in ROWS:
        if key not in rows:
            continue
        r = rows[key]
        after = ", ".join(f"{k} {_pct(v)}" for k, v in r["per_attack"].items())
        line = f"- **{r['name']}**: non-adaptive = {r['non_adaptive_attack']}; "
        line += (f"adaptive = {r['adaptive_attack']}." if r["adaptive"] is not None
                 else "**evaluated only with a non-adaptive attack**.")
        md.append(line + f" Accuracy after each attack: {after}. ({r['seconds']:.0f} s)")
        md += [f"  - {n}" for n in r.get("notes", [])]
    md.append("")
    return "\n".join(md) + "\n"


def plot(doc: dict[str, Any], path: Path) -> bool:
    """Clean, non-adaptive and adaptive accuracy against the per-image cost at use (inference +
    robustification) and against the training cost, one panel each."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
        from matplotlib.ticker import FuncFormatter, NullFormatter
    except ImportError:
        return False
    rows = [r for k, r in doc["rows"].items() if k in ROWS]
    if not rows:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), dpi=110, sharey=True)
    costs = {"at use: inference + robustification per image (ms)":
             lambda r: r["inference_ms"] + (r["robustify_ms"] or 0.0),
             "training: the defense's networks and its classifier (min)":
             lambda r: max((r["train_s"] or 0.0) / 60, 0.1)}
    for ax, (label, cost_of) in zip(axes, costs.items()):
        label_y: list[tuple[float, float]] = []  # (cost, y) of the labels placed so far
        for r in sorted(rows, key=lambda r: (r["adaptive"] if r["adaptive"] is not None else r["non_adaptive"])):
            cost = cost_of(r)
            adv = r["adaptive"] if r["adaptive"] is not None else r["non_adaptive"]
            ax.plot([cost, cost], [100 * adv, 100 * r["clean"]], color="0.8", zorder=1)
            ax.scatter([cost], [100 * r["clean"]], marker="o", color="tab:blue", zorder=2)
            ax.scatter([cost], [100 * r["non_adaptive"]], marker="^", color="tab:orange", zorder=2)
            ax.scatter([cost], [100 * adv], marker="x", color="tab:red", zorder=3)
            # labels of rows with close costs are pushed up until they are 6 points apart
            y = 100 * adv
            for c, ly in sorted(label_y, key=lambda t: t[1]):
                if 0.5 < cost / c < 2 and abs(y - ly) < 6:
                    y = ly + 6
            label_y.append((cost, y))
            ax.annotate(r["name"], (cost, 100 * adv), xytext=(cost * 1.25, y - 1.5), fontsize=8,
                        arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5})
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"cost {label}, log scale")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[0].set_ylim(-5, 100)
    axes[0].legend(handles=[Line2D([], [], marker="o", ls="", color="tab:blue", label="clean"),
                            Line2D([], [], marker="^", ls="", color="tab:orange", label="non-adaptive attack"),
                            Line2D([], [], marker="x", ls="", color="tab:red", label="adaptive attack")],
                   loc="lower right", fontsize=8)
    fig.suptitle(f"Fashion-MNIST, ℓ∞ ε = {doc['config']['eps']:g}, {doc['config']['n']} test images "
                 "(labels at the adaptive-attack point)")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return True
