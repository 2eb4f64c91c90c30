"""``preempt robustify`` on files: plan the outputs, batch the photos, robustify, write what was judged.

Photos of the same size and channel count are batched together; a bad file fails alone and the
batch goes on; outputs are written atomically and never over an input; an existing output is
skipped unless ``overwrite``, so a rerun resumes where an interrupted one stopped.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..algorithms.robustify import ImageResult, RobustifyConfig, judge, robustify
from ..core.metrics import change
from ..core.threat import ThreatModel
from ..errors import UsageError
from ..models.protocol import Model
from ..version import __version__
from .batching import batches, planned_batches, probe
from .jpeg import encode_jpeg_within, file_format, jpeg_quality
from .memory import check_fits
from .photos import (
    NOT_ROBUST_TAG,
    ROBUST_TAG,
    Photo,
    PhotoError,
    decode,
    encode,
    from_tensor,
    iter_images,
    load_photo,
    nothing_found,
    output_path,
    read_meta,
    restamp_jpeg,
    write_atomic,
)
from .results import FileResult, NoImages, Status, in_input_order, label_name
from .shard import Shard, batch_seed, take


@dataclass
class _Planned:
    src: Path
    dst: Path
    shape: tuple[int, int, int]  # (C, H, W) from the header
    others: tuple[Path, ...] = ()  # the other names its output may have (removed once the new one is written)


def plan_outputs(inputs: list[tuple[Path, Path]], out_dir: Path, model: Model | Sequence[Model], cfg: RobustifyConfig, *,
                 fmt: str, overwrite: bool, emit: Callable[[FileResult], None]) -> list[_Planned]:
    """The inputs to robustify, each with its output path; the others are emitted as failed
    (the output would overwrite an input, two inputs would write one file, the photo cannot be
    read or would not fit in memory) or skipped (the output exists and ``overwrite`` is off)."""
    in_set = {p.resolve() for p, _ in inputs if p.exists()}
    todo: list[_Planned] = []
    claimed: dict[Path, Path] = {}  # an output path (resolved) -> the input that writes it
    for src, root in inputs:
        dst = output_path(src, root, out_dir, file_format(src, fmt, cfg))
        names = _names(src, root, out_dir, dst, fmt)
        done_before = [d for d in names if d.exists()]
        if any(d.resolve() in in_set for d in names):
            emit(FileResult(str(src), "failed", str(dst), error="output would overwrite an input"))
            continue
        if any(d.resolve() in claimed for d in names):
            other = next(claimed[d.resolve()] for d in names if d.resolve() in claimed)
            emit(FileResult(str(src), "failed", str(dst), error=f"output name collides with {other}"))
            continue
        claimed.update({d.resolve(): src for d in names})
        if done_before and not overwrite:
            emit(_skipped(src, done_before[0], model, cfg))
            continue
        try:
            shape = probe(src)
        except PhotoError as e:
            emit(FileResult(str(src), "failed", error=str(e)))
            continue
        too_big = check_fits(shape[1] * shape[2], _path_for(model, shape, cfg))
        if too_big:
            emit(FileResult(str(src), "failed", error=too_big))
            continue
        todo.append(_Planned(src, dst, shape, tuple(names[1:])))
    return todo


def _names(src: Path, root: Path, out_dir: Path, dst: Path, fmt: str) -> list[Path]:
    """Every name this input's output may have: robust or not (``.not-robust``), and with ``--format
    auto`` the PNG a JPEG falls back to; the robust name of the planned format first."""
    exts = [dst.suffix[1:]] + (["png"] if fmt == "auto" and dst.suffix == ".jpg" else [])
    return [output_path(src, root, out_dir, e, robust=ok) for ok in (True, False) for e in exts]


def _record(model: Model | Sequence[Model], cfg: RobustifyConfig) -> dict:
    """The settings an output's "robust" is for (written into it, compared on a rerun)."""
    return {"model": model_name(model), "norm": cfg.norm, "delta": cfg.delta, "eps": cfg.eps, "survive": cfg.survive,
            "max_delta": cfg.flat()["max_delta"], "check_resolution": cfg.check_at(),
            "final": cfg.final.describe() if cfg.final is not None else None}


def model_name(model: Model | Sequence[Model]) -> str:
    """``NAME``, or ``A+B`` for photos robustified for several models at once."""
    return "+".join(m.name for m in models_of(model))


def models_of(model: Model | Sequence[Model]) -> list[Model]:
    """The models a run is robust for, as a list."""
    return list(model) if isinstance(model, Sequence) else [model]


def _first(model: Model | Sequence[Model]) -> Model:
    return models_of(model)[0]


