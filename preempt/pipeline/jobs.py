"""File-level jobs under the CLI: robustify and verify whole lists of photos.

Photos of the same size and channel count are batched together; a bad file fails alone and the
batch goes on; outputs are written atomically and never over an input; an existing output is
skipped unless ``overwrite``, so a rerun resumes where an interrupted one stopped.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image

from .. import __version__
from ..core import upload
from ..core.metrics import psnr, ssim
from ..core.resolution import at_model_input
from ..core.robustify import RobustifyConfig, judge, robustify
from ..core.threat import L2, Linf, threat_model
from .memory import check_fits
from .photos import (
    Photo,
    PhotoError,
    decode,
    encode,
    from_tensor,
    iter_images,
    load_photo,
    nothing_found,
    output_path,
    write_atomic,
)

MAX_BATCH_PIXELS = 2_000_000  # pixels per batch (bounds memory for big photos)


class NoImages(Exception):
    """The paths given hold no image preempt reads; str() is one line saying why."""


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
    except Exception:
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
                    config: RobustifyConfig | None = None, fmt: str = "auto", quality: int | None = None,
                    overwrite: bool = False, strip_metadata: bool = False, batch_size: int = 64,
                    device: str = "cpu", on_file: Callable[[FileResult], None] | None = None) -> list[FileResult]:
    """Robustify every photo under ``paths`` into ``out_dir``; returns one FileResult per input.

    ``fmt``: ``png``, ``jpeg``, or ``auto`` (JPEG for JPEG inputs when ``config.survive`` includes a
    JPEG re-encode, at the highest quality robustified for, if that JPEG stays inside δ and robust;
    PNG otherwise).  A JPEG is kept inside
    the δ-ball (:func:`encode_jpeg_within`) or reported ``over-budget``, and judged as decoded."""
    cfg = config or RobustifyConfig()
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    out_dir = Path(out_dir)
    results: list[FileResult] = []

    def emit(r: FileResult) -> None:
        results.append(r)
        if on_file:
            on_file(r)

    skipped: list[Path] = []
    inputs = list(iter_images(paths, exclude=out_dir, skipped=skipped))
    if not inputs:
        raise NoImages(nothing_found(list(paths), skipped, out_dir))
    in_set = {p.resolve() for p, _ in inputs if p.exists()}
    todo = []
    claimed: dict[Path, Path] = {}  # an output path (resolved) -> the input that writes it
    for src, root in inputs:
        dst = output_path(src, root, out_dir, file_format(src, fmt, cfg))
        # --format auto may fall back from JPEG to PNG: both names are this input's
        names = [dst] + ([output_path(src, root, out_dir, "png")] if fmt == "auto" and dst.suffix == ".jpg" else [])
        done_before = [d for d in names if d.exists()]
        if any(d.resolve() in in_set for d in names):
            emit(FileResult(str(src), "failed", str(dst), error="output would overwrite an input"))
        elif any(d.resolve() in claimed for d in names):
            other = next(claimed[d.resolve()] for d in names if d.resolve() in claimed)
            emit(FileResult(str(src), "failed", str(dst), error=f"output name collides with {other}"))
        elif done_before and not overwrite:
            claimed.update({d.resolve(): src for d in names})
            emit(FileResult(str(src), "skipped", str(done_before[0]), error="output exists (use --overwrite)"))
        else:
            claimed.update({d.resolve(): src for d in names})
            try:
                shape = probe(src)
            except PhotoError as e:
                emit(FileResult(str(src), "failed", error=str(e)))
                continue
            too_big = check_fits(shape[1] * shape[2], _path_for(model, shape, cfg))
            if too_big:
                emit(FileResult(str(src), "failed", error=too_big))
                continue
            todo.append((src, dst, shape))
    dball = threat_model(cfg.norm, cfg.delta)
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
                    metrics = info.to_dict()
                    metrics["seconds"] = round(elapsed, 4)
                    kind = file_format(src, fmt, cfg)
                    if kind == "jpeg":  # lossy: keep the file inside the δ-ball, then verify again what was written
                        q = jpeg_quality(quality, cfg)
                        data, xs, q_used, within = encode_jpeg_within(out, x[i], dball, q, strip_metadata=strip_metadata,
                                                                      meta=meta)
                        y1 = torch.tensor([info.label], device=xs.device)
                        ok, p, det = judge(model, xs[None], y1, cfg, generator=gen)
                        metrics["passes"] += int(p)
                        metrics["robust_before_encoding"] = info.robust
                        metrics["uploads"] = det[0]
                        metrics["quality"] = q_used
                        metrics["linf"] = float(Linf(0).distance(xs[None], x[i:i + 1])[0])
                        metrics["l2"] = float(L2(0).distance(xs[None], x[i:i + 1])[0])
                        metrics["psnr"] = float(psnr(xs[None], x[i:i + 1])[0])
                        metrics["ssim"] = float(ssim(xs[None], x[i:i + 1])[0])
                        metrics["within_budget"] = within
                        status = "over-budget" if not within else ("robust" if bool(ok[0]) else "not-robust")
                        if fmt == "auto" and status != "robust" and info.robust:
                            # auto promised the least surprise: the JPEG did not keep δ or robustness, the PNG does
                            kind, dst = "png", dst.with_suffix(".png")
                            metrics = {**info.to_dict(), "seconds": round(elapsed, 4),
                                       "passes": metrics["passes"], "format_note": f"JPEG {status} at quality "
                                       f"{q_used}: wrote PNG"}
                    if kind == "png":
                        data = encode(out, "png", strip_metadata=strip_metadata, meta=meta)
                        if not (decode(data).pixels == out.pixels).all():  # judge exactly what will be on disk
                            raise PhotoError("PNG round trip changed pixels")
                        status = "robust" if info.robust else "not-robust"
                    metrics["robust"] = status == "robust"
                    metrics["bytes"] = len(data)
                    write_atomic(dst, data)
                except PhotoError as e:
                    emit(FileResult(str(src), "failed", str(dst), error=str(e)))
                    continue
                emit(FileResult(str(src), status, str(dst), label=info.label,
                                label_name=classes[info.label] if info.label < len(classes) else None,
                                metrics=metrics))
    return results


def _path_for(model, chw: tuple[int, int, int], cfg: RobustifyConfig) -> str:
    """model, full or survive: the path robustify will take for a photo of this shape (for the memory estimate)."""
    from ..core.resolution import resampling_for

    if cfg.survive:
        return "survive"
    if cfg.optimizer == "rmsprop":
        return "full"
    try:
        return "model" if resampling_for(model, chw[1:], cfg.resolution) is not None else "full"
    except Exception:
        return "full"


FORMATS = ("auto", "png", "jpeg")
JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")


def file_format(src: Path, fmt: str, cfg: RobustifyConfig) -> str:
    """png or jpeg for one input under ``--format fmt``."""
    if fmt in ("jpeg", "jpg"):
        return "jpeg"
    if fmt == "png":
        return "png"
    if fmt != "auto":
        raise ValueError(f"format {fmt!r}: choose {', '.join(FORMATS)}")
    robust_for_jpeg = any(c.max_quality is not None for c in cfg.chains())
    return "jpeg" if robust_for_jpeg and Path(src).suffix.lower() in JPEG_SUFFIXES else "png"


def jpeg_quality(quality: int | None, cfg: RobustifyConfig) -> int:
    """The JPEG quality to write: as asked, else the highest quality robustified for, else 95."""
    if quality is not None:
        return int(quality)
    qs = [c.max_quality for c in cfg.chains() if c.max_quality is not None]
    return int(max(qs)) if qs else 95


def encode_jpeg_within(photo: Photo, x_o: torch.Tensor, dball, quality: int, *, strip_metadata: bool = False,
                       meta: dict | None = None, iters: int = 3) -> tuple[bytes, torch.Tensor, int, bool]:
    """A JPEG of ``photo`` whose decoded pixels stay inside ``dball`` around the original ``x_o``.

    The encoder's error is pushed back: where the decoded file leaves the ball, the input is
    moved by the overshoot (and one level more) the other way and encoded again (``iters``
    times); if that does not converge the quality is raised in steps of 5 up to 100, and there
    less of δ is spent (ℓ∞: the change clipped to 1, 2, 3, 4, 6, … levels inside the bound).  Returns (bytes, decoded
    (C,H,W) tensor, quality used, within budget).  When nothing fits, the encoding at the asked
    quality is returned with ``within = False`` — the caller reports it over budget."""
    x_r = photo.tensor(x_o.device)
    ko = torch.round(x_o * 255)
    m = math.floor(dball.eps * 255 + 1e-6)
    first = None
    kr = torch.round(x_r * 255)
    linf = isinstance(dball, Linf)
    qualities = sorted({int(quality), *range(int(quality) + 5, 101, 5), 100})
    margins = [g for g in (1, 2, 3, 4, 6, 8, 12, 16) if g < m] if linf else []
    # first the quality asked and higher ones with all of δ; then, at quality 100, less of δ
    for q, margin in [(q, 0) for q in qualities] + [(100, g) for g in margins]:
        k_in = ko + (kr - ko).clamp(-(m - margin), m - margin) if linf else kr
        for _ in range(iters):
            data = encode(from_tensor(k_in / 255, photo), "jpeg", quality=q, strip_metadata=strip_metadata, meta=meta)
            xs = decode(data).tensor(x_o.device)
            if first is None:
                first = (data, xs, q)
            if float(dball.distance(xs[None], x_o[None])[0]) <= dball.eps + 1e-6:
                return data, xs, q, True
            # the encoder's overshoot, in whole levels, pushed back with one level to spare
            ks = torch.round(xs * 255)
            if linf:
                over = (ks - (ko + m)).clamp_min(0) - ((ko - m) - ks).clamp_min(0)
            else:
                over = ks - torch.round(dball.project(xs[None], x_o[None])[0] * 255)
            k_in = (k_in - over - torch.sign(over)).clamp(0, 255)
    assert first is not None
    return first[0], first[1], first[2], False


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
    checks: bool = True             # honesty flags (preempt.attacks.checks)
    certify: bool = False           # randomized-smoothing certificate per image (ℓ2 radius)
    surrogate: object = None        # blackbox suite: a torch model to craft transfer attacks on
    sigma: float = 0.25
    n0: int = 100
    n: int = 10000
    alpha: float = 0.001
    resolution: str = "auto"        # auto | model | full: attack the model input or every photo pixel
    uploads: str | None = None      # service transforms (preempt.core.upload spec): each photo also attacked through
                                    # the real codec, before and after the transform

    def describe(self) -> dict:
        """The attacks' parameters, as reports state them."""
        from ..attacks.suite import attack_names

        attacks = [f"pgd-{self.steps}"] if self.suite == "pgd" else (
            ["square"] + (["transfer-pgd-20", "transfer-apgd-ce"] if self.surrogate is not None else [])
            if self.suite == "blackbox" else attack_names(self.suite))
        attacks += ["adaptive"] if self.adaptive else []
        attacks += [str(c) for c in upload.concrete(upload.parse(self.uploads), (1 << 30, 1 << 30))]
        return {"suite": self.suite, "attacks": attacks, "attack": "pgd" if self.suite == "pgd" else self.suite,
                "steps": self.steps, "step_size": self.step_size or self.eps / 4, "norm": self.norm,
                "eps": self.eps, "random_start": True, "restarts": self.restarts, "seed": self.seed,
                "surrogate": getattr(self.surrogate, "name", None), "resolution": self.resolution,
                "uploads": self.uploads,
                "certify": {"sigma": self.sigma, "n0": self.n0, "n": self.n, "alpha": self.alpha} if self.certify else None}


