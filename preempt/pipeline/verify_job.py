"""``preempt verify`` on files: label sources, pairing with originals, the attacks, the report rows.

Photos of one size are attacked together (see :mod:`preempt.verdict.check` for the suites); a
photo that cannot be read fails alone and the rest go on.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..core.metrics import change
from ..core.resolution import at_model_input
from ..core.threat import threat_model
from ..errors import UsageError
from ..models.protocol import Model
from ..verdict import upload
from ..verdict.check import SUITES, Check, suite_check
from .batching import batches, chw, planned_batches
from .photos import PhotoError, iter_images, load_photo, nothing_found, original_stem
from .results import FileResult, NoImages, in_input_order, label_name
from .shard import Shard, batch_seed, take


@dataclass
class VerifyConfig:
    norm: str = "linf"
    eps: float = 0.1
    suite: str = "strong-once"      # a name in preempt.verdict.check.SUITES, the same name as robustify's --check where both
                                    # have it (strong-once: the attacks of robustify's default check, APGD from one start)
    steps: int = 20                 # PGD steps (suites "pgd", "strong-once" and "strong")
    step_size: float | None = None  # PGD step, default ε/4
    restarts: int = 1               # PGD restarts
    seed: int = 0
    adaptive: bool = False          # also the adaptive white-box attack (preempt.attacks.adaptive_attack)
    checks: bool = True             # honesty flags (preempt.attacks.honesty)
    certify: bool = False           # randomized-smoothing certificate per image (ℓ2 radius)
    surrogate: object = None        # blackbox suite: a torch model to craft transfer attacks on
    sigma: float = 0.25
    n0: int = 100
    n: int = 10000
    alpha: float = 0.001
    resolution: str = "full"        # full: the file's own pixels (what "robust" means) | auto | model: the model input
                                    # over the image of the ε-ball (a larger ball, cheaper per pass on large photos)
    uploads: str | None = None      # service transforms (preempt.verdict.upload spec): each photo also attacked through
                                    # the real codec, before and after the transform

    def check(self) -> Check:
        """The check this configuration runs: the suite's, with verify's PGD flags where it takes them
        and the adaptive attack after it when asked."""
        c = suite_check(self.suite).tuned(steps=self.steps, restarts=self.restarts, step_size=self.step_size)
        return replace(c, extra=("adaptive",)) if self.adaptive else c

    def describe(self) -> dict:
        """The attacks' parameters, as reports state them."""
        # each attack once (the pgd suite's restarts and the strong suite's two PGD starts repeat one name)
        attacks = list(dict.fromkeys(self.check().attacks(self.surrogate)))
        attacks += [str(c) for c in upload.concrete(upload.parse(self.uploads), (1 << 30, 1 << 30))]
        return {"suite": self.suite, "attacks": attacks, "attack": "pgd" if self.suite == "pgd" else self.suite,
                "steps": self.steps, "step_size": self.step_size or self.eps / 4, "norm": self.norm,
                "eps": self.eps, "random_start": True, "restarts": self.restarts, "seed": self.seed,
                "surrogate": getattr(self.surrogate, "name", None), "resolution": self.resolution,
                "uploads": self.uploads,
                "certify": {"sigma": self.sigma, "n0": self.n0, "n": self.n, "alpha": self.alpha} if self.certify else None}


def suite_for(model: Model, suite: str) -> tuple[str, str | None]:
    """The suite to run on ``model``: ``suite`` itself, or ``blackbox`` for a model without
    gradients (ONNX), with a one-line note saying so."""
    if suite not in SUITES:
        raise UsageError(f"--suite {suite}: choose one of {', '.join(SUITES)}")
    if not model.differentiable and suite != "blackbox":
        return "blackbox", f"{model.name} has no gradients (ONNX): using --suite blackbox (Square + transfer attacks)"
    return suite, None


