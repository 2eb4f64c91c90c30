"""The CUDA path, run for real when a CUDA device is there and skipped cleanly when not.

Each test runs the same tiny model on the GPU and checks that every result stays on the model's
device and means what the CPU result means.  The first test runs everywhere: ``--device auto``
picks CUDA exactly when torch sees one, and says which in the header.
"""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from preempt import RobustifyConfig, robustify, threat_model
from preempt.cli import app
from preempt.verdict import run_suite
from preempt.verdict.check import CHECKS

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device")
runner = CliRunner()


def test_device_auto_picks_what_torch_sees(photo_dir, tiny_model_file, tmp_path):
    r = runner.invoke(app, ["robustify", str(photo_dir), "--model", str(tiny_model_file), "-o", str(tmp_path / "o"),
                            "--eps", "0.05", "--delta", "0.1", "--steps", "2", "--check", "pgd", "--json"])
    assert r.exit_code in (0, 3), r.output
    want = "cuda" if CUDA else "cpu"
    assert f" on {want}" in r.stderr.splitlines()[0], r.stderr
    assert json.loads(r.stdout)["device"].startswith(want)


@pytest.fixture()
def on_gpu(tiny_model, tiny_data):
    import copy

    model = copy.deepcopy(tiny_model).to("cuda")
    x, y = tiny_data
    return model, x[:24].cuda(), y[:24].cuda()


@needs_cuda
def test_robustify_on_cuda_stays_on_cuda_and_agrees_with_cpu(on_gpu, tiny_model, tiny_data):
    model, x, y = on_gpu
    cfg = RobustifyConfig.of(norm="linf", eps=0.05, delta=0.1, steps=10)
    r = robustify(model, x, y, config=cfg)
    assert r.x.device.type == "cuda"
    assert float((r.x - x).abs().max()) <= 0.1 + 1e-6
    cpu = robustify(tiny_model, x.cpu(), y.cpu(), config=cfg)
    agree = sum(a.robust == b.robust for a, b in zip(r.images, cpu.images))
    assert agree >= len(x) - 2, (agree, len(x))  # float reductions differ between devices, rarely the verdict
    # claims hold on the GPU under an attack robustify never ran
    claimed = torch.tensor([im.robust for im in r.images], device="cuda")
    suite = run_suite(model, r.x, y, threat=threat_model("linf", 0.05), suite="standard",
                      generator=torch.Generator(device="cuda").manual_seed(7))
    assert suite.robust.device.type == "cuda"
    assert int((claimed & ~suite.robust).sum()) <= 1


@needs_cuda
def test_margin_mt_and_survive_on_cuda(on_gpu):
    model, x, y = on_gpu
    for cfg in (RobustifyConfig.of(norm="linf", eps=0.05, delta=0.1, steps=4, inner_loss="margin-mt", inner_targets=2),
                RobustifyConfig.of(norm="linf", eps=0.05, delta=0.1, steps=4, inner_loss="margin-mt", inner_targets=2,
                                loop_precision="bfloat16"),
                RobustifyConfig.of(norm="linf", eps=0.05, delta=0.1, steps=4, survive="jpeg:80-90")):
        r = robustify(model, x[:4], y[:4], config=cfg)  # a CUDA generator draws the upload chains (was a crash)
        assert r.x.device.type == "cuda" and len(r.images) == 4


@needs_cuda
def test_check_with_a_cuda_generator(on_gpu):
    model, x, y = on_gpu
    v = CHECKS["strong-once"].judge(model, x, y, threat_model("linf", 0.05),
                                    generator=torch.Generator(device="cuda").manual_seed(0))
    assert v.robust.device.type == "cuda" and v.total_passes > 0


@needs_cuda
def test_verify_cli_on_cuda(photo_dir, tiny_model_file):
    r = runner.invoke(app, ["verify", str(photo_dir), "--model", str(tiny_model_file), "--eps", "0.05",
                            "--device", "cuda", "--json"])
    assert r.exit_code in (0, 3), r.output
    assert json.loads(r.stdout)["device"].startswith("cuda")


@needs_cuda
def test_train_cli_on_cuda(tmp_path):
    from conftest import make_data
    from PIL import Image

    x, y = make_data(32, seed=5)
    for split in ("train", "test"):
        for i in range(len(x)):
            d = tmp_path / "imgs" / split / f"class{int(y[i])}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray((x[i, 0].numpy() * 255).round().astype("uint8")).save(d / f"{i}.png")
    out = tmp_path / "m.safetensors"
    r = runner.invoke(app, ["train", "--method", "preempt", "--steps", "2", "--dataset", "folder", "--data",
                            str(tmp_path / "imgs"), "--arch", "cnn", "--width", "4", "--image-size", "8",
                            "--channels", "1", "--epochs", "1", "--batch-size", "8", "--val-size", "8",
                            "--device", "cuda", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.with_suffix(".json").read_text())["training"]["method"] == "preempt"
