import io

import numpy as np
import pytest
import torch
from PIL import Image

from preempt.pipeline import photos
from preempt.pipeline.photos import PhotoError, encode, load_photo, output_path, write_atomic

BASE = np.arange(6, dtype=np.uint8).reshape(2, 3) * 40  # asymmetric 2×3

EXPECTED = {
    1: BASE, 2: BASE[:, ::-1], 3: BASE[::-1, ::-1], 4: BASE[::-1], 5: BASE.T,
    6: np.rot90(BASE, -1), 7: BASE[::-1, ::-1].T, 8: np.rot90(BASE, 1),
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
    im = Image.fromarray(BASE, "L")
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "preempt-test-camera"  # Make, must survive
    p = tmp_path / f"o{orientation}.png"
    im.save(p, exif=exif.tobytes())
    ph = load_photo(p)
    assert np.array_equal(ph.pixels[:, :, 0], EXPECTED[orientation])
    # orientation tag removed (pixels are upright now), other tags kept
    ex = Image.Exif()
    ex.load(ph.exif)
    assert 0x0112 not in ex and ex[0x010F] == "preempt-test-camera"


def _rgb(h=5, w=7, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode,channels,has_alpha", [
    ("L", 1, False), ("LA", 1, True), ("P", 3, False), ("PT", 3, True), ("RGB", 3, False),
    ("RGBA", 3, True), ("CMYK", 3, False), ("I;16", 1, False), ("1", 1, False),
])
def test_modes(tmp_path, mode, channels, has_alpha):
    rgb = Image.fromarray(_rgb())
    if mode == "PT":
        im = rgb.convert("P", palette=Image.ADAPTIVE, colors=8)
        im.info["transparency"] = 0
        path = tmp_path / "x.png"
        im.save(path, transparency=0)
    elif mode == "I;16":
        a = (np.arange(35, dtype=np.uint16).reshape(5, 7) * 1800)
        path = tmp_path / "x.png"
        im = Image.fromarray(a)
        assert im.mode.startswith("I")
        im.save(path)
    elif mode == "CMYK":
        path = tmp_path / "x.tif"
        rgb.convert("CMYK").save(path)
    else:
        path = tmp_path / "x.png"
        rgb.convert(mode).save(path)
    ph = load_photo(path)
    assert ph.pixels.dtype == np.uint8 and ph.pixels.shape == (5, 7, channels)
    assert (ph.alpha is not None) == has_alpha
    if mode == "I;16":
        assert ph.pixels.max() == round(34 * 1800 / 257)


def test_alpha_and_pixels_round_trip_exactly(tmp_path):
    a = np.dstack([_rgb(), np.random.default_rng(1).integers(0, 256, (5, 7), dtype=np.uint8)])
    p = tmp_path / "a.png"
    Image.fromarray(a, "RGBA").save(p)
    ph = load_photo(p)
    back = photos.decode(encode(ph))
    assert np.array_equal(back.pixels, a[:, :, :3]) and np.array_equal(back.alpha, a[:, :, 3])


def test_icc_profile_kept_unless_stripped(tmp_path):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    p = tmp_path / "c.png"
    Image.fromarray(_rgb()).save(p, icc_profile=icc)
    ph = load_photo(p)
    assert ph.icc == icc
    assert photos.decode(encode(ph)).icc == icc
    assert photos.decode(encode(ph, strip_metadata=True)).icc is None


@pytest.mark.parametrize("size", [(1, 1), (1, 9), (17, 3), (31, 29)])
def test_odd_sizes(tmp_path, size):
    p = tmp_path / "odd.png"
    Image.fromarray(_rgb(*size)).save(p)
    assert load_photo(p).pixels.shape == (*size, 3)