def _skipped(src: Path, dst: Path, model: Model | Sequence[Model], cfg: RobustifyConfig) -> FileResult:
    """An output that exists: skipped, and robust for this run only if preempt recorded it robust for these
    settings (so a resumed ``robustify … && upload`` is as safe as the first run)."""
    meta, now = read_meta(dst), _record(model, cfg)
    recorded = meta.get("status")
    differ = [k for k, v in now.items() if meta.get(k) != v]
    if recorded is None:
        why = "holds no record of robustify's verdict, so it is not known to be robust"
    elif differ:
        why = ("was robustified for other settings (" + ", ".join(f"{k} {meta.get(k)}" for k in differ)
               + "), so it is not known to be robust for these")
    else:
        why = f"was written {recorded}"
    ok = recorded == "robust" and not differ
    label = meta.get("label") if isinstance(meta.get("label"), int) else None
    return FileResult(str(src), "skipped", str(dst), label=label,
                      label_name=None if label is None else label_name(_first(model).classes or [], label),
                      error=f"output exists and {why} (--overwrite robustifies it again)",
                      metrics={"robust": ok, "recorded": recorded} if recorded else {"robust": ok})


def _path_for(model: Model | Sequence[Model], chw: tuple[int, int, int], cfg: RobustifyConfig) -> str:
    """model, full or survive: the path robustify will take for a photo of this shape (for the memory estimate)."""
    from ..core.resolution import resampling_for

    if cfg.survive:
        return "survive"
    if cfg.optimizer == "rmsprop":
        return "full"
    try:
        if isinstance(model, (list, tuple)) and len(model) > 1:
            return "full"  # several models: the photo itself is the variable
        return "model" if resampling_for(_first(model), chw[1:], cfg.resolution) is not None else "full"
    except Exception:
        return "full"


def robustify_files(paths: Iterable[str | Path], out_dir: str | Path, model: Model | Sequence[Model], *,
                    config: RobustifyConfig | None = None, fmt: str = "auto", quality: int | None = None,
                    overwrite: bool = False, strip_metadata: bool = False, batch_size: int = 64,
                    device: str = "cpu", shard: Shard | None = None,
                    on_file: Callable[[FileResult], None] | None = None,
                    on_plan: Callable[[int], None] | None = None,
                    on_step: Callable[[list[Path], int, int, int], None] | None = None) -> list[FileResult]:
    """Robustify every photo under ``paths`` into ``out_dir``; returns one FileResult per input.

    ``fmt``: ``png``, ``jpeg``, or ``auto`` (JPEG for JPEG inputs when ``config.survive`` includes a
    JPEG re-encode, at the highest quality robustified for, if that JPEG stays inside δ and robust;
    PNG otherwise).  A JPEG is kept inside the δ-ball (:func:`encode_jpeg_within`) or reported
    ``over-budget``, and judged as decoded.  ``on_plan(n)`` is told the number of inputs once they
    are listed, ``on_step(files, k, steps, verified)`` after each outer step of a batch (for a
    progress bar).  ``shard``: only this share's batches (:mod:`preempt.pipeline.shard`); results are in
    input order."""
    cfg = config or RobustifyConfig.for_model(model)
    if isinstance(model, (list, tuple)):
        model = model[0] if len(model) == 1 else list(model)
        if isinstance(model, list) and fmt == "jpeg":
            raise UsageError("--format jpeg re-judges the decoded JPEG with one model; with several models write PNG")
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
    all_inputs = [src for src, _ in inputs]
    inputs = take(inputs, shard, lambda items: planned_batches(items, batch_size, path=lambda it: it[0]))
    if on_plan:
        on_plan(len(inputs))
    todo = plan_outputs(inputs, out_dir, model, cfg, fmt=fmt, overwrite=overwrite, emit=emit)
    writer = _Writer(model, cfg, fmt=fmt, quality=quality, strip_metadata=strip_metadata, device=device)
    for batch in batches(todo, key=lambda t: t.shape, max_batch=batch_size):
        photos: list[tuple[_Planned, Photo]] = []
        for item in batch:
            try:
                photos.append((item, load_photo(item.src)))
            except PhotoError as e:
                emit(FileResult(str(item.src), "failed", error=str(e)))
        groups = defaultdict(list)  # the header can lie; group again on decoded pixels
        for item, photo in photos:
            groups[photo.pixels.shape].append((item, photo))
        for group in groups.values():
            x = torch.stack([p.tensor(device) for _, p in group])
            res = robustify(model, x, config=cfg, on_step=_progress(on_step, [item.src for item, _ in group]))
            for i, (item, photo) in enumerate(group):  # seconds: from the batch's start until this photo was done
                emit(writer.write(item, photo, x[i], res.x[i], res.images[i], res.images[i].seconds))
    return in_input_order(results, all_inputs)