def pair_originals(files: list[Path], originals: list[Path]) -> list[Path]:
    """One original per file: by name (``NAME.robust.png`` ↔ ``NAME.*``) where every name matches
    exactly one original, else by position when the counts agree (see :func:`paired_by_name`)."""
    if paired_by_name(files, originals):
        by_stem = {o.stem: o for o in originals}
        return [by_stem[k] for k in _original_stems(files)]
    if len(originals) == len(files):
        return originals
    raise UsageError(f"{len(files)} images but {len(originals)} originals, and their names do not pair them; "
                     "give one original per image, in the same order")


def _original_stems(files: list[Path]) -> list[str]:
    """``NAME.robust.png`` → ``NAME``: the stem each file's original has."""
    return [original_stem(f) for f in files]


def paired_by_name(files: list[Path], originals: list[Path]) -> bool:
    """True where every file's name matches exactly one original."""
    stems = [o.stem for o in originals]
    return all(stems.count(k) == 1 for k in _original_stems(files))


@dataclass
class VerifyReport:
    files: list[FileResult]
    flags: list = field(default_factory=list)   # preempt.attacks.honesty.Flag, from the first batch
    warnings: list[str] = field(default_factory=list)  # one line each, e.g. doubtful pairs


def verify_files(paths: Iterable[str | Path], model: Model, *, originals: Iterable[str | Path] | None = None,
                 config: VerifyConfig | None = None, device: str = "cpu", batch_size: int = 64,
                 shard: Shard | None = None, on_file: Callable[[FileResult], None] | None = None,
                 on_plan: Callable[[int], None] | None = None,
                 on_attack: Callable[[str, int], None] | None = None) -> VerifyReport:
    """Attack every photo (and its original, when given); one FileResult per photo, plus the
    honesty flags.  With ``config.adaptive`` the adaptive white-box attack runs on what survived;
    with ``config.certify`` each photo gets a randomized-smoothing certificate.  ``on_plan(n)``
    is told the number of photos once they are listed; ``on_attack(name, n)`` each time an attack
    starts on the ``n`` points still robust (for progress).  ``shard``: only this share's batches
    (:mod:`preempt.pipeline.shard`); each batch's random draws are seeded from ``config.seed`` and its
    files' names, so a photo gets the same verdict in any share or run; results are in input order."""
    from ..attacks.honesty import honesty_flags

    cfg = config or VerifyConfig()
    if not model.differentiable and (cfg.suite != "blackbox" or cfg.adaptive):
        raise UsageError(f"{model.name} has no gradients (ONNX): use --suite blackbox, without --adaptive")
    skipped: list[Path] = []
    files = [p for p, _ in iter_images(paths, skipped=skipped)]
    if not files:
        raise NoImages(nothing_found(list(paths), skipped))
    orig_files = [p for p, _ in iter_images(originals)] if originals else []
    origs = pair_originals(files, orig_files) if originals else None
    by_position = bool(originals) and not paired_by_name(files, orig_files)
    mine = take(range(len(files)), shard, lambda idx: planned_batches(idx, batch_size, path=lambda i: files[i]))
    if on_plan:
        on_plan(len(mine))
    report = VerifyReport([])
    job = _Attacker(model, cfg, torch.Generator(device=device).manual_seed(cfg.seed), on_attack)
    delta = ((getattr(model, "card", None) or {}).get("threat_model") or {}).get("delta")
    classes = model.classes or []

    def emit(r: FileResult) -> None:
        report.files.append(r)
        if on_file:
            on_file(r)

    todo = _load(mine, files, origs, emit)

    first = True
    for batch in batches(todo, key=lambda t: chw(t[1]), max_batch=batch_size):
        job.gen.manual_seed(batch_seed(cfg.seed, [f.name for f, _, _ in batch]))
        x = torch.stack([p.tensor(device) for _, p, _ in batch])
        pred = model.predict(x)
        xo = torch.stack([o.tensor(device) for _, _, o in batch]) if origs else None
        y, source = _labels(model, batch, pred, xo, len(classes))
        t0 = time.perf_counter()
        out = job.attack(x, y, pred == y)
        robust, broken, ups = out.robust, out.broken_by, out.uploads
        # y is the model's label on the originals, so they are correct by construction
        on_originals = job.attack(xo, y, torch.ones_like(y, dtype=torch.bool)) if xo is not None else None
        dt = (time.perf_counter() - t0) / len(batch)
        if first and cfg.checks:
            mi = at_model_input(model, x, job.threat, cfg.resolution)
            report.flags = honesty_flags(mi.model, mi.x, y, mi.threat, broken_by=broken if cfg.suite == "standard" else None,
                                      generator=job.gen)
            first = False
        for j, (f, _p, o) in enumerate(batch):
            m: dict[str, Any] = {"clean_correct": bool(pred[j] == y[j]), "robust": bool(robust[j]), "broken_by": broken[j],
                 "label_source": source[j], "seconds": round(dt, 4), **_closest(out, j)}
            after = out.label_after[j]
            if after is not None:
                m["label_after_attack"] = after
                m["label_name_after_attack"] = label_name(classes, after)
            if job.chains:
                m["uploads"] = ups[j]
            if xo is not None and on_originals is not None:
                m.update(_against_original(x[j], xo[j], j, on_originals, with_uploads=bool(job.chains)))
                m["paired_by"] = "position" if by_position else "name"
                if by_position and delta is not None and cfg.norm == "linf" and m["linf_to_original"] > delta + 0.5 / 255:
                    report.warnings.append(f"{f}: paired by position with {o.path}, which is {m['linf_to_original']:.3f} "
                                           f"away (ℓ∞), further than the model's δ = {delta:g}: is it its original?")
            if cfg.certify:
                m["certificate"] = job.certificate(x[j], int(y[j]))
            lab = int(y[j])
            emit(FileResult(str(f), "robust" if robust[j] else "not-robust", label=lab, label_name=label_name(classes, lab),
                            original=str(o.path) if o is not None else None, metrics=m))
    report.files = in_input_order(report.files, files)
    return report


