"""File-level jobs under the CLI: robustify and verify whole lists of photos.

Photos of the same size and channel count are batched together; a bad file fails alone and the
batch goes on; outputs are written atomically and never over an input; an existing output is
skipped unless ``overwrite``, so a rerun resumes where an interrupted one stopped.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
from PIL import Image

from . import __version__
from .photos import (Photo, PhotoError, decode, encode, from_tensor, iter_images, load_photo, output_path,
                     write_atomic)
from .metrics import psnr, ssim
from .resolution import at_model_input
from .robustify import RobustifyConfig, check, robustify
from .threat import L2, Linf, threat_model

MAX_BATCH_PIXELS = 2_000_000  # pixels per batch (bounds memory for big photos)


@dataclass
class FileResult:
    src: str
    status: str                     # robust | not-robust | skipped | failed
    dst: str | None = None
    error: str | None = None
    label: int | None = None
    label_name: str | None = None
    original: str | None = None
    metrics: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and v != {}}


def probe(path: Path) -> tuple[int, int, int]:
    """(C, H, W) of the photo as preempt will see it, from the header alone where possible."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            orient = im.getexif().get(0x0112, 1)
            mode = im.mode
    except Exception:  # noqa: BLE001 - load_photo gives the precise one-line reason
        p = load_photo(path)
        return p.pixels.shape[2], p.pixels.shape[0], p.pixels.shape[1]
    if orient in (5, 6, 7, 8):
        w, h = h, w
    c = 1 if mode in ("1", "L", "LA", "La", "I", "F") or mode.startswith("I;16") else 3
    return c, h, w


