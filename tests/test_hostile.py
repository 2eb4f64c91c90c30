"""A corpus of odd and hostile inputs, generated small: each kind must either be processed (an
odd but valid photo) or fail alone with one line naming the file and the cause, while the good
photo beside it is processed, the inputs stay byte for byte as they were, and no temporary file
is left behind."""
import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

from preempt.cli import app

runner = CliRunner()
RNG = np.random.default_rng(0)


def _png(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _grey(w=13, h=9) -> Image.Image:
    return Image.fromarray(RNG.integers(0, 256, (h, w), dtype=np.uint8), "L")


def _rgb(w=13, h=9) -> Image.Image:
    return Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def _bomb_png(w: int, h: int) -> bytes:
    """A tiny PNG whose header claims w×h pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _exif_rotated() -> bytes:
    im = _rgb(16, 8)
    ex = Image.Exif()
    ex[0x0112] = 6
    return _save(im, "JPEG", exif=ex.tobytes())


def _multipage_tiff() -> bytes:
    buf = io.BytesIO()
    _grey().save(buf, "TIFF", save_all=True, append_images=[_grey(), _grey()])
    return buf.getvalue()


def _animated_gif_named_png() -> bytes:
    buf = io.BytesIO()
    frames = [_rgb().convert("P") for _ in range(3)]
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def _png_with_text(n: int) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * n)
    return _png(_grey(), pnginfo=info)


def _png_wrong_crc() -> bytes:
    b = bytearray(_png(_grey(40, 40)))
    i = b.index(b"IDAT") + 10
    b[i] ^= 0xFF
    return bytes(b)


def _preempt_meta_garbage() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("preempt", '{"preempt": "0", "label": 99999999999, "source": "../../etc/passwd"}')
    return _png(_grey(), pnginfo=info)


def _icc_garbage() -> bytes:
    return _save(_rgb(), "JPEG", icc_profile=b"not a profile at all" * 10)


# name -> (bytes or a callable making them, expected: "ok" or a substring of the one-line error)
CASES = {
    "empty-png.png": (b"", "empty file"),
    "empty.jpg": (b"", "empty file"),
    "text.png": (b"hello, I am not an image\n" * 10, "not an image"),
    "html.jpg": (b"<!doctype html><html><body>gotcha</body></html>", "not an image"),
    "svg.png": (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "not an image"),
    "zip.png": (b"PK\x03\x04" + b"\0" * 100, "not an image"),
    "truncated-png.png": (lambda: _png(_grey(60, 60))[:200], "cannot decode"),
    "truncated.jpg": (lambda: _save(_rgb(60, 60), "JPEG")[:300], "cannot decode"),
    "soi-only.jpg": (b"\xff\xd8", "not an image"),
    "bad-crc.png": (_png_wrong_crc, "cannot decode"),
    "gif-header-only.png": (b"GIF89a", "not an image"),
    "bmp-header-only.bmp": (b"BM" + b"\0" * 10, "not an image"),
    "tiff-header-only.tif": (b"II*\x00" + b"\0" * 8, "not an image"),
    "webp-header-only.webp": (b"RIFF\0\0\0\0WEBPVP8 ", "cannot decode"),
    "bomb.png": (lambda: _bomb_png(20000, 20000), "decompression bomb"),
    "zero-width.png": (lambda: _bomb_png(0, 10), "not an image"),
    "pixel.png": (lambda: _png(_grey(1, 1)), "ok"),
    "column.png": (lambda: _png(_grey(1, 50)), "ok"),
    "row.png": (lambda: _png(_grey(50, 1)), "ok"),
    "two-by-one.png": (lambda: _png(_grey(2, 1)), "ok"),
    "mode-1.png": (lambda: _png(_grey().convert("1")), "ok"),
    "mode-I16.png": (lambda: _png(Image.fromarray(RNG.integers(0, 65535, (9, 13), dtype=np.uint16))), "ok"),
    "mode-I.tif": (lambda: _save(Image.fromarray(RNG.integers(0, 2 ** 20, (9, 13), dtype=np.int32), "I"), "TIFF"), "ok"),
    "mode-F.tif": (lambda: _save(Image.fromarray(RNG.random((9, 13), dtype=np.float32), "F"), "TIFF"), "ok"),
    "mode-LA.png": (lambda: _png(_grey().convert("LA")), "ok"),
    "mode-P.png": (lambda: _png(_rgb().convert("P")), "ok"),
    "mode-P-transparent.png": (lambda: _png(_rgb().convert("P"), transparency=0), "ok"),
    "mode-RGBA-clear.png": (lambda: _png(Image.new("RGBA", (13, 9), (0, 0, 0, 0))), "ok"),
    "mode-CMYK.jpg": (lambda: _save(_rgb().convert("CMYK"), "JPEG"), "ok"),
    "mode-LAB.tif": (lambda: _save(_rgb().convert("LAB"), "TIFF"), "ok"),
    "grey.jpg": (lambda: _save(_grey(), "JPEG"), "ok"),
    "progressive.jpg": (lambda: _save(_rgb(40, 30), "JPEG", progressive=True), "ok"),
    "exif-rotated.jpg": (_exif_rotated, "ok"),
    "icc-garbage.jpg": (_icc_garbage, "ok"),
    "multipage.tiff": (_multipage_tiff, "ok"),
    "animated-gif-inside.png": (_animated_gif_named_png, "ok"),
    "lossless-alpha.webp": (lambda: _save(_rgb().convert("RGBA"), "WEBP", lossless=True), "ok"),
    "one-bit.bmp": (lambda: _save(_grey().convert("1"), "BMP"), "ok"),
    "UPPER.PNG": (lambda: _png(_grey()), "ok"),
    "фото ✓.png": (lambda: _png(_grey()), "ok"),
    "[bold red]markup[red] (1).png": (lambda: _png(_grey()), "ok"),
    "big-text-chunk.png": (lambda: _png_with_text(200_000), "ok"),
    "meta-garbage.png": (_preempt_meta_garbage, "ok"),
    "constant.png": (lambda: _png(Image.new("L", (13, 9), 255)), "ok"),
    "twin.jpg": (lambda: _save(_grey(), "JPEG"), "ok"),
    "twin.png": (lambda: _png(_grey()), "output name collides with"),  # both would be twin.robust.png
}


@pytest.fixture()
def corpus(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    _grey().save(d / "good.png")
    for name, (data, _) in CASES.items():
        (d / name).write_bytes(data() if callable(data) else data)
    (d / "broken-link.png").symlink_to(d / "does-not-exist.png")
    (d / "link-to-good.png").symlink_to(d / "good.png")
    (d / ".hidden.png").write_bytes(b"")           # hidden files are not inputs
    (d / "notes.txt").write_text("not a photo")    # other types are not inputs
    return d


def _snapshot(d):
    return {p.name: (p.read_bytes() if p.exists() else None) for p in sorted(d.iterdir())}


def test_a_corpus_of_hostile_inputs(tmp_path, corpus, tiny_model_file):
    assert len(CASES) >= 40
    before = _snapshot(corpus)
    out = tmp_path / "out"
    r = runner.invoke(app, ["robustify", str(corpus), "-o", str(out), "--model", str(tiny_model_file), "--json",
                            "--check", "pgd"])
    assert r.exit_code == 1, r.output            # some files failed
    assert "Traceback" not in r.output and "internal error" not in r.output
    files = {f["src"].rsplit("/", 1)[-1]: f for f in json.loads(r.stdout)["files"]}
    assert files["good.png"]["status"] in ("robust", "not-robust")
    assert files["link-to-good.png"]["status"] in ("robust", "not-robust")
    assert files["broken-link.png"]["status"] == "failed" and "no such file" in files["broken-link.png"]["error"]
    assert ".hidden.png" not in files and "notes.txt" not in files
    for name, (_, expect) in CASES.items():
        f = files[name]
        if expect == "ok":
            assert f["status"] in ("robust", "not-robust"), (name, f)
            assert (out / f["dst"].rsplit("/", 1)[-1]).exists()
        else:
            assert f["status"] == "failed", (name, f)
            assert expect in f["error"], (name, f["error"])
            assert "\n" not in f["error"]
            # the terminal line names the file and the cause
            assert name in r.stderr.replace("\n", "") or name[:10] in r.stderr
    assert _snapshot(corpus) == before                        # inputs untouched
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # no temporary files left
    # the outputs are real photos of the same size as their inputs
    from preempt.pipeline.photos import load_photo

    for name in ("column.png", "mode-CMYK.jpg", "exif-rotated.jpg", "mode-P-transparent.png"):
        src, dst = load_photo(corpus / name), load_photo(files[name]["dst"])
        assert src.pixels.shape == dst.pixels.shape
    # a rerun resumes: everything written is skipped, the failures fail again, nothing else changes
    r2 = runner.invoke(app, ["robustify", str(corpus), "-o", str(out), "--model", str(tiny_model_file), "--json",
                             "--check", "pgd"])
    again = {f["src"].rsplit("/", 1)[-1]: f["status"] for f in json.loads(r2.stdout)["files"]}
    assert all(again[n] == ("skipped" if files[n]["status"] != "failed" else "failed") for n in files)


def test_verify_goes_past_hostile_inputs(corpus, tiny_model_file):
    r = runner.invoke(app, ["verify", str(corpus), "--model", str(tiny_model_file), "--json", "--no-checks"])
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and "internal error" not in r.output
    doc = json.loads(r.stdout)
    files = {i["src"].rsplit("/", 1)[-1]: i for i in doc["images"]}
    assert files["good.png"]["status"] in ("robust", "not-robust")
    for name, (_, expect) in CASES.items():
        bad = expect not in ("ok", "output name collides with")  # names collide only for robustify's outputs
        assert (files[name]["status"] == "failed") == bad, (name, files[name])
        if bad:
            assert expect in files[name]["error"]


def test_unreadable_files_and_folders_fail_alone_and_are_named(tmp_path, tiny_model_file, monkeypatch):
    """chmod 000 as a non-root user: simulated (CI runs as root, for whom nothing is unreadable)."""
    import os

    d = tmp_path / "in"
    (d / "locked").mkdir(parents=True)
    (d / "good.png").write_bytes(_png(_grey()))
    (d / "secret.png").write_bytes(_png(_grey()))
    (d / "locked" / "inside.png").write_bytes(_png(_grey()))
    locked, secret = str(d / "locked"), str(d / "secret.png")
    real_scandir, real_access, real_open = os.scandir, os.access, Image.open

    def scandir(path=".", *a):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_scandir(path, *a)

    def image_open(fp, *a, **kw):
        if isinstance(fp, (str, os.PathLike)) and os.fspath(fp) == secret:
            raise PermissionError(13, "Permission denied", secret)
        return real_open(fp, *a, **kw)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: os.fspath(p) != locked and real_access(p, mode, **kw))
    monkeypatch.setattr(Image, "open", image_open)
    r = runner.invoke(app, ["robustify", str(d), "-o", str(tmp_path / "out"), "--model", str(tiny_model_file),
                            "--json", "--check", "pgd"])
    assert r.exit_code == 1, r.output
    files = {f["src"].rsplit("/", 1)[-1]: f for f in json.loads(r.stdout)["files"]}
    assert files["good.png"]["status"] in ("robust", "not-robust")
    assert files["secret.png"]["status"] == "failed" and "permission denied" in files["secret.png"]["error"]
    assert files["locked"]["status"] == "failed" and "cannot be listed" in files["locked"]["error"]
    assert "locked" in r.stderr and "secret.png" in r.stderr


def test_a_named_pipe_and_a_nan_tiff_get_one_line_and_the_batch_goes_on(tmp_path, tiny_model_file):
    import os

    import numpy as np
    from PIL import Image

    d = tmp_path / "in"
    d.mkdir()
    good = d / "good.png"
    good.write_bytes(_png(_grey()))
    fifo = d / "pipe.png"
    os.mkfifo(fifo)
    nan = np.full((12, 12), 0.5, np.float32)
    nan[3, 4] = np.nan
    Image.fromarray(nan, "F").save(d / "nan.tif")
    import signal

    def hung(*_):
        raise TimeoutError("robustify hung on a named pipe")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    try:
        r = runner.invoke(app, ["robustify", str(fifo), str(d / "nan.tif"), str(good), "-o", str(tmp_path / "out"),
                                "--model", str(tiny_model_file), "--json", "--check", "pgd"])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert r.exit_code == 1, r.output
    files = {f["src"].rsplit("/", 1)[-1]: f for f in json.loads(r.stdout)["files"]}
    assert files["pipe.png"]["status"] == "failed" and "not a regular file" in files["pipe.png"]["error"]
    assert files["nan.tif"]["status"] == "failed" and "not finite" in files["nan.tif"]["error"]
    assert files["good.png"]["status"] in ("robust", "not-robust")
    assert "pipe.png" in r.stderr and "nan.tif" in r.stderr
