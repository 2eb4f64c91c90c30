"""Grouping photos into batches of one size, from their headers where possible."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

from PIL import Image

from .photos import Photo, PhotoError, load_photo

MAX_BATCH_PIXELS = 2_000_000  # pixels per batch (bounds memory for big photos)


def probe(path: Path) -> tuple[int, int, int]:
    """(C, H, W) of the photo as preempt will see it, from the header alone where possible."""
    if path.exists() and not path.is_file():
        load_photo(path)  # a folder, a named pipe, a device: its one-line PhotoError (never opened)
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


def batches(items: list, key: Callable, max_batch: int) -> Iterable[list]:
    groups: dict = defaultdict(list)
    for it in items:
        groups[key(it)].append(it)
    for shape, group in groups.items():
        per = max(1, min(max_batch, MAX_BATCH_PIXELS // max(1, shape[1] * shape[2])))
        for i in range(0, len(group), per):
            yield group[i:i + per]


def planned_batches(paths: list, max_batch: int, path: Callable = lambda p: p) -> list[list]:
    """The batches a run forms from these inputs' headers (``path(item)`` is the file); an input whose
    header cannot be read is a batch of its own (it fails when loaded)."""
    def key(item) -> tuple:
        try:
            return probe(path(item))
        except PhotoError:
            return (0, 0, 0, str(path(item)))
    return list(batches(paths, key=key, max_batch=max_batch))


def chw(photo: Photo) -> tuple[int, int, int]:
    h, w, c = photo.pixels.shape
    return c, h, w