def _progress(on_step: Callable[[list[Path], int, int, int], None] | None,
              files: list[Path]) -> Callable[[int, int, int], None] | None:
    """robustify's per-step callback, naming the batch's files."""
    if on_step is None:
        return None
    return lambda k, steps, verified: on_step(files, k, steps, verified)


class _Writer:
    """Encodes one robustified photo, judges exactly what will be on disk, writes it atomically."""

    def __init__(self, model: Model | Sequence[Model], cfg: RobustifyConfig, *, fmt: str, quality: int | None,
                 strip_metadata: bool, device: str) -> None:
        self.model, self.cfg, self.fmt, self.quality = model, cfg, fmt, quality
        self.strip_metadata, self.device = strip_metadata, device
        self.dball: ThreatModel = cfg.delta_ball()
        self.classes = _first(model).classes or []

    def write(self, item: _Planned, photo: Photo, x_o: torch.Tensor, x_r: torch.Tensor, info: ImageResult,
              seconds: float) -> FileResult:
        cfg, src, dst = self.cfg, item.src, item.dst
        meta = {"preempt": __version__, **_record(self.model, cfg), "label": info.label, "source": src.name}
        try:
            out = from_tensor(x_r, photo)
            metrics = {**info.to_dict(), "seconds": round(seconds, 4)}
            data: bytes | None = None
            if file_format(src, self.fmt, cfg) == "jpeg":
                data, status, metrics = self._jpeg(out, x_o, info, metrics, meta)
                if self.fmt == "auto" and status != "robust" and info.robust:
                    # auto promised the least surprise: the JPEG did not keep δ or robustness, the PNG does
                    dst = dst.with_suffix(".png")
                    metrics = {**info.to_dict(), "seconds": round(seconds, 4), "passes": metrics["passes"],
                               "format_note": f"JPEG {status} at quality {metrics['quality']}: wrote PNG"}
                    data = None
            if data is None:  # lossless: the file holds exactly the pixels robustify judged
                status = "robust" if info.robust else "not-robust"
                data = encode(out, "png", strip_metadata=self.strip_metadata, meta={**meta, "status": status})
                if not (decode(data).pixels == out.pixels).all():
                    raise PhotoError("PNG round trip changed pixels")
            else:  # the verdict on the decoded JPEG goes into its comment (a rerun reads it)
                data = restamp_jpeg(data, meta, {**meta, "status": status})
            metrics["robust"] = status == "robust"
            metrics["bytes"] = len(data)
            if status != "robust":  # never under a name a glob of robust outputs (*.robust.*) would match
                dst = dst.with_name(dst.name.replace(ROBUST_TAG + ".", NOT_ROBUST_TAG + ".", 1))
            write_atomic(dst, data)
            for other in item.others:  # --overwrite: the earlier output of another verdict or format goes
                if other != dst and other.exists():
                    other.unlink()
        except PhotoError as e:
            return FileResult(str(src), "failed", str(dst), error=str(e))
        return FileResult(str(src), status, str(dst), label=info.label, label_name=label_name(self.classes, info.label),
                          metrics=metrics)

    def _jpeg(self, out: Photo, x_o: torch.Tensor, info: ImageResult, metrics: dict,
              meta: dict) -> tuple[bytes, Status, dict]:
        """Lossy: keep the file inside the δ-ball, then verify again what was written."""
        q = jpeg_quality(self.quality, self.cfg)
        data, xs, q_used, within = encode_jpeg_within(out, x_o, self.dball, q, strip_metadata=self.strip_metadata,
                                                      meta=meta)
        y1 = torch.tensor([info.label], device=xs.device)
        gen = torch.Generator(device=self.device).manual_seed(batch_seed(self.cfg.seed + 1, [meta["source"]]))
        # one model: robustify_files refuses --format jpeg with several (the decoded JPEG is judged by one)
        final: dict = {}
        ok, p, det = judge(_first(self.model), xs[None], y1, self.cfg, generator=gen, details=final)
        moved = change(xs[None], x_o[None])
        metrics = {**metrics, **final, "seconds": metrics["seconds"] + final.get("final_seconds", 0.0),
                   "passes": metrics["passes"] + int(p), "robust_before_encoding": info.robust,
                   "uploads": det[0], "quality": q_used, **{k: float(v[0]) for k, v in moved.items()},
                   "within_budget": within}
        status: Status = "over-budget" if not within else ("robust" if bool(ok[0]) else "not-robust")
        return data, status, metrics
