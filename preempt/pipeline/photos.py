"""Reading and writing photos: EXIF orientation, modes, alpha, metadata, atomic writes.

Every photo becomes an 8-bit array ``(H, W, C)`` with C = 1 (grey) or 3 (colour) plus an
optional alpha plane, which is carried through untouched.  16-bit and 32-bit grey images are
reduced to 8 bits (the saved result is 8-bit); CMYK, YCbCr, LAB and HSV become RGB (their ICC
profile, which describes the old colour space, is then dropped).
"""
from __future__ import annotations

import io
import json
import os
import struct
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from ..errors import PreemptError, UsageError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
HEIF_EXTENSIONS = {".heic", ".heif"}
try:  # HEIC/HEIF photos (iPhones) when the optional pillow-heif is installed
    from pillow_heif import register_heif_opener

    register_heif_opener()
    EXTENSIONS |= HEIF_EXTENSIONS
except ImportError:  # pragma: no cover - depends on the environment
    pass
MAX_PIXELS = 100_000_000  # larger images are refused as possible decompression bombs
META_KEY = "preempt"
_ORIENTATION = 0x0112


class PhotoError(PreemptError):
    """A photo could not be read or written; str() is one line naming the cause."""


@dataclass
class Photo:
    pixels: np.ndarray                 # (H, W, C) uint8, C in {1, 3}
    alpha: np.ndarray | None = None    # (H, W) uint8
    mode: str = "RGB"                  # the file's original mode
    format: str | None = None
    exif: bytes | None = None
    icc: bytes | None = None
    meta: dict = field(default_factory=dict)  # what preempt wrote into an earlier output
    path: Path | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[1], self.pixels.shape[0]

    def tensor(self, device: str | torch.device = "cpu") -> torch.Tensor:
        """(C, H, W) float32 in [0, 1]."""
        return torch.from_numpy(np.ascontiguousarray(self.pixels.transpose(2, 0, 1))).to(device).float().div_(255)


def _to_8bit(img: Image.Image) -> Image.Image:
    a = np.asarray(img)
    if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
        raise PhotoError(f"{int((~np.isfinite(a)).sum()):,} pixel values are not finite (NaN or infinity): "
                         "the image has no defined pixels there")
    if img.mode.startswith("I;16") or (a.dtype != np.uint8 and a.size and a.max() > 255):
        a = np.round(a.astype(np.float64) / 257.0)
    elif img.mode == "F" and a.size and a.max() <= 1.0:
        a = np.round(a * 255.0)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")


def load_photo(path: str | Path | bytes) -> Photo:
    """Read a photo from a file (or from encoded bytes); raise :class:`PhotoError` with one clear
    line for anything wrong."""
    data = path if isinstance(path, (bytes, bytearray)) else None
    file = None if isinstance(path, (bytes, bytearray)) else Path(path)
    try:
        source: Path | io.BytesIO
        if file is None:
            if not data:
                raise PhotoError("empty file")
            source = io.BytesIO(data)
        elif file.is_dir():
            if not os.access(file, os.R_OK | os.X_OK):
                raise PhotoError("permission denied: this folder cannot be listed, so its photos were not read")
            raise PhotoError("is a directory")
        elif file.exists() and not file.is_file():  # opening a named pipe would wait for a writer for ever
            raise PhotoError("not a regular file (a named pipe, socket or device): refused")
        elif file.stat().st_size == 0:
            raise PhotoError("empty file")
        else:
            source = file
        with warnings.catch_warnings():
            # our own limit (MAX_PIXELS) decides, from the header, without touching Pillow's global one
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise Image.DecompressionBombError(f"{im.width}×{im.height} = {im.width * im.height:,} pixels, "
                                                       f"over preempt's limit of {MAX_PIXELS:,}")
                fmt = im.format
                im.load()
                exif = im.getexif()
                icc = im.info.get("icc_profile")
                meta_raw = im.info.get(META_KEY) or im.info.get("comment")
                im = ImageOps.exif_transpose(im) or im
    except PhotoError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise PhotoError(f"refused as a possible decompression bomb ({e})") from e
    except UnidentifiedImageError as e:
        raise PhotoError("not an image (or a format Pillow cannot read)") from e
    except FileNotFoundError as e:
        raise PhotoError("no such file" + (" (a broken symbolic link)" if file is not None and file.is_symlink() else "")) from e
    except PermissionError as e:
        raise PhotoError("permission denied") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise PhotoError(f"cannot decode: {e}") from e

    mode = im.mode
    alpha = None
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("I", "F") or mode.startswith("I;16"):
        im = _to_8bit(im)
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        if mode != "RGBX":
            icc = None  # the profile described the old colour space
        im = im.convert("RGB")
    elif mode not in ("L", "LA", "RGB", "RGBA", "La", "RGBa"):
        im = im.convert("RGBA" if "A" in mode else "RGB")
    if im.mode in ("LA", "La"):
        alpha = np.asarray(im.getchannel("A")).copy()
        im = im.convert("L") if im.mode == "LA" else im.convert("LA").convert("L")
    elif im.mode in ("RGBA", "RGBa"):
        alpha = np.asarray(im.getchannel("A")).copy()
        im = im.convert("RGB")
    px = np.asarray(im)
    if px.ndim == 2:
        px = px[:, :, None]
    if px.shape[0] == 0 or px.shape[1] == 0:
        raise PhotoError("image has no pixels")
    if _ORIENTATION in exif:
        del exif[_ORIENTATION]  # the pixels are now upright
    return Photo(np.array(px, dtype=np.uint8, order="C", copy=True), alpha, mode, fmt,
                 exif.tobytes() if len(exif) else None, icc, _parse_meta(meta_raw), file)


