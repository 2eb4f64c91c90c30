"""verify's extras: randomized-smoothing CERTIFY, ONNX export and black-box verification,
the adaptive attack, honesty flags and the JSON schema."""
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from preempt import Linf
from preempt.attacks import adaptive, pgd
from preempt.attacks.honesty import honesty_flags
from preempt.cli import app
from preempt.defenses.smoothing import Smoothed, certify, clopper_pearson_lower

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


class Constant(torch.nn.Module):
    """Always predicts class 2, whatever the noise: CERTIFY's known answer."""

    classes = None

    def forward(self, x):
        out = torch.zeros(len(x), 4)
        out[:, 2] = 5.0
        return out + 0 * x.flatten(1).sum(1, keepdim=True)


def test_clopper_pearson_known_values():
    # all n successes: the lower bound solves p^n = alpha
    assert clopper_pearson_lower(10000, 10000, 0.001) == pytest.approx(0.001 ** (1 / 10000), rel=1e-12)
    assert clopper_pearson_lower(0, 100, 0.001) == 0.0
    # a value from the Beta(60, 41) quantile (scipy.stats.beta.ppf(0.001, 60, 41) = 0.44098426522...)
    assert clopper_pearson_lower(60, 100, 0.001) == pytest.approx(0.4409842652213, abs=1e-9)


def test_certify_on_a_constant_classifier():
    c = certify(Constant(), torch.rand(1, 4, 4), sigma=0.5, n0=10, n=1000, alpha=0.001)
    assert c.prediction == 2 and c.count == 1000
    p = 0.001 ** (1 / 1000)
    expected = 0.5 * float(torch.special.ndtri(torch.tensor(p, dtype=torch.float64)))
    assert c.radius == pytest.approx(expected, rel=1e-9)


def test_certify_abstains_on_a_coin_flip():
    class Coin(torch.nn.Module):
        def forward(self, x):
            # the noise decides: first pixel's sign of noise -> class 0 or 1
            s = (x.flatten(1)[:, 0] > 0.5).float()
            return torch.stack([s, 1 - s, 0 * s, 0 * s], 1)

    c = certify(Coin(), torch.full((1, 2, 2), 0.5), sigma=1.0, n0=50, n=500, generator=torch.Generator().manual_seed(0))
    assert c.abstain and c.radius == 0.0


def test_smoothed_model_gives_log_probabilities(tiny_model, tiny_data):
    x, _ = tiny_data
    s = Smoothed(tiny_model, 0.1, samples=4, generator=torch.Generator().manual_seed(0))
    out = s(x[:5])
    assert torch.allclose(out.exp().sum(1), torch.ones(5), atol=1e-5)


def test_adaptive_attack_stays_in_eps_and_is_at_least_as_strong_as_its_final_pgd(tiny_model, tiny_data):
    x, y = tiny_data
    x = torch.round(x[:60] * 255) / 255
    y = tiny_model.predict(x)
    r = adaptive(tiny_model, x, y, threat=Linf(0.1), generator=torch.Generator().manual_seed(0))
    assert (Linf(0).distance(r.x_adv, x) <= 0.1 + 1e-6).all()
    assert (tiny_model.predict(r.x_adv[r.success]) != y[r.success]).all()
    assert r.robust.float().mean() <= pgd(tiny_model, x, y, threat=Linf(0.05), steps=20).robust.float().mean() + 0.05
    big = adaptive(tiny_model, x, y, threat=Linf(1.0))
    assert big.robust.float().mean() == 0


def test_flags_catch_a_randomized_softmax_model(tiny_model, tiny_data):
    x, y = tiny_data

    class Noisy(torch.nn.Module):
        differentiable = True

        def forward(self, z):
            return torch.softmax(tiny_model(z + 0.05 * torch.randn_like(z)), 1)

    flags = {f.name: f.raised for f in honesty_flags(Noisy(), x[:20], y[:20], Linf(0.1), sweep=False)}
    assert flags["randomized"] and flags["softmax"]
    ok = {f.name: f.raised for f in honesty_flags(tiny_model, x[:20], y[:20], Linf(0.1))}
    assert not ok["randomized"] and not ok["softmax"] and not ok["zero_gradients"] and not ok["eps_sweep"]


def test_onnx_export_and_blackbox_verify(tmp_path, photo_dir, tiny_model_file):
    onnx = tmp_path / "m.onnx"
    r = run("export", "--model", tiny_model_file, "--onnx", onnx, "--json")
    assert r.exit_code == 0, r.output
    card = json.loads(r.stdout)
    assert card["onnx_check"]["max_abs_logit_difference"] < 1e-4
    v = run("verify", photo_dir, "--model", onnx, "--surrogate", tiny_model_file, "--json", "--eps", "0.3")
    assert v.exit_code in (0, 3), v.output
    doc = json.loads(v.stdout)
    assert doc["attack"]["suite"] == "blackbox"
    assert list(doc["summary"]["per_attack"]) == ["clean", "square", "transfer-pgd-20", "transfer-apgd-ce"]
    assert run("export", "--model", tiny_model_file, "--onnx", tmp_path / "m.txt").exit_code == 2


def test_verify_json_matches_the_documented_schema(tmp_path, photo_dir, tiny_model_file):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "preempt" / "schemas" / "verify.schema.json").read_text())
    out = tmp_path / "out"
    assert run("robustify", photo_dir, "-o", out, "--model", tiny_model_file).exit_code in (0, 3)  # 3: one not robust
    v = run("verify", out, "--original", photo_dir, "--model", tiny_model_file, "--json", "--suite", "quick",
            "--adaptive", "--certify", "--n", "200", "--n0", "20")
    doc = json.loads(v.stdout)
    jsonschema.validate(doc, schema)
    assert {f["name"] for f in doc["flags"]} >= {"randomized", "softmax", "zero_gradients", "eps_sweep"}
    assert doc["summary"]["per_attack"].keys() == {"clean", "pgd-20", "apgd-ce", "adaptive"}
    for f in doc["images"]:  # a robust photo says how near a wrong label APGD-CE came; a broken one does not
        m = f.get("metrics") or {}
        assert ("closest_margin" in m) == bool(m.get("robust")) and m.get("closest_margin", 0) >= 0
    assert any("closest_margin" in (f.get("metrics") or {}) for f in doc["images"])
    assert doc["summary"]["certified"]["abstain"] >= 0
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"nope")
    v = run("verify", out, broken, "--model", tiny_model_file, "--json")
    assert v.exit_code == 1  # the broken file
    doc = json.loads(v.stdout)
    jsonschema.validate(doc, schema)
    assert doc["summary"]["failed"] == 1