def _batches(items: list, key: Callable, max_batch: int) -> Iterable[list]:
    groups: dict = defaultdict(list)
    for it in items:
        groups[key(it)].append(it)
    for shape, group in groups.items():
        per = max(1, min(max_batch, MAX_BATCH_PIXELS // max(1, shape[1] * shape[2])))
        for i in range(0, len(group), per):
            yield group[i:i + per]


def _chw(photo: Photo) -> tuple[int, int, int]:
    h, w, c = photo.pixels.shape
    return c, h, w


def robustify_files(paths: Iterable[str | Path], out_dir: str | Path, model, *,
                    config: RobustifyConfig | None = None, fmt: str = "png", quality: int = 95,
                    overwrite: bool = False, strip_metadata: bool = False, batch_size: int = 64,
                    device: str = "cpu", on_file: Callable[[FileResult], None] | None = None) -> list[FileResult]:
    """Robustify every photo under ``paths`` into ``out_dir``; returns one FileResult per input."""
    cfg = config or RobustifyConfig()
    out_dir = Path(out_dir)
    results: list[FileResult] = []

    def emit(r: FileResult) -> None:
        results.append(r)
        if on_file:
            on_file(r)

    inputs = list(iter_images(paths, exclude=out_dir))
    in_set = {p.resolve() for p, _ in inputs if p.exists()}
    todo, claimed = [], {}
    for src, root in inputs:
        dst = output_path(src, root, out_dir, fmt)
        r = dst.resolve()
        if r in in_set:
            emit(FileResult(str(src), "failed", str(dst), error="output would overwrite an input"))
        elif r in claimed:
            emit(FileResult(str(src), "failed", str(dst), error=f"output name collides with {claimed[r]}"))
        elif dst.exists() and not overwrite:
            claimed[r] = src
            emit(FileResult(str(src), "skipped", str(dst), error="output exists (use --overwrite)"))
        else:
            claimed[r] = src
            try:
                todo.append((src, dst, probe(src)))
            except PhotoError as e:
                emit(FileResult(str(src), "failed", error=str(e)))
    dball = threat_model(cfg.norm, cfg.delta)
    eball = threat_model(cfg.norm, cfg.eps)
    classes = model.classes or []
    for batch in _batches(todo, key=lambda t: t[2], max_batch=batch_size):
        photos: list[tuple[Path, Path, Photo]] = []
        for src, dst, _ in batch:
            try:
                photos.append((src, dst, load_photo(src)))
            except PhotoError as e:
                emit(FileResult(str(src), "failed", error=str(e)))
        shapes = defaultdict(list)  # the header can lie; group again on decoded pixels
        for item in photos:
            shapes[item[2].pixels.shape].append(item)
        for group in shapes.values():
            x = torch.stack([p.tensor(device) for _, _, p in group])
            t0 = time.perf_counter()
            res = robustify(model, x, config=cfg)
            elapsed = (time.perf_counter() - t0) / len(group)
            for i, (src, dst, photo) in enumerate(group):
                info = res.images[i]
                meta = {"preempt": __version__, "model": model.name, "norm": cfg.norm, "delta": cfg.delta,
                        "eps": cfg.eps, "label": info.label, "source": src.name}
                try:
                    out = from_tensor(res.x[i], photo)
                    data = encode(out, fmt, quality=quality, strip_metadata=strip_metadata, meta=meta)
                    saved = decode(data)  # judge exactly what will be on disk
                    xs = saved.tensor(device)[None]
                    metrics = info.to_dict()
                    metrics["seconds"] = round(elapsed, 4)
                    if fmt == "png":
                        if not (saved.pixels == out.pixels).all():
                            raise PhotoError("PNG round trip changed pixels")
                        robust = info.robust
                    else:  # lossy: verify again after encoding, and measure the budget from the file
                        mi = at_model_input(model, xs, eball, cfg.resolution)
                        ok, p = check(mi.model, mi.x, torch.tensor([info.label], device=xs.device), mi.threat,
                                      steps=cfg.check_steps, restarts=cfg.check_restarts, loss=cfg.check_loss)
                        robust = bool(ok[0])
                        metrics["passes"] += p
                        metrics["robust_before_encoding"] = info.robust
                        metrics["linf"] = float(Linf(0).distance(xs, x[i:i + 1])[0])
                        metrics["l2"] = float(L2(0).distance(xs, x[i:i + 1])[0])
                        metrics["psnr"] = float(psnr(xs, x[i:i + 1])[0])
                        metrics["ssim"] = float(ssim(xs, x[i:i + 1])[0])
                        metrics["within_budget"] = bool(dball.distance(xs, x[i:i + 1])[0] <= cfg.delta + 1e-6)
                    metrics["robust"] = robust
                    write_atomic(dst, data)
                except PhotoError as e:
                    emit(FileResult(str(src), "failed", str(dst), error=str(e)))
                    continue
                emit(FileResult(str(src), "robust" if robust else "not-robust", str(dst), label=info.label,
                                label_name=classes[info.label] if info.label < len(classes) else None,
                                metrics=metrics))
    return results


@dataclass
class VerifyConfig:
    norm: str = "linf"
    eps: float = 0.1
    suite: str = "pgd"              # pgd | quick | standard | rand (see preempt.attacks.suite)
    steps: int = 20                 # PGD steps (suite "pgd")
    step_size: float | None = None  # PGD step, default ε/4
    restarts: int = 1               # PGD restarts
    seed: int = 0
    adaptive: bool = False          # also the adaptive white-box attack (preempt.attacks.adaptive)
    checks: bool = True             # honesty flags (preempt.checks)
    certify: bool = False           # randomized-smoothing certificate per image (ℓ2 radius)
    surrogate: object = None        # blackbox suite: a torch model to craft transfer attacks on
    sigma: float = 0.25
    n0: int = 100
    n: int = 10000
    alpha: float = 0.001
    resolution: str = "auto"        # auto | model | full: attack the model input or every photo pixel

    def describe(self) -> dict:
        """The attacks' parameters, as reports state them."""
        from .attacks.suite import attack_names

        attacks = [f"pgd-{self.steps}"] if self.suite == "pgd" else (
            ["square"] + (["transfer-pgd-20", "transfer-apgd-ce"] if self.surrogate is not None else [])
            if self.suite == "blackbox" else attack_names(self.suite))
        attacks += ["adaptive"] if self.adaptive else []
        return {"suite": self.suite, "attacks": attacks, "attack": "pgd" if self.suite == "pgd" else self.suite,
                "steps": self.steps, "step_size": self.step_size or self.eps / 4, "norm": self.norm,
                "eps": self.eps, "random_start": True, "restarts": self.restarts, "seed": self.seed,
                "surrogate": getattr(self.surrogate, "name", None), "resolution": self.resolution,
                "certify": {"sigma": self.sigma, "n0": self.n0, "n": self.n, "alpha": self.alpha} if self.certify else None}


def pair_originals(files: list[Path], originals: list[Path]) -> list[Path]:
    """One original per file: by name (``NAME.robust.png`` ↔ ``NAME.*``) where every name matches
    exactly one original, else by position when the counts agree."""
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for o in originals:
        by_stem[o.stem].append(o)
    keys = [f.stem[: -len(".robust")] if f.stem.endswith(".robust") else f.stem for f in files]
    if all(len(by_stem.get(k, [])) == 1 for k in keys):
        return [by_stem[k][0] for k in keys]
    if len(originals) == len(files):
        return originals
    raise ValueError(f"{len(files)} images but {len(originals)} originals, and their names do not pair them; "
                     "give one original per image, in the same order")


@dataclass
class VerifyReport:
    files: list[FileResult]
    flags: list = field(default_factory=list)   # preempt.checks.Flag, from the first batch


def verify_files(paths: Iterable[str | Path], model, *, originals: Iterable[str | Path] | None = None,
                 config: VerifyConfig | None = None, device: str = "cpu", batch_size: int = 64,
                 on_file: Callable[[FileResult], None] | None = None) -> VerifyReport:
    """Attack every photo (and its original, when given); one FileResult per photo, plus the
    honesty flags.  With ``config.adaptive`` the adaptive white-box attack runs on what survived;
    with ``config.certify`` each photo gets a randomized-smoothing certificate."""
    from .attacks import adaptive, pgd, run_suite
    from .checks import run_checks

    cfg = config or VerifyConfig()
    if not model.differentiable and (cfg.suite != "blackbox" or cfg.adaptive):
        raise ValueError(f"{model.name} has no gradients (ONNX): use --suite blackbox, without --adaptive")
    threat = threat_model(cfg.norm, cfg.eps)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    files = [p for p, _ in iter_images(paths)]
    origs = pair_originals(files, [p for p, _ in iter_images(originals)]) if originals else None
    report = VerifyReport([])
    results = report.files
    classes = model.classes or []
    todo = []

    def emit(r: FileResult) -> None:
        results.append(r)
        if on_file:
            on_file(r)

    for i, f in enumerate(files):
        try:
            photo = load_photo(f)
            orig = load_photo(origs[i]) if origs else None
            if orig is not None and orig.pixels.shape != photo.pixels.shape:
                raise PhotoError(f"original {origs[i]} has size {orig.size}, not {photo.size}")
            todo.append((f, photo, orig))
        except PhotoError as e:
            emit(FileResult(str(f), "failed", error=str(e)))

    def attack(x, y, correct) -> tuple[torch.Tensor, list]:
        """``correct``: the clean predictions already compared with ``y`` (no second forward pass).
        Photos larger than the model input are attacked at model resolution over the image of
        their ε-ball, which contains every full-resolution attack (preempt.resolution)."""
        mi = at_model_input(model, x, threat, cfg.resolution)
        model_, x, threat_ = mi.model, mi.x, mi.threat
        if cfg.suite != "pgd":
            r = run_suite(model_, x, y, threat=threat_, suite=cfg.suite, generator=gen, surrogate=cfg.surrogate)
            robust, broken = r.robust, r.broken_by
        else:
            robust = correct.clone()
            broken = [None if ok else "clean" for ok in robust.tolist()]
            name = f"pgd-{cfg.steps}"
            for _ in range(cfg.restarts):
                res = pgd(model_, x, y, threat=threat_, steps=cfg.steps, step_size=cfg.step_size, generator=gen)
                for i in (robust & res.success).nonzero().squeeze(1).tolist():
                    broken[i] = name
                robust &= res.robust
        if cfg.adaptive and robust.any():
            idx = robust.nonzero().squeeze(1)
            res = adaptive(model_, x[idx], y[idx], threat=threat_, generator=gen)
            for i in idx[res.success].tolist():
                broken[i] = "adaptive"
            robust[idx[res.success]] = False
        return robust, broken

    first = True
    for batch in _batches(todo, key=lambda t: _chw(t[1]), max_batch=batch_size):
        x = torch.stack([p.tensor(device) for _, p, _ in batch])
        pred = model.predict(x)
        xo = torch.stack([o.tensor(device) for _, _, o in batch]) if origs else None
        if xo is not None:
            y = model.predict(xo)
            source = ["original"] * len(batch)
        else:
            y, source = pred.clone(), []
            for j, (_, p, _) in enumerate(batch):
                if isinstance(p.meta.get("label"), int) and 0 <= p.meta["label"] < (len(classes) or 10 ** 9):
                    y[j] = p.meta["label"]
                    source.append("file metadata")
                else:
                    source.append("prediction")
        t0 = time.perf_counter()
        robust, broken = attack(x, y, pred == y)
        # y is the model's label on the originals, so they are correct by construction
        rob_o, broken_o = attack(xo, y, torch.ones_like(y, dtype=torch.bool)) if xo is not None else (None, None)
        dt = (time.perf_counter() - t0) / len(batch)
        if first and cfg.checks:
            mi = at_model_input(model, x, threat, cfg.resolution)
            report.flags = run_checks(mi.model, mi.x, y, mi.threat, broken_by=broken if cfg.suite == "standard" else None,
                                      generator=gen)
            first = False
        for j, (f, p, o) in enumerate(batch):
            m = {"clean_correct": bool(pred[j] == y[j]), "robust": bool(robust[j]), "broken_by": broken[j],
                 "label_source": source[j], "seconds": round(dt, 4)}
            if rob_o is not None:
                m["original_robust"] = bool(rob_o[j])
                m["original_broken_by"] = broken_o[j]
                m["linf_to_original"] = float((x[j] - xo[j]).abs().max())
                m["l2_to_original"] = float((x[j] - xo[j]).flatten().norm())
            if cfg.certify:
                from .smoothing import certify

                c = certify(model, x[j], sigma=cfg.sigma, n0=cfg.n0, n=cfg.n, alpha=cfg.alpha, generator=gen)
                m["certificate"] = {"prediction": c.prediction, "radius": c.radius, "abstain": c.abstain,
                                    "p_lower": c.p_lower, "sigma": cfg.sigma, "n0": cfg.n0, "n": cfg.n,
                                    "alpha": cfg.alpha, "certified_at_eps": (not c.abstain) and c.prediction == int(y[j])
                                    and cfg.norm == "l2" and c.radius >= cfg.eps}
            lab = int(y[j])
            emit(FileResult(str(f), "robust" if robust[j] else "not-robust", label=lab,
                            label_name=classes[lab] if lab < len(classes) else None,
                            original=str(o.path) if o is not None else None, metrics=m))
    return report
