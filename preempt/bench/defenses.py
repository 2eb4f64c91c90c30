"""``preempt bench defenses``: the defenses of the literature and preemptive robustification,
measured side by side on the same Fashion-MNIST test images at the same ℓ∞ ε.

Rows (each a bundled model or defense, see ``weights/TRAIN.sh``):

==============  ===========================================================================
standard        ``fmnist-standard``, no defense
magnet          MagNet: reconstruction-error detector + reformer auto-encoder in front of ``fmnist-standard``
magnet-jsd      MagNet with its divergence (JSD) detector instead
magnet-both     MagNet with both detectors (rejected when either rejects)
defense-gan     Defense-GAN: projection onto a GAN's range in front of ``fmnist-standard``
pgd-at          ``fmnist-linf-pgdat`` (Madry et al.)
fast-at         ``fmnist-linf-fastat`` (Wong et al.)
pgd-at-d        ``fmnist-linf-pgdat-d6k``: PGD-AT on a labelled 10% D (6,000 images) alone
rst             ``fmnist-linf-pgdat-rst``: PGD-AT on D ∪ D̃, D̃ the other 52,000 images pseudo-labelled
                by a standard model trained on D (Carmon et al. 2019, Uesato et al. 2019)
smoothing       ``fmnist-gaussian-0.25`` smoothed with σ = 0.25 (Cohen et al.)
adv-ours        ``fmnist-linf-pgdat`` on images robustified against it (δ = ε)
ours-ours       ``fmnist-linf-preempt-d3`` on images robustified against it (δ = ε)
rst-ours        ``fmnist-linf-pgdat-rst`` on images robustified against it (δ = ε)
==============  ===========================================================================

The MagNet rows also run the Carlini–Wagner ℓ2 attack on MagNet (detector hinge in the loss,
binary search on c): inside the ℓ∞ ball as one more adaptive attack, and unbounded, for its
success rate and median ℓ2 distortion beside PGD-50's (``extra`` in the JSON).

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
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..attacks import apgd
from ..attacks.bpda import BPDA
from ..core.threat import ThreatModel, threat_model
from ..errors import UsageError
from ..models import load_model
from .defenses_base import (
    DEFENSES,
    MAGNET_DETECTORS,
    ROW_VERSION,
    BenchConfig,
    Row,
    Worst,
    card_train_s,
    chunks,
    classifier_attacks,
    model_for,
    pgd20,
    rows_for,
    timed_predict,
)
from .defenses_report import NO_L2, ROWS, ball_name, write


def _row_classifier(key: str, x, y, threat: ThreatModel, cfg: BenchConfig, gen) -> Row:
    from ..algorithms.robustify import RobustifyConfig, robustify

    model = load_model(model_for(key, cfg.norm))
    robust = key.endswith("-ours")
    rob_ms = rob_passes = None
    if robust:
        # the table measures robust accuracy itself, on every output: no final verdict needed for its claims
        rcfg = RobustifyConfig(norm=cfg.norm, eps=cfg.eps, delta=cfg.eps, seed=cfg.seed, final=None)
        model.passes = 0
        t0 = time.perf_counter()
        x = torch.cat([robustify(model, x[s], config=rcfg).x for s in chunks(len(x), cfg.batch)])
        rob_ms, rob_passes = 1000 * (time.perf_counter() - t0) / len(x), model.passes / len(x)
    pred, inf_ms = timed_predict(model.predict, x, cfg.batch)
    w = Worst(pred == y)
    w.run("pgd-20", lambda idx: model.predict(pgd20(model, x[idx], y[idx], threat, gen, cfg.batch)) == y[idx])
    non_adaptive = w.acc
    classifier_attacks(w, model, x, y, threat, gen, cfg, robustified=robust)
    names = ["PGD-20"] + (["robustification-aware (undo + PGD)"] if robust else []) + ["APGD-CE", f"APGD-T ({cfg.apgd_targets})"]
    return Row(key, ROWS[key], model.name, len(x), w.after["clean"], non_adaptive, "PGD-20 (white-box: no defense to adapt to)"
               if not robust else "PGD-20 on the robustified images", w.acc, " + ".join(names), w.after,
               train_s=card_train_s(model.card), inference_ms=inf_ms, robustify_ms=rob_ms, robustify_passes=rob_passes,
               depends={"model": model.card.get("sha256")})


def _in_front(defense, x, y, threat: ThreatModel, cfg: BenchConfig, gen,
              defended: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> tuple[Worst, float, float]:
    """What both preprocessing defenses share: clean accuracy (timed), then the non-adaptive attack
    (PGD-20 on the undefended classifier, judged by ``defended(x_adv, y)``); returns the running
    worst case, the inference ms per image and the training seconds (defense + classifier)."""
    clf = defense.classifier
    pred, inf_ms = timed_predict(defense.predict, x, cfg.batch)
    w = Worst(pred == y)
    w.run("pgd-20 on the classifier (non-adaptive)",
          lambda idx: defended(pgd20(clf, x[idx], y[idx], threat, gen, cfg.batch), y[idx]))
    train_s = sum(v for v in (card_train_s(defense.card), card_train_s(clf.card)) if v is not None)
    return w, inf_ms, train_s


def _row_magnet(key: str, x, y, threat: ThreatModel, cfg: BenchConfig, gen) -> Row:
    from ..defenses import MagNet, load_defense
    from ..defenses.magnet import REJECTED
    from ..defenses.magnet import attack as magnet_attack
    from ..defenses.magnet import cw as magnet_cw

    mg = load_defense(DEFENSES[key], detectors=MAGNET_DETECTORS[key])
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
                                       y[idx[s]]) for s in chunks(len(idx), cfg.batch)])

        w.run(label, adaptive_attack)
    cw_kw: dict[str, Any] = {"steps": cfg.cw_steps, "binary_steps": cfg.cw_binary_steps}
    if cfg.norm == "linf":
        w.run(f"cw-l2 inside the l-inf ball + detector hinge ({cfg.cw_binary_steps}x{cfg.cw_steps} steps)",
              lambda idx: torch.cat([defended(magnet_cw(mg, x[idx[s]], y[idx[s]], threat=threat, **cw_kw).x_adv,
                                              y[idx[s]]) for s in chunks(len(idx), 2 * cfg.batch)]))
    else:  # ℓ2: the unbounded CW's point counts where it lies inside the ε-ball
        def cw_within(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            xa = magnet_cw(mg, a, b, **cw_kw).x_adv
            return defended(xa, b) | ((xa - a).flatten(1).norm(dim=1) > cfg.eps + 1e-6)
        w.run(f"cw-l2 + detector hinge, within l2 eps ({cfg.cw_binary_steps}x{cfg.cw_steps} steps)",
              lambda idx: torch.cat([cw_within(x[idx[s]], y[idx[s]]) for s in chunks(len(idx), 2 * cfg.batch)]))
    extra = _magnet_distortion(mg, x[:cfg.cw_n], y[:cfg.cw_n], threat, cfg, gen, defended, cw_kw)
    tau = mg.thresholds()
    fpr = mg.detect(x).float().mean().item()
    det: dict[str, Any] = dict(mg.card["detector"])
    jsd: dict[str, Any] = dict(mg.card.get("jsd_detector") or {})  # type: ignore[call-overload]
    described = {"recon": f"ℓ1 reconstruction error > {tau['recon']:.4f}" if "recon" in tau else "",
                 "jsd": f"JSD of the softmax at T = {jsd.get('temperature', 0):g} on x and AE(x) > {tau['jsd']:.3g}"
                 if "jsd" in tau else ""}
    return Row(key, ROWS[key], f"{mg.name} ({' + '.join(mg.detectors)})", len(x), w.after["clean"], non_adaptive,
               "PGD-20 on the undefended classifier, then MagNet", w.acc,
               "PGD-50 through the reformer (with and without the detector in the loss), BPDA PGD-50 and CW-ℓ2 on "
               + ("MagNet inside the ℓ∞ ball" if cfg.norm == "linf" else "MagNet (its points within ε)"), w.after,
               train_s=train_s, inference_ms=inf_ms, extra=extra,
               depends=_depends(key, cfg.norm) | {"classifier": clf.card.get("sha256")},
               notes=[f"detector(s): {'; '.join(described[d] for d in mg.detectors)} (each set for "
                      f"{100 * det['fpr']:g}% false positives on {det['n_val']} held-out training images); together "
                      f"they reject {100 * fpr:.1f}% of these clean test images, counted as errors in the clean column; "
                      "an attacked image counts as defended when it is rejected or classified correctly",
                      _distortion_note(extra, cfg)])


def _magnet_distortion(mg, x, y, threat: ThreatModel, cfg: BenchConfig, gen, defended, cw_kw) -> dict[str, Any]:
    """Unbounded CW-ℓ2 and the detector-aware PGD-50 on the same images (those MagNet accepts and
    classifies correctly): success rate, median ℓ2 / ℓ∞ distortion of the successes, and the
    accuracy each leaves at the ℓ∞ budget ε and at ℓ2 radii."""
    from ..defenses.magnet import attack as magnet_attack
    from ..defenses.magnet import cw as magnet_cw

    ok = mg.predict(x) == y
    out: dict[str, Any] = {"n": len(x), "clean_ok": int(ok.sum()), "pgd_threat": str(threat)}
    runs = {"cw-l2": lambda a, b: magnet_cw(mg, a, b, **cw_kw),
            "pgd-50": lambda a, b: magnet_attack(mg, a, b, threat=threat, penalty=10.0, generator=gen)}
    for name, fn in runs.items():
        t0 = time.perf_counter()
        xa = torch.cat([fn(x[s], y[s]).x_adv for s in chunks(len(x), 2 * cfg.batch)])
        broken = ok & ~defended(xa, y)  # re-judged by MagNet's own prediction, not the attack's flag
        d = (xa - x).flatten(1)
        l2, linf = d.norm(dim=1), d.abs().amax(1)
        out[name] = {
            "success": broken.sum().item() / max(int(ok.sum()), 1),
            "median_l2": l2[broken].median().item() if broken.any() else None,
            "median_linf": linf[broken].median().item() if broken.any() else None,
            "acc_linf": {f"{v:g}": (ok & ~(broken & (linf <= v + 1e-6))).float().mean().item() for v in (0.05, 0.1)},
            "acc_l2": {f"{r:g}": (ok & ~(broken & (l2 <= r + 1e-6))).float().mean().item() for r in (0.5, 1.0, 1.5, 2.0)},
            "seconds": round(time.perf_counter() - t0, 1)}
    return out


def _distortion_note(extra: dict[str, Any], cfg: BenchConfig) -> str:
    cw, pg = extra["cw-l2"], extra["pgd-50"]

    def med(v: float | None) -> str:
        return "–" if v is None else f"{v:.2f}"
    return (f"on the first {extra['n']} images ({extra['clean_ok']} accepted and correct): unbounded CW-ℓ2 "
            f"({cfg.cw_binary_steps} binary-search steps × {cfg.cw_steps} Adam steps) breaks "
            f"{100 * cw['success']:.1f}% at median ℓ2 {med(cw['median_l2'])} (ℓ∞ {med(cw['median_linf'])}); "
            f"detector-aware PGD-50 at {ball_name(str(threat_model(cfg.norm, cfg.eps)))} breaks {100 * pg['success']:.1f}% "
            "at median ℓ2 "
            f"{med(pg['median_l2'])}; accuracy left at ℓ2 1.5: CW {100 * cw['acc_l2']['1.5']:.1f}%, PGD-50 "
            f"{100 * pg['acc_l2']['1.5']:.1f}%")


def _row_defense_gan(x, y, threat: ThreatModel, cfg: BenchConfig, gen) -> Row:
    from ..defenses import DefenseGAN, load_defense

    dg = load_defense(DEFENSES["defense-gan"])
    assert isinstance(dg, DefenseGAN)
    clf = dg.classifier
    w, inf_ms, train_s = _in_front(dg, x, y, threat, cfg, gen, lambda xa, yy: dg.predict(xa) == yy)
    non_adaptive = w.acc
    attacked = BPDA(clf, lambda v: dg.project(v)[0])
    w.run("bpda pgd-20 (identity projection backward)",
          lambda idx: dg.predict(pgd20(attacked, x[idx], y[idx], threat, gen, cfg.batch)) == y[idx])
    lin = dg.linearized()
    w.run("bpda pgd-20 (linearized projection backward)",
          lambda idx: dg.predict(pgd20(lin, x[idx], y[idx], threat, gen, cfg.batch)) == y[idx])
    w.run("bpda apgd-dlr-50 (linearized projection backward)", lambda idx: dg.predict(torch.cat([
        apgd(lin, x[idx[s]], y[idx[s]], threat=threat, steps=50, loss="dlr", generator=gen).x_adv
        for s in chunks(len(idx), cfg.batch)])) == y[idx])
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

    base = load_model(model_for("smoothing", cfg.norm))
    ngen = torch.Generator().manual_seed(cfg.seed + 7)

    def vote(xb):  # majority vote of smooth_n noisy predictions
        with torch.inference_mode():
            counts = torch.zeros(len(xb), 10, dtype=torch.long)
            for _ in range(cfg.smooth_n):
                p = base(xb + cfg.sigma * torch.randn(xb.shape, generator=ngen)).argmax(1)
                counts[torch.arange(len(xb)), p] += 1
        return counts.argmax(1)

    pred, inf_ms = timed_predict(vote, x, cfg.batch)
    w = Worst(pred == y)
    w.run("pgd-20 on the base classifier (non-adaptive)",
          lambda idx: vote(pgd20(base, x[idx], y[idx], threat, gen, cfg.batch)) == y[idx])
    non_adaptive = w.acc
    smoothed = Smoothed(base, cfg.sigma, samples=cfg.eot, generator=ngen)
    w.run(f"pgd-20 on the smoothed classifier (EOT {cfg.eot})",
          lambda idx: vote(pgd20(smoothed, x[idx], y[idx], threat, gen, cfg.batch)) == y[idx])
    radii = []
    for i in range(len(x)):
        c = certify(base, x[i], sigma=cfg.sigma, n0=cfg.certify_n0, n=cfg.certify_n, alpha=cfg.certify_alpha,
                    batch=cfg.certify_n, num_classes=10, generator=ngen)
        radii.append(c.radius if c.prediction == int(y[i]) else -1.0)
    r = torch.tensor(radii)
    # ℓ2: certified at radius ε itself; ℓ∞: through the ℓ2 ball that holds the ℓ∞ ball
    need = cfg.eps if cfg.norm == "l2" else cfg.eps * math.sqrt(x[0].numel())
    cert = {f"{v:g}": (r >= v).float().mean().item() for v in (0.25, 0.5, 1.0)}
    rmax = cfg.sigma * float(torch.special.ndtri(torch.tensor(cfg.certify_alpha ** (1 / cfg.certify_n), dtype=torch.float64)))
    return Row("smoothing", ROWS["smoothing"], f"{base.name} σ={cfg.sigma:g}", len(x), w.after["clean"], non_adaptive,
               "PGD-20 on the base classifier, then the smoothed prediction", w.acc,
               f"PGD-20 on the smoothed classifier (expected softmax over {cfg.eot} draws)", w.after,
               certified=(r >= need).float().mean().item(), train_s=card_train_s(base.card), inference_ms=inf_ms,
               depends={"model": base.card.get("sha256"), "sigma": cfg.sigma},
               notes=[f"prediction: majority vote of {cfg.smooth_n} noisy copies; CERTIFY (Cohen et al.) with n0 = "
                      f"{cfg.certify_n0}, n = {cfg.certify_n}, α = {cfg.certify_alpha:g}: "
                      + (f"ℓ2 ε = {cfg.eps:g} is certified directly" if cfg.norm == "l2" else
                         f"ℓ∞ ε = {cfg.eps:g} is certified through the ℓ2 ball of radius ε·√d = {need:.2f} that holds it")
                      + f" (the largest radius these settings can certify is {rmax:.2f}), so its certified accuracy at "
                      f"ε is {100 * (r >= need).float().mean().item():.1f}%; "
                      "certified ℓ2 accuracy at radius " + ", ".join(f"{k}: {100 * v:.1f}%" for k, v in cert.items())])


_RUNNERS: dict[str, Callable[..., Row]] = {
    "standard": lambda x, y, t, c, g: _row_classifier("standard", x, y, t, c, g),
    "pgd-at": lambda x, y, t, c, g: _row_classifier("pgd-at", x, y, t, c, g),
    "fast-at": lambda x, y, t, c, g: _row_classifier("fast-at", x, y, t, c, g),
    "adv-ours": lambda x, y, t, c, g: _row_classifier("adv-ours", x, y, t, c, g),
    "ours-ours": lambda x, y, t, c, g: _row_classifier("ours-ours", x, y, t, c, g),
    "pgd-at-d": lambda x, y, t, c, g: _row_classifier("pgd-at-d", x, y, t, c, g),
    "rst": lambda x, y, t, c, g: _row_classifier("rst", x, y, t, c, g),
    "rst-ours": lambda x, y, t, c, g: _row_classifier("rst-ours", x, y, t, c, g),
    **{k: (lambda x, y, t, c, g, k=k: _row_magnet(k, x, y, t, c, g)) for k in MAGNET_DETECTORS},
    "defense-gan": _row_defense_gan, "smoothing": _row_smoothing,
}


def _depends(key: str, norm: str = "linf") -> dict[str, Any]:
    """What a stored row depends on, read from the cards (cheap: no model is built)."""
    from ..models.registry import bundled, bundled_defenses

    version = {"version": ROW_VERSION[key]} if key in ROW_VERSION else {}
    if key in DEFENSES:
        d = bundled_defenses().get(DEFENSES[key])
        out = {"defense": d.card.get("sha256") if d else None, **version}
        if key in MAGNET_DETECTORS and d:
            out["detectors"] = {k: (d.card.get(k) or {}).get("threshold") for k in ("detector", "jsd_detector")}
        return out
    m = bundled().get(model_for(key, norm))
    return {"model": m.card.get("sha256") if m else None, **version}


def run(rows: list[str] | None = None, *, out: str | Path = "defenses", config: BenchConfig | None = None,
        data: str | None = None, force: bool = False, on_row: Callable[[Row], None] | None = None) -> dict[str, Any]:
    """Measure ``rows`` (default all), keeping stored rows of ``out``.json whose dependencies and
    settings are unchanged unless ``force``; writes ``out``.json/.md (and .png when matplotlib is
    installed) after every row.  Returns the document."""
    from ..data import fashion_mnist

    cfg = config or BenchConfig()
    if cfg.norm not in ("linf", "l2"):
        raise UsageError(f"norm {cfg.norm!r}: choose linf or l2")
    rows = rows or rows_for(cfg.norm)
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise UsageError(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    meaningless = [r for r in rows if r not in rows_for(cfg.norm)]
    if meaningless:
        raise UsageError("; ".join(f"row {r} has no ℓ2 version: {NO_L2[r]}" for r in meaningless))
    out = Path(out)
    js = out.with_suffix(".json")
    doc: dict[str, Any] = json.loads(js.read_text()) if js.exists() else {}
    # a setting added since the document was written counts at its default: the stored rows stay
    if {**asdict(BenchConfig()), **doc.get("config", {})} != asdict(cfg):
        doc = {"config": asdict(cfg), "rows": {}}
    doc["config"] = asdict(cfg)
    doc.update(machine=f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
               norm=cfg.norm, eps=cfg.eps)
    x, y = fashion_mnist("test", data)
    x, y = x[:cfg.n], y[:cfg.n]
    threat = threat_model(cfg.norm, cfg.eps)
    for key in rows:
        stored = doc["rows"].get(key)
        if stored and not force and all(stored["depends"].get(k) == v for k, v in _depends(key, cfg.norm).items()):
            continue
        gen = torch.Generator().manual_seed(cfg.seed + 100)
        t0 = time.perf_counter()
        row = _RUNNERS[key](x, y, threat, cfg, gen)
        row.seconds = time.perf_counter() - t0
        doc["rows"][key] = asdict(row)
        write(doc, out)
        if on_row:
            on_row(row)
    write(doc, out)
    return doc