def _bad_files(tmp_path):
    good = io.BytesIO()
    Image.fromarray(_rgb(40, 40)).save(good, "PNG")
    files = {
        "text.png": b"this is not an image",
        "empty.jpg": b"",
        "truncated.png": good.getvalue()[: len(good.getvalue()) // 2],
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return files


def test_bad_files_give_one_line_errors(tmp_path, monkeypatch):
    for name in _bad_files(tmp_path):
        with pytest.raises(PhotoError) as e:
            load_photo(tmp_path / name)
        assert "\n" not in str(e.value)
    with pytest.raises(PhotoError, match="no such file"):
        load_photo(tmp_path / "missing.png")
    monkeypatch.setattr(photos, "MAX_PIXELS", 100)
    Image.fromarray(_rgb(20, 20)).save(tmp_path / "bomb.png")
    with pytest.raises(PhotoError, match="decompression bomb"):
        load_photo(tmp_path / "bomb.png")


def test_write_atomic_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out" / "x.png"
    write_atomic(target, b"abc")
    assert target.read_bytes() == b"abc"
    assert [p.name for p in target.parent.iterdir()] == ["x.png"]
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PhotoError, match="cannot write"):
        write_atomic(blocker / "y.png", b"abc")


def test_output_naming_mirrors_subfolders(tmp_path):
    root = tmp_path / "in"
    assert output_path(root / "a" / "b.jpg", root, tmp_path / "o") == tmp_path / "o" / "a" / "b.robust.png"
    assert output_path(root / "b.jpg", root, tmp_path / "o", "jpeg") == tmp_path / "o" / "b.robust.jpg"


def test_top_level_load_image_save_image_round_trip(tmp_path):
    import preempt

    x = torch.rand(1, 3, 7, 9)
    preempt.save_image(x, tmp_path / "a.png")
    y = preempt.load_image(tmp_path / "a.png")
    assert y.shape == (1, 3, 7, 9) and y.dtype == torch.float32
    assert torch.equal(y, torch.round(x * 255) / 255)
    with pytest.raises(ValueError):
        preempt.save_image(torch.rand(2, 3, 4, 4), tmp_path / "b.png")


def test_onnx_without_onnxruntime_is_one_clear_line(tmp_path, monkeypatch):
    import sys

    from preempt.models import ModelError
    from preempt.models.onnx import OnnxClassifier

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ModelError, match=r"pip install 'preempt\[onnx\]'"):
        OnnxClassifier.from_file(tmp_path / "m.onnx", card={})


def _ssim_by_convolution(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """SSIM of two (1, 1, H, W) images written the textbook way (2-D Gaussian convolution), as a reference."""
    r = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-r ** 2 / (2 * sigma ** 2))
    k = (torch.outer(g, g) / g.sum() ** 2)[None, None]
    a, b = a.double(), b.double()

    def blur(t):
        return torch.nn.functional.conv2d(t, k)

    ma, mb = blur(a), blur(b)
    va, vb, cab = blur(a * a) - ma ** 2, blur(b * b) - mb ** 2, blur(a * b) - ma * mb
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return float((((2 * ma * mb + c1) * (2 * cab + c2)) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2))).mean())


@pytest.mark.parametrize("shape", [(1, 1, 40, 50), (1, 1, 300, 37), (1, 1, 12, 9)])
def test_ssim_matches_the_textbook_convolution(shape):
    from preempt.core.metrics import ssim

    gen = torch.Generator().manual_seed(0)
    a = torch.rand(shape, generator=gen)
    b = (a + 0.1 * torch.randn(shape, generator=gen)).clamp(0, 1)
    window = min(11, min(shape[-2:]) if min(shape[-2:]) % 2 else min(shape[-2:]) - 1)
    assert float(ssim(a, b)) == pytest.approx(_ssim_by_convolution(a, b, window), abs=1e-5)
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-6)
    skm = pytest.importorskip("skimage.metrics") if shape == (1, 1, 40, 50) else None
    if skm is not None:  # and scikit-image's own, where it is installed (Wang et al.'s Gaussian variant)
        ref = skm.structural_similarity(a[0, 0].numpy(), b[0, 0].numpy(), gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, data_range=1.0)
        assert float(ssim(a, b)) == pytest.approx(ref, abs=1e-5)