def pair_originals(files: list[Path], originals: list[Path]) -> list[Path]:
    """One original per file: by name (``NAME.robust.png`` ↔ ``NAME.*``) where every name matches
    exactly one original, else by position when the counts agree (see :func:`paired_by_name`)."""
    if paired_by_name(files, originals):
        by_stem = {o.stem: o for o in originals}
        return [by_stem[k] for k in _original_stems(files)]
    if len(originals) == len(files):
        return originals
    raise ValueError(f"{len(files)} images but {len(originals)} originals, and their names do not pair them; "
                     "give one original per image, in the same order")


def _original_stems(files: list[Path]) -> list[str]:
    """``NAME.robust.png`` → ``NAME``: the stem each file's original has."""
    return [f.stem[: -len(".robust")] if f.stem.endswith(".robust") else f.stem for f in files]


def paired_by_name(files: list[Path], originals: list[Path]) -> bool:
    """True where every file's name matches exactly one original."""
    stems = [o.stem for o in originals]
    return all(stems.count(k) == 1 for k in _original_stems(files))


@dataclass
class VerifyReport:
    files: list[FileResult]
    flags: list = field(default_factory=list)   # preempt.attacks.checks.Flag, from the first batch
    warnings: list[str] = field(default_factory=list)  # one line each, e.g. doubtful pairs


