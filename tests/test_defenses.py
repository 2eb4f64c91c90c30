"""The other defenses (MagNet, Defense-GAN), BPDA, and their training code, on tiny data."""
import json

import pytest
import torch
from conftest import make_data

from preempt import Linf
from preempt.attacks import pgd
from preempt.attacks.bpda import BPDA, bpda
from preempt.attacks.losses import ce
from preempt.defenses import DefenseGAN, MagNet, reconstruction_error, threshold_for_fpr
from preempt.defenses.magnet import REJECTED
from preempt.defenses.magnet import attack as magnet_attack
from preempt.models import build
from preempt.train.generative import DefenseTrainConfig, train_defense


def _quantize(x):  # a gradient-masking preprocessing: piecewise constant, zero derivative
    return (x * 4).round() / 4


def test_bpda_backward_is_the_identity_on_a_toy_preprocessing(tiny_model, tiny_data):
    x, y = tiny_data[0][:32], tiny_data[1][:32]
    leaf = x.clone().requires_grad_(True)
    (g_bpda,) = torch.autograd.grad(ce(tiny_model(bpda(_quantize)(leaf)), y).sum(), leaf)
    z = _quantize(x).requires_grad_(True)  # the classifier's gradient at the preprocessed point
    (g_at_z,) = torch.autograd.grad(ce(tiny_model(z), y).sum(), z)
    assert torch.allclose(g_bpda, g_at_z)
    # the plain pipeline masks the gradient completely
    leaf2 = x.clone().requires_grad_(True)
    (g_plain,) = torch.autograd.grad(ce(tiny_model(_quantize(leaf2)), y).sum(), leaf2)
    assert g_plain.abs().max() == 0
    # a given approximation's vector-Jacobian product replaces the identity
    leaf3 = x.clone().requires_grad_(True)
    (g_approx,) = torch.autograd.grad(ce(tiny_model(bpda(_quantize, lambda v: 3 * v)(leaf3)), y).sum(), leaf3)
    assert torch.allclose(g_approx, 3 * g_at_z)


def test_bpda_lets_pgd_break_what_masked_gradients_hid(tiny_model, tiny_data):
    x, y = tiny_data[0][:200], tiny_data[1][:200]
    ok = tiny_model.predict(_quantize(x)) == y
    x, y = x[ok], y[ok]
    threat = Linf(0.25)

    class Masked(torch.nn.Module):
        def forward(self, v):
            return tiny_model(_quantize(v))

    gen = torch.Generator().manual_seed(0)
    naive = pgd(Masked(), x, y, threat=threat, steps=10, random_start=False, generator=gen).success.float().mean()
    adaptive = BPDA(tiny_model, _quantize)
    res = pgd(adaptive, x, y, threat=threat, steps=10, random_start=False, generator=gen)
    judged = tiny_model.predict(_quantize(res.x_adv)) != y  # judged by the real pipeline
    assert naive == 0
    assert judged.float().mean() > 0.3
    assert BPDA(tiny_model, _quantize, eot=3).predict(x).shape == y.shape