def _labels(model: Model, batch: list, pred: torch.Tensor, xo: torch.Tensor | None,
            n_classes: int) -> tuple[torch.Tensor, list[str]]:
    """The label each photo is judged against, and where it came from: the model's answer on the
    original when given, else a label in the file's metadata, else the model's answer on the photo."""
    if xo is not None:
        return model.predict(xo), ["original"] * len(batch)
    y, source = pred.clone(), []
    for j, (_, p, _) in enumerate(batch):
        lab = p.meta.get("label")
        if isinstance(lab, int) and 0 <= lab < (n_classes or 10 ** 9):
            y[j] = lab
            source.append("file metadata")
        else:
            source.append("prediction")
    return y, source


def _against_original(x: torch.Tensor, xo: torch.Tensor, j: int, on_originals: _Outcome, *, with_uploads: bool) -> dict:
    """The original's own verdict and how far the photo is from it."""
    rob_o, broken_o, ups_o = on_originals.robust, on_originals.broken_by, on_originals.uploads
    moved = change(x[None], xo[None])
    m: dict[str, Any] = {"original_robust": bool(rob_o[j]), "original_broken_by": broken_o[j]}
    if with_uploads:
        m["original_uploads"] = ups_o[j]
    m.update({"linf_to_original": float(moved["linf"][0]), "l2_to_original": float(moved["l2"][0]),
              "psnr_to_original": round(float(moved["psnr"][0]), 2), "ssim_to_original": round(float(moved["ssim"][0]), 4)})
    return m


@dataclass
class _Outcome:
    robust: torch.Tensor
    broken_by: list[str | None]
    uploads: list[dict]              # per image, each service transform's outcome
    label_after: list[int | None]    # the label of the adversarial point that broke it (None: unbroken, or broken
                                     # through a service transform)
    closest: list[float | None]      # the lowest margin the APGD attacks reached (logits; None: none reported)