def verify_files(paths: Iterable[str | Path], model, *, originals: Iterable[str | Path] | None = None,
                 config: VerifyConfig | None = None, device: str = "cpu", batch_size: int = 64,
                 on_file: Callable[[FileResult], None] | None = None) -> VerifyReport:
    """Attack every photo (and its original, when given); one FileResult per photo, plus the
    honesty flags.  With ``config.adaptive`` the adaptive white-box attack runs on what survived;
    with ``config.certify`` each photo gets a randomized-smoothing certificate."""
    from ..attacks import adaptive, pgd, run_suite
    from ..attacks.checks import run_checks

    cfg = config or VerifyConfig()
    if not model.differentiable and (cfg.suite != "blackbox" or cfg.adaptive):
        raise ValueError(f"{model.name} has no gradients (ONNX): use --suite blackbox, without --adaptive")
    threat = threat_model(cfg.norm, cfg.eps)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    skipped: list[Path] = []
    files = [p for p, _ in iter_images(paths, skipped=skipped)]
    if not files:
        raise NoImages(nothing_found(list(paths), skipped))
    orig_files = [p for p, _ in iter_images(originals)] if originals else []
    origs = pair_originals(files, orig_files) if originals else None
    by_position = bool(originals) and not paired_by_name(files, orig_files)
    delta = ((getattr(model, "card", None) or {}).get("threat_model") or {}).get("delta")
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
            orig = None
            if origs:
                orig = load_photo(origs[i])
                if orig.pixels.shape != photo.pixels.shape:
                    raise PhotoError(f"original {origs[i]} has size {orig.size}, not {photo.size}")
            todo.append((f, photo, orig))
        except PhotoError as e:
            emit(FileResult(str(f), "failed", error=str(e)))

    chains = upload.parse(cfg.uploads)

    def attack(x, y, correct) -> tuple[torch.Tensor, list, list[dict]]:
        """``correct``: the clean predictions already compared with ``y`` (no second forward pass).
        Photos larger than the model input are attacked at model resolution over the image of
        their ε-ball, which contains every full-resolution attack (preempt.core.resolution)."""
        x_full = x
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
        details: list[dict] = [{} for _ in range(len(x))]
        if chains and correct.any():  # every clean-correct photo, so the report names each transform's outcome
            idx = correct.nonzero().squeeze(1)
            up, det, _ = upload.attack_uploads(model, x_full[idx], y[idx], threat, chains, steps=cfg.steps,
                                               restarts=cfg.restarts, resolution=cfg.resolution, generator=gen)
            for j, i in enumerate(idx.tolist()):
                details[i] = det[j]
                if robust[i] and not up[j]:
                    broken[i] = next(k for k, v in det[j].items() if v != "ok")
            robust[idx[~up]] = False
        return robust, broken, details

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
        robust, broken, ups = attack(x, y, pred == y)
        # y is the model's label on the originals, so they are correct by construction
        on_originals = attack(xo, y, torch.ones_like(y, dtype=torch.bool)) if xo is not None else None
        dt = (time.perf_counter() - t0) / len(batch)
        if first and cfg.checks:
            mi = at_model_input(model, x, threat, cfg.resolution)
            report.flags = run_checks(mi.model, mi.x, y, mi.threat, broken_by=broken if cfg.suite == "standard" else None,
                                      generator=gen)
            first = False
        for j, (f, _p, o) in enumerate(batch):
            m = {"clean_correct": bool(pred[j] == y[j]), "robust": bool(robust[j]), "broken_by": broken[j],
                 "label_source": source[j], "seconds": round(dt, 4)}
            if chains:
                m["uploads"] = ups[j]
            if xo is not None and on_originals is not None:
                rob_o, broken_o, ups_o = on_originals
                m["original_robust"] = bool(rob_o[j])
                m["original_broken_by"] = broken_o[j]
                if chains:
                    m["original_uploads"] = ups_o[j]
                m["linf_to_original"] = float((x[j] - xo[j]).abs().max())
                m["paired_by"] = "position" if by_position else "name"
                if by_position and delta is not None and cfg.norm == "linf" and m["linf_to_original"] > delta + 0.5 / 255:
                    report.warnings.append(f"{f}: paired by position with {o.path}, which is {m['linf_to_original']:.3f} "
                                           f"away (ℓ∞), further than the model's δ = {delta:g}: is it its original?")
                m["l2_to_original"] = float((x[j] - xo[j]).flatten().norm())
                m["psnr_to_original"] = round(float(psnr(x[j:j + 1], xo[j:j + 1])[0]), 2)
                m["ssim_to_original"] = round(float(ssim(x[j:j + 1], xo[j:j + 1])[0]), 4)
            if cfg.certify:
                from ..defenses.smoothing import certify

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