def _train_ae(x, steps=300):
    torch.manual_seed(0)
    ae = build("magnet-ae", in_channels=1, width=3)
    opt = torch.optim.Adam(ae.parameters(), lr=2e-2)
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(ae(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ae.eval()


def test_magnet_threshold_hits_its_false_positive_rate_on_held_out_data(tiny_model):
    x, _ = make_data(2600, seed=5)
    ae = _train_ae(x[:600])
    with torch.no_grad():
        val = reconstruction_error(x[600:1600], ae(x[600:1600]))
        test = reconstruction_error(x[1600:], ae(x[1600:]))
    for fpr in (0.01, 0.05, 0.2):
        tau = threshold_for_fpr(val, fpr)
        assert (val > tau).float().mean() <= fpr + 1e-9
        held_out = (test > tau).float().mean().item()
        assert abs(held_out - fpr) <= max(0.5 * fpr, 0.02), (fpr, held_out)
    magnet = MagNet(tiny_model, ae, threshold=threshold_for_fpr(val, 0.05))
    noise = torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    assert magnet.detect(noise).float().mean() > 0.9  # off-manifold inputs are rejected
    assert (magnet.predict(noise) == REJECTED).float().mean() > 0.9
    assert magnet.detect(x[1600:]).float().mean() < 0.1


def test_magnet_adaptive_attack_counts_only_accepted_misclassified_iterates(tiny_model):
    x, y = make_data(400, seed=6)
    ae = _train_ae(x[:200])
    with torch.no_grad():
        tau = threshold_for_fpr(reconstruction_error(x[200:], ae(x[200:])), 0.05)
    magnet = MagNet(tiny_model, ae, threshold=tau)
    xs, ys = x[:100], y[:100]
    res = magnet_attack(magnet, xs, ys, threat=Linf(0.2), steps=20, generator=torch.Generator().manual_seed(0))
    assert (Linf(0.2).distance(res.x_adv, xs) <= 0.2 + 1e-6).all()
    got = magnet.predict(res.x_adv[res.success])
    assert ((got != ys[res.success]) & (got != REJECTED)).all()
    assert res.success.any()


def test_defense_gan_projection_lowers_reconstruction_error_over_its_steps(tiny_model):
    torch.manual_seed(0)
    g = build("gan-generator", z_dim=8, width=16, out_shape=(1, 8, 8))
    with torch.no_grad():  # images on the generator's range, so the projection can reach them
        x = g(torch.randn(50, 8, generator=torch.Generator().manual_seed(7)))
    y = tiny_model.predict(x)
    dg = DefenseGAN(tiny_model, g, z_dim=8, steps=60, restarts=3, lr=0.05)
    trace: list[float] = []
    xp, err = dg.project(x, trace=trace)
    assert len(trace) == 60
    assert trace[-1] < 0.3 * trace[0]
    drops = sum(b <= a + 1e-6 for a, b in zip(trace, trace[1:]))
    assert drops >= 0.9 * (len(trace) - 1)
    assert torch.allclose(err, (xp - x).pow(2).flatten(1).sum(1), atol=1e-4)
    # the deployed defense masks the gradient
    leaf = x.clone().requires_grad_(True)
    (gr,) = torch.autograd.grad(ce(dg(leaf), y).sum(), leaf)
    assert gr.abs().max() == 0
    assert dg.predict(x).shape == y.shape


@pytest.mark.parametrize("method", ["magnet", "defense-gan"])
def test_defense_networks_train_write_a_card_and_resume(method, tmp_path, tiny_model_file):
    x, _ = make_data(700, seed=8)
    cfg = DefenseTrainConfig(method=method, classifier=str(tiny_model_file), epochs=2, batch_size=64,
                             val_size=200, width=3 if method == "magnet" else 16, z_dim=8, proj_steps=5,
                             proj_restarts=2)
    run = tmp_path / "run"
    card = train_defense(cfg, out=tmp_path / "d.safetensors", run_dir=run, images=x, command="test")
    assert card["kind"] == "defense" and card["defense"] == method
    assert json.loads((tmp_path / "d.json").read_text())["sha256"] == card["sha256"]
    assert len(card["training"]["history"]) == 2
    if method == "magnet":
        assert card["detector"]["val_fpr"] <= 0.01 + 1e-9
        h = card["training"]["history"]
        assert h[-1]["loss"] < h[0]["loss"]
    # resume: a longer run continues from the checkpoint (two more epochs, not four)
    cfg.epochs = 3
    card2 = train_defense(cfg, out=tmp_path / "d2.safetensors", run_dir=run, resume=True, images=x)
    assert [r["epoch"] for r in card2["training"]["history"]] == [1, 2, 3]


def _fashion_mnist_or_skip():
    from preempt.data import DataError, fashion_mnist

    try:
        fashion_mnist("test")
    except (DataError, OSError):
        pytest.skip("Debian's dataset-fashion-mnist is not installed")


def test_bundled_defenses_load_and_defend_their_classifier():
    from preempt.defenses import load_defense
    from preempt.models import bundled
    from preempt.models.registry import bundled_defenses

    have = bundled_defenses()
    assert {"fmnist-magnet", "fmnist-defense-gan"} <= set(have)
    assert not set(have) & set(bundled())  # defense networks are not offered as classifiers
    magnet = load_defense("fmnist-magnet")
    assert isinstance(magnet, MagNet) and magnet.card["classifier"] == "fmnist-standard"
    assert magnet.detectors == ("recon", "jsd") and magnet.thresholds()["jsd"] == magnet.card["jsd_detector"]["threshold"]
    assert load_defense("fmnist-magnet", detectors=("recon",)).detectors == ("recon",)
    dgan = load_defense("fmnist-defense-gan", steps=3, restarts=1)
    assert isinstance(dgan, DefenseGAN) and dgan.steps == 3
    x = torch.rand(2, 1, 28, 28)
    assert magnet.predict(x).shape == (2,) and dgan.predict(x).shape == (2,)


def test_bench_defenses_cli_measures_resumes_and_refuses_unknown_rows(tmp_path):
    from typer.testing import CliRunner

    from preempt.cli import app

    _fashion_mnist_or_skip()
    runner = CliRunner()
    out = tmp_path / "d"
    r = runner.invoke(app, ["bench", "defenses", "--n", "6", "--rows", "standard,magnet", "-o", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.with_suffix(".json").read_text())
    assert set(doc["rows"]) == {"standard", "magnet"}
    for row in doc["rows"].values():
        assert row["n"] == 6 and 0 <= row["adaptive"] <= row["non_adaptive"] <= row["clean"] <= 1
    md = out.with_suffix(".md").read_text()
    assert "| MagNet (reconstruction detector) |" in md and "| Standard model |" in md
    assert "CW-ℓ2 (unbounded)" in md and doc["rows"]["magnet"]["extra"]["cw-l2"]["success"] >= 0
    first = doc["rows"]["magnet"]["seconds"]
    # a document written before a setting existed keeps its rows (the setting counts at its default)
    doc["config"].pop("cw_steps")
    out.with_suffix(".json").write_text(json.dumps(doc))
    r = runner.invoke(app, ["bench", "defenses", "--n", "6", "--rows", "magnet", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.with_suffix(".json").read_text())["rows"]["magnet"]["seconds"] == first  # kept, not rerun
    r = runner.invoke(app, ["bench", "defenses", "--rows", "bogus", "-o", str(out)])
    assert r.exit_code == 2 and "bogus" in r.output


def test_bench_report_says_when_a_row_had_no_adaptive_attack():
    from preempt.bench.defenses_report import render

    row = {"key": "magnet", "name": "MagNet", "model": "m", "n": 10, "clean": 0.9, "non_adaptive": 0.8,
           "non_adaptive_attack": "PGD-20", "adaptive": None, "adaptive_attack": None, "per_attack": {"clean": 0.9},
           "certified": None, "train_s": 10.0, "inference_ms": 1.0, "robustify_ms": None, "robustify_passes": None,
           "seconds": 1.0, "depends": {}, "notes": []}
    md = render({"config": {"n": 10, "eps": 0.1, "seed": 0}, "rows": {"magnet": row}})
    assert "not evaluated" in md and "evaluated only with a non-adaptive attack" in md


def test_defense_gan_linearized_projection_has_the_gauss_newton_gradient(tiny_model):
    torch.manual_seed(0)
    lin = torch.nn.Linear(5, 64, bias=False)
    g = torch.nn.Sequential(lin, torch.nn.Unflatten(1, (1, 8, 8)))
    dg = DefenseGAN(tiny_model, g, z_dim=5, steps=200, restarts=2, lr=0.05)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    dg.rng.manual_seed(3)
    value, _ = dg.project(x)
    dg.rng.manual_seed(3)
    leaf = x.clone().requires_grad_(True)
    out = dg.project_linearized(leaf, damping=1e-3)
    assert torch.allclose(out, value, atol=1e-6)  # the value is the real projection's
    w = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    (grad,) = torch.autograd.grad((out * w).sum(), leaf)
    jac = lin.weight.detach()  # G is linear: J = W everywhere
    a = jac.T @ jac
    a = a + 1e-3 * a.diagonal().mean() * torch.eye(5)
    expect = (jac @ torch.linalg.solve(a, jac.T @ w.flatten(1).T)).T.reshape(w.shape)
    assert torch.allclose(grad, expect, atol=1e-5)
    # for a linear G the real projection is the orthogonal projection onto W's range: the same map
    p = jac @ torch.linalg.solve(jac.T @ jac, jac.T)
    assert torch.allclose(value.flatten(1), x.flatten(1) @ p.T, atol=2e-2)
    assert dg.linearized().predict(x).shape == (3,)


def test_js_divergence_is_zero_for_equal_softmaxes_symmetric_and_below_ln2():
    from preempt.defenses.magnet import js_divergence

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, 10, generator=g), 5 * torch.randn(50, 10, generator=g)
    assert torch.allclose(js_divergence(a, a, 10.0), torch.zeros(50), atol=1e-7)
    assert torch.allclose(js_divergence(a, b, 1.0), js_divergence(b, a, 1.0), atol=1e-6)
    far = js_divergence(torch.tensor([[100.0, 0.0]]), torch.tensor([[0.0, 100.0]]), 1.0)
    assert 0 < js_divergence(a, b, 1.0).min() and far.item() == pytest.approx(float(torch.log(torch.tensor(2.0))), abs=1e-4)
    # a higher temperature flattens both softmaxes: smaller divergence
    assert (js_divergence(a, b, 10.0) < js_divergence(a, b, 1.0)).all()


def _tiny_magnet(tiny_model, x, fpr=0.05, temperature=2.0):
    from preempt.defenses.magnet import js_divergence

    ae = _train_ae(x[:300])
    with torch.no_grad():
        val = x[300:]
        errs = reconstruction_error(val, ae(val))
        jsds = js_divergence(tiny_model(val), tiny_model(ae(val)), temperature)
    return MagNet(tiny_model, ae, threshold=threshold_for_fpr(errs, fpr),
                  jsd={"temperature": temperature, "threshold": threshold_for_fpr(jsds, fpr)})


def test_magnet_detectors_each_hit_their_rate_and_both_reject_what_either_rejects(tiny_model):
    x, _ = make_data(1300, seed=5)
    magnet = _tiny_magnet(tiny_model, x[:800])
    assert magnet.detectors == ("recon", "jsd")
    held_out = x[800:]
    recon, jsd = magnet.using("recon").detect(held_out), magnet.using("jsd").detect(held_out)
    both = magnet.detect(held_out)
    assert torch.equal(both, recon | jsd)
    for d in (recon, jsd):
        assert d.float().mean() <= 0.12
    assert (magnet.predict(held_out)[both] == REJECTED).all()
    with pytest.raises(ValueError):
        MagNet(tiny_model, magnet.autoencoder, threshold=0.1, detectors=("jsd",))  # not calibrated


def test_magnet_attacks_penalise_every_active_detector_and_count_only_accepted_points(tiny_model):
    from preempt.defenses.magnet import cw

    x, y = make_data(700, seed=6)
    magnet = _tiny_magnet(tiny_model, x[:500])
    xs, ys = x[500:560], y[500:560]
    for m in (magnet, magnet.using("jsd")):
        for res in (magnet_attack(m, xs, ys, threat=Linf(0.2), steps=20, generator=torch.Generator().manual_seed(0)),
                    cw(m, xs, ys, steps=40, binary_steps=3)):
            assert res.success.any()
            got = m.predict(res.x_adv[res.success])
            assert ((got != ys[res.success]) & (got != REJECTED)).all()
            assert res.info["detectors"] == list(m.detectors)


def test_recalibrating_the_bundled_magnet_reproduces_its_thresholds(tmp_path):
    """The card's detector thresholds are what --recalibrate computes again from the weights and
    the validation split of the training config (the JSD one was added this way)."""
    import shutil
    from pathlib import Path

    from preempt.train.generative import recalibrate_magnet

    _fashion_mnist_or_skip()
    weights = Path(__file__).resolve().parents[1] / "weights"
    for suffix in (".safetensors", ".json"):
        shutil.copy(weights / f"fmnist-magnet{suffix}", tmp_path / f"m{suffix}")
    bundled = json.loads((weights / "fmnist-magnet.json").read_text())
    card = recalibrate_magnet(tmp_path / "m.safetensors", command="test")
    for section in ("detector", "jsd_detector"):
        assert card[section]["threshold"] == pytest.approx(bundled[section]["threshold"], rel=1e-5)
        assert card[section]["val_fpr"] <= card[section]["fpr"] + 1e-9
    assert json.loads((tmp_path / "m.json").read_text())["calibration"]["command"] == "test"