def _closest(out: _Outcome, j: int) -> dict[str, float]:
    """A robust photo's ``closest_margin``: how near a wrong label the APGD attacks came (none where none ran)."""
    m = out.closest[j]
    return {"closest_margin": m} if bool(out.robust[j]) and m is not None else {}


def _load(mine: list[int], files: list[Path], origs: list[Path] | None,
          emit: Callable[[FileResult], None]) -> list[tuple[Path, Any, Any]]:
    """(file, photo, original or None) of each of ``mine`` that reads; the others are emitted as failed."""
    todo = []
    for i in mine:
        f = files[i]
        try:
            photo = load_photo(f)
            orig = None
            if origs:
                orig = load_photo(origs[i])
                if orig.pixels.shape != photo.pixels.shape:
                    raise PhotoError(f"original {origs[i]} has size {orig.size}, not {photo.size}")
            todo.append((f, photo, orig))
        except PhotoError as e:
            emit(FileResult(str(f), "failed", error=str(e)))
    return todo


class _Attacker:
    """The attacks verify runs on one batch: the suite where verify attacks (the model input over
    the image of the ε-ball for photos larger than it, preempt.core.resolution), the adaptive
    attack on what survived, each service transform through the real codec, a certificate."""

    def __init__(self, model: Model, cfg: VerifyConfig, gen: torch.Generator,
                 on_attack: Callable[[str, int], None] | None = None) -> None:
        self.model, self.cfg, self.gen, self.on_attack = model, cfg, gen, on_attack
        self.threat = threat_model(cfg.norm, cfg.eps)
        self.chains = upload.parse(cfg.uploads)

    def attack(self, x: torch.Tensor, y: torch.Tensor, correct: torch.Tensor) -> _Outcome:
        """``correct``: the clean predictions already compared with ``y`` (no second forward pass)."""
        cfg, gen = self.cfg, self.gen
        check = cfg.check()
        v = check.judge(self.model, x, y, self.threat, generator=gen, resolution=cfg.resolution, chains=self.chains,
                        uploads_for="correct", upload_steps=cfg.steps, upload_restarts=cfg.restarts, correct=correct,
                        workers=1 if cfg.suite == "pgd" else None, surrogate=cfg.surrogate, on_attack=self.on_attack)
        # the label each attack's adversarial point gets (what the service would have said)
        after: list[int | None] = [None] * len(x)
        attacks = set(check.attacks(cfg.surrogate))
        hit = torch.tensor([b in attacks for b in v.broken_by], dtype=torch.bool)
        if hit.any():
            mi = at_model_input(self.model, x, self.threat, cfg.resolution)
            idx = hit.nonzero().squeeze(1).to(x.device)
            for i, lab in zip(idx.tolist(), mi.model.predict(v.x_adv[idx]).tolist()):
                after[i] = int(lab)
        near = v.closest.tolist() if v.closest is not None else [float("inf")] * len(x)
        return _Outcome(v.robust, v.broken_by, v.uploads, after,
                        [round(m, 4) if math.isfinite(m) else None for m in near])

    def certificate(self, x: torch.Tensor, label: int) -> dict:
        from ..defenses.smoothing import certify

        cfg = self.cfg
        c = certify(self.model, x, sigma=cfg.sigma, n0=cfg.n0, n=cfg.n, alpha=cfg.alpha, generator=self.gen)
        return {"prediction": c.prediction, "radius": c.radius, "abstain": c.abstain, "p_lower": c.p_lower,
                "sigma": cfg.sigma, "n0": cfg.n0, "n": cfg.n, "alpha": cfg.alpha,
                "certified_at_eps": (not c.abstain) and c.prediction == label and cfg.norm == "l2" and c.radius >= cfg.eps}