def _parse_meta(raw) -> dict:
    """preempt's record from a PNG text chunk or JPEG comment; {} when there is none."""
    if not isinstance(raw, (str, bytes)):
        return {}
    try:
        meta = json.loads(raw)
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) and "preempt" in meta else {}


def read_meta(path: str | Path) -> dict:
    """What preempt recorded in an earlier output (from the file's header, without decoding the pixels);
    {} when the file holds no record or cannot be read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return _parse_meta(im.info.get(META_KEY) or im.info.get("comment"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return {}


def restamp_jpeg(data: bytes, meta: dict, new: dict) -> bytes:
    """The JPEG ``data`` (encoded by :func:`encode` with ``meta``) with its comment saying ``new``
    instead; the image data, and so the decoded pixels, are untouched."""
    old, text = json.dumps(meta).encode(), json.dumps(new).encode()
    seg = b"\xff\xfe" + struct.pack(">H", len(old) + 2) + old
    at = data.find(seg)
    if at < 0:
        raise PhotoError("JPEG comment not found where it was written")
    return data[:at] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + data[at + len(seg):]


def from_tensor(x: torch.Tensor, like: Photo) -> Photo:
    """A new Photo with pixels from an 8-bit-grid tensor (C,H,W) and the rest from ``like``."""
    px = torch.round(x.detach().clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Photo(px, like.alpha, like.mode, like.format, like.exif, like.icc, dict(like.meta), like.path)


def to_pil(photo: Photo) -> Image.Image:
    px = photo.pixels
    if px.shape[2] == 1:
        im = Image.fromarray(px[:, :, 0], "L")
        if photo.alpha is not None:
            im.putalpha(Image.fromarray(photo.alpha, "L"))
    else:
        im = Image.fromarray(px, "RGB")
        if photo.alpha is not None:
            im.putalpha(Image.fromarray(photo.alpha, "L"))
    return im


def encode(photo: Photo, fmt: str = "png", *, quality: int = 95, strip_metadata: bool = False,
           meta: dict | None = None) -> bytes:
    """Encode to PNG (lossless) or JPEG bytes."""
    im = to_pil(photo)
    kw: dict = {}
    if not strip_metadata:
        if photo.exif:
            kw["exif"] = photo.exif
        if photo.icc:
            kw["icc_profile"] = photo.icc
    text = json.dumps(meta) if meta else None
    buf = io.BytesIO()
    if fmt == "png":
        if text:
            info = PngImagePlugin.PngInfo()
            info.add_text(META_KEY, text)
            kw["pnginfo"] = info
        im.save(buf, "PNG", **kw)
    elif fmt in ("jpeg", "jpg"):
        if photo.alpha is not None:
            raise PhotoError("JPEG cannot hold the alpha channel; write PNG")
        if text:
            kw["comment"] = text
        im.save(buf, "JPEG", quality=quality, subsampling=0 if quality >= 90 else -1, **kw)
    else:
        raise PhotoError(f"unsupported output format {fmt!r} (png or jpeg)")
    return buf.getvalue()


def load_image(path: str | Path, device: str | torch.device = "cpu") -> torch.Tensor:
    """A photo file as the tensor :func:`preempt.robustify` takes: (1, C, H, W) float in [0, 1],
    C = 1 (grey) or 3 (colour), upright (EXIF orientation applied).  Raises :class:`PhotoError`."""
    return load_photo(path).tensor(device)[None]


def save_image(x: torch.Tensor, path: str | Path, *, quality: int = 95) -> None:
    """Write a (C, H, W) or (1, C, H, W) tensor in [0, 1] as PNG (lossless) or, by the name's
    suffix, JPEG — atomically.  robustify's output is on the 8-bit grid, so a PNG holds it exactly."""
    if x.dim() == 4:
        if len(x) != 1:
            raise UsageError(f"save_image writes one image; got a batch of {len(x)}")
        x = x[0]
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        raise UsageError(f"save_image needs (C, H, W) with C = 1 or 3, got {tuple(x.shape)}")
    px = torch.round(x.detach().clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    fmt = "jpeg" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "png"
    write_atomic(path, encode(Photo(np.ascontiguousarray(px)), fmt, quality=quality))


def decode(data: bytes) -> Photo:
    """Decode bytes produced by :func:`encode` (to judge exactly what will be on disk)."""
    return load_photo(data)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise PhotoError(f"cannot write to {path.parent}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; an output is an ordinary file
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise PhotoError(f"cannot write {path}: {e.strerror or e}") from e


def iter_images(paths: Iterable[str | Path], *, exclude: Path | None = None,
                skipped: list[Path] | None = None) -> Iterator[tuple[Path, Path]]:
    """Yield (file, root) for each given file and each image found under each given folder.

    ``root`` is the folder the file was found under (its parent for a file given directly),
    so outputs can mirror sub-folders.  Files under ``exclude`` (the output folder) are skipped;
    files of other types found in folders are appended to ``skipped`` when given.
    """
    ex = exclude.resolve() if exclude else None
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for f in _walk(p):
                if f.is_dir():  # a folder that could not be listed: reported (it fails to load), not skipped
                    yield f, p
                    continue
                broken_link = f.is_symlink() and not f.exists()  # reported (it fails to load), not skipped
                if (not f.is_file() and not broken_link) or f.name.startswith("."):
                    continue
                if ex and (ex == f.resolve().parent or ex in f.resolve().parents):
                    continue
                if f.suffix.lower() in EXTENSIONS:
                    yield f, p
                elif skipped is not None:
                    skipped.append(f)
        else:
            yield p, p.parent


def _walk(root: Path) -> list[Path]:
    """Every file below ``root``, sorted, as ``sorted(root.rglob("*"))`` finds them — but a
    sub-folder that cannot be listed (permission denied) is returned itself instead of being
    skipped silently."""
    out: list[Path] = []
    unreadable: list[Path] = []

    def onerror(e: OSError) -> None:
        if e.filename is not None and Path(e.filename) != root:
            unreadable.append(Path(e.filename))

    for dirpath, _dirnames, filenames in os.walk(root, onerror=onerror):
        out += [Path(dirpath) / n for n in filenames]
    return sorted(out + unreadable)


def nothing_found(paths: Iterable[str | Path], skipped: list[Path], exclude: Path | None = None) -> str:
    """One line saying why no image was found: empty folders, only other file types, or only
    the output folder itself."""
    where = ", ".join(str(p) for p in paths)
    if skipped:
        kinds = sorted({f.suffix.lower() or "(no extension)" for f in skipped})
        hint = (" (HEIC needs the optional pillow-heif: pip install pillow-heif)"
                if set(kinds) & HEIF_EXTENSIONS and not HEIF_EXTENSIONS <= EXTENSIONS else "")
        return (f"no images found in {where}: {len(skipped)} file(s) of types preempt does not read "
                f"({', '.join(kinds)}; it reads {', '.join(sorted(EXTENSIONS))}){hint}")
    if exclude is not None and any(Path(p).is_dir() and Path(p).resolve() == exclude.resolve() for p in paths):
        return f"no images found in {where}: it is the output folder, whose files are never inputs; choose another -o"
    return f"no images found in {where}"


ROBUST_TAG, NOT_ROBUST_TAG = ".robust", ".not-robust"


def output_path(src: Path, root: Path, out_dir: Path, fmt: str = "png", *, robust: bool = True) -> Path:
    """``<out_dir>/<sub-folders under root>/<stem>.robust.<png|jpg>``, or ``<stem>.not-robust.<ext>``
    for a photo that did not come out robust: a glob of robust outputs (``*.robust.*``) never
    includes an unprotected photo."""
    ext = "jpg" if fmt in ("jpeg", "jpg") else "png"
    try:
        rel = src.parent.resolve().relative_to(root.resolve())
    except ValueError:
        rel = Path()
    return out_dir / rel / f"{src.stem}{ROBUST_TAG if robust else NOT_ROBUST_TAG}.{ext}"


def original_stem(path: Path) -> str:
    """``NAME.robust.png`` / ``NAME.not-robust.png`` → ``NAME``: the stem of the photo it was made from."""
    for tag in (ROBUST_TAG, NOT_ROBUST_TAG):
        if path.stem.endswith(tag):
            return path.stem[: -len(tag)]
    return path.stem
