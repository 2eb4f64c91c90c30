"""Surviving the upload: the differentiable JPEG/resize against Pillow's real codec, the spec
syntax, robustify --survive, verify --reencode/--resize, and JPEG output that stays inside δ."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from preempt import Linf, robustify
from preempt.cli import app
from preempt.pipeline.photos import load_photo, read_meta
from preempt.verdict.upload import (
    WORST,
    Chain,
    Jpeg,
    Resize,
    Through,
    attack_uploads,
    concrete,
    jpeg_approx,
    jpeg_real,
    parse,
    resize_approx,
    resize_real,
    service_spec,
)

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def photo_like(c: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Random images with photo-like spectra: smooth colour fields, edges and a little noise, 8-bit."""
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.rand(1, c, h // 8 + 1, w // 8 + 1, generator=g), size=(h, w), mode="bicubic",
                         align_corners=False)
    edges = (torch.rand(1, 1, h // 16 + 1, w // 16 + 1, generator=g) > 0.5).float()
    edges = F.interpolate(edges, size=(h, w), mode="nearest")
    x = 0.6 * base + 0.3 * edges + 0.04 * torch.randn(1, c, h, w, generator=g)
    return torch.round(x.clamp(0, 1) * 255) / 255


@pytest.mark.parametrize("c,h,w", [(3, 48, 64), (3, 37, 53), (1, 40, 40)])
@pytest.mark.parametrize("quality", [95, 85, 75, 60])
def test_jpeg_approximation_tracks_pillow(c, h, w, quality):
    x = torch.cat([photo_like(c, h, w, s) for s in range(4)])
    real, approx = jpeg_real(x, quality), jpeg_approx(x, quality)
    mae = (real - approx).abs().mean().item() * 255
    codec = (real - x).abs().mean().item() * 255
    assert mae < 1.5, mae                    # within 1.5 grey levels of libjpeg on average
    assert mae < 0.6 * codec, (mae, codec)   # and far closer to the codec's output than the input is


def test_jpeg_approximation_is_differentiable_and_bpda_is_the_real_codec():
    x = photo_like(3, 32, 32, 0).requires_grad_(True)
    (g,) = torch.autograd.grad(jpeg_approx(x, 85).sum(), x)
    assert g.abs().sum() > 0 and torch.isfinite(g).all()
    chain = parse("jpeg:85")[0]
    y = chain.bpda(x)
    assert torch.equal(y.detach(), jpeg_real(x.detach(), 85))
    (g2,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(g, g2)


def test_resize_approximation_tracks_pillow():
    x = torch.cat([photo_like(3, 90, 120, s) for s in range(3)])
    real, approx = resize_real(x, (45, 60)), resize_approx(x, (45, 60))
    assert (real - approx).abs().mean().item() * 255 < 0.6


def test_spec_syntax():
    assert [str(c) for c in parse("jpeg:75-95,resize:1080,2048")] == ["jpeg:75-95", "resize:1080", "resize:2048"]
    assert [str(c) for c in parse("resize:1080+jpeg:85,jpeg:60")] == ["resize:1080+jpeg:85", "jpeg:60"]
    assert str(parse("resize:50%")[0]) == "resize:50%"
    assert len(parse("worst")) == len(WORST.split(","))
    for bad in ("jpeg:0", "jpeg:101", "jpeg:95-75", "png:3", "resize:abc", "resize:0%", "1080"):
        with pytest.raises(ValueError):
            parse(bad)
    assert service_spec("jpeg:85", "1080") == "resize:1080+jpeg:85"
    assert service_spec(None, "1080,2048") == "resize:1080,resize:2048"
    assert service_spec("jpeg:85,jpeg:75", None) == "jpeg:85,jpeg:75"
    # verification expands ranges to their ends and middle and drops resizes that would not shrink
    names = [str(c) for c in concrete(parse("jpeg:75-95,resize:1080"), (600, 800))]
    assert names == ["jpeg:75", "jpeg:85", "jpeg:95"]
    assert str(concrete(parse("resize:1080+jpeg:85"), (3000, 4000))[0]) == "resize:1080+jpeg:85"
    assert resize_real(torch.zeros(1, 3, 30, 40), Resize(long_side=20).hw(30, 40)).shape[-2:] == (15, 20)


def test_through_sees_what_the_service_makes(tiny_model, tiny_data):
    x = tiny_data[0][:8]
    chain = Chain((Jpeg(60, 60),))
    t = Through(tiny_model, chain)
    assert torch.equal(t.predict(x), tiny_model.predict(jpeg_real(x, 60)))


def test_survive_makes_claims_that_hold_through_the_real_codec(tiny_model, tiny_data):
    x = torch.round(tiny_data[0][:24] * 255) / 255
    y = tiny_model.predict(x)
    plain = robustify(tiny_model, x, delta=0.1, eps=0.1)
    surv = robustify(tiny_model, x, delta=0.1, eps=0.1, survive="jpeg:50")
    assert all(i.uploads == {"jpeg:50": "ok"} for i in surv.images if i.robust)
    assert all(i.uploads == {} for i in plain.images)
    gen = torch.Generator().manual_seed(99)  # an independent attack on the returned pixels
    ok, _, _ = attack_uploads(tiny_model, surv.x, y, Linf(0.1), parse("jpeg:50"), generator=gen)
    claimed = surv.robust
    assert claimed.sum() >= 12
    assert (ok & claimed).sum() >= claimed.sum() - 1  # claims hold (one random-start miss allowed)
    assert (Linf(0).distance(surv.x, x) <= 0.1 + 1e-6).all()
    assert surv.config["resolution"] == "full"
    assert sum(i.passes for i in surv.images) > sum(i.passes for i in plain.images)


def test_bad_survive_spec_is_a_usage_error(photo_dir, tiny_model_file, tmp_path):
    r = run("robustify", photo_dir, "-o", tmp_path / "o", "--model", tiny_model_file, "--survive", "gif:3")
    assert r.exit_code == 2 and "--survive" in r.output
    r = run("verify", photo_dir, "--model", tiny_model_file, "--reencode", "jpeg:300")
    assert r.exit_code == 2


def _photos(tmp_path, tiny_data, n=4, jpeg=False):
    d = tmp_path / "in"
    d.mkdir()
    x = tiny_data[0]
    for i in range(n):
        a = (x[i, 0].numpy() * 255).round().astype(np.uint8)
        im = Image.fromarray(a, "L").resize((24, 24), Image.BILINEAR)
        im.save(d / (f"p{i}.jpg" if jpeg else f"p{i}.png"), **({"quality": 95} if jpeg else {}))
    return d


@pytest.mark.parametrize("delta,quality", [(0.1, 95), (0.1, 60), (0.02, 40), (0.004, 40)])
def test_jpeg_output_never_leaves_delta_unreported(tmp_path, tiny_data, tiny_model_file, delta, quality):
    d = _photos(tmp_path, tiny_data)
    r = run("robustify", d, "-o", tmp_path / "o", "--model", tiny_model_file, "--format", "jpeg", "--quality", quality,
            "--delta", delta, "--eps", 0.05, "--json")
    assert r.exit_code in (0, 3), r.output
    files = json.loads(r.stdout)["files"]
    assert len(files) == 4
    for f in files:
        assert f["dst"].endswith(".robust.jpg" if f["status"] == "robust" else ".not-robust.jpg")
        src, out = load_photo(f["src"]), load_photo(f["dst"])
        linf = np.abs(src.pixels.astype(int) - out.pixels.astype(int)).max() / 255
        assert f["metrics"]["linf"] == pytest.approx(linf, abs=1e-6)   # metrics are those of the file
        if linf > delta + 1e-6:
            assert f["status"] == "over-budget" and f["metrics"]["within_budget"] is False
        else:
            assert f["metrics"]["within_budget"] is True and f["status"] != "over-budget"
        assert f["metrics"]["quality"] >= quality
    bad = [f for f in files if f["status"] in ("over-budget", "not-robust")]
    assert r.exit_code == (3 if bad else 0)
    # each JPEG's comment records the verdict on its decoded pixels, and a rerun says it again
    assert all(read_meta(f["dst"])["status"] == f["status"] for f in files)
    again = run("robustify", d, "-o", tmp_path / "o", "--model", tiny_model_file, "--format", "jpeg", "--quality",
                quality, "--delta", delta, "--eps", 0.05, "--json")
    assert again.exit_code == r.exit_code
    assert [f["metrics"]["robust"] for f in json.loads(again.stdout)["files"]] == [f["status"] == "robust" for f in files]
    if delta < 1.5 / 255:  # one grey level: no JPEG of these photos fits, and the table must say so
        assert all(f["status"] == "over-budget" for f in files)
        assert "over budget 4" in r.stderr


def test_auto_format_writes_jpeg_for_jpeg_inputs_robustified_for_jpeg(tmp_path, tiny_data, tiny_model_file):
    d = _photos(tmp_path, tiny_data, n=2, jpeg=True)
    r = run("robustify", d, "-o", tmp_path / "a", "--model", tiny_model_file, "--json")
    assert all(f["dst"].endswith(".png") for f in json.loads(r.stdout)["files"])
    r = run("robustify", d, "-o", tmp_path / "b", "--model", tiny_model_file, "--survive", "jpeg:80-90", "--eps", 0.05,
            "--json")
    files = json.loads(r.stdout)["files"]
    jpegs = [f for f in files if f["dst"].endswith(".jpg")]
    assert jpegs, r.output
    for f in jpegs:  # written as JPEG: at the quality robustified for, inside δ, robust as decoded
        assert f["metrics"]["quality"] >= 90 and f["metrics"]["within_budget"] and f["status"] == "robust"
        assert "jpeg:80" in f["metrics"]["uploads"]
    for f in files:
        if f not in jpegs:
            assert "wrote PNG" in f["metrics"]["format_note"]


def test_verify_reencode_names_the_transform_that_broke_each_image(tmp_path, tiny_data, tiny_model_file):
    d = _photos(tmp_path, tiny_data)
    r = run("verify", d, "--model", tiny_model_file, "--reencode", "jpeg:90,jpeg:20", "--resize", "50%",
            "--eps", 0.05, "--json")
    assert r.exit_code in (0, 3), r.output
    doc = json.loads(r.stdout)
    assert doc["attack"]["uploads"] == "resize:50%+jpeg:90,resize:50%+jpeg:20"
    assert doc["attack"]["attacks"][-2:] == ["resize:50%+jpeg:90", "resize:50%+jpeg:20"]
    for im in doc["images"]:
        m = im["metrics"]
        if not m["clean_correct"]:
            continue
        assert set(m["uploads"]) == {"resize:50%+jpeg:90", "resize:50%+jpeg:20"}
        assert set(m["uploads"].values()) <= {"ok", "no attack", "after", "before"}
        broke = [k for k, v in m["uploads"].items() if v != "ok"]
        assert m["robust"] == (m["broken_by"] is None)
        if broke and m["broken_by"] not in ("pgd-20",):
            assert m["broken_by"] in broke
    per = doc["summary"]["per_attack"]
    assert list(per)[-2:] == ["resize:50%+jpeg:90", "resize:50%+jpeg:20"]
    assert per["resize:50%+jpeg:20"] <= per["pgd-20"]


def test_auto_format_falls_back_to_png_when_the_jpeg_cannot_keep_delta(tmp_path, tiny_data, tiny_model_file):
    d = _photos(tmp_path, tiny_data, n=3, jpeg=True)
    r = run("robustify", d, "-o", tmp_path / "o", "--model", tiny_model_file, "--survive", "jpeg:40",
            "--delta", 1 / 255, "--eps", 0.5 / 255, "--json")
    assert r.exit_code in (0, 3), r.output
    files = json.loads(r.stdout)["files"]
    assert any(f["dst"].endswith(".png") for f in files)  # a one-level δ is too tight for JPEG here
    for f in files:
        assert f["status"] != "over-budget"          # auto never leaves a file outside δ
        src, out = load_photo(f["src"]), load_photo(f["dst"])
        assert np.abs(src.pixels.astype(int) - out.pixels.astype(int)).max() <= 1
        if f["dst"].endswith(".png"):
            assert "wrote PNG" in f["metrics"]["format_note"]
    # a rerun finds the PNG written in place of the JPEG and resumes (skips it)
    r2 = run("robustify", d, "-o", tmp_path / "o", "--model", tiny_model_file, "--survive", "jpeg:40",
             "--delta", 1 / 255, "--eps", 0.5 / 255, "--json")
    assert all(f["status"] == "skipped" for f in json.loads(r2.stdout)["files"])
