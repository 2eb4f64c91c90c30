"""Fixtures: a tiny synthetic 4-class dataset of 8×8 grey images and an MLP trained on it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from preempt.models import Classifier, Preprocessing, build, save_model

torch.set_num_threads(2)


def make_data(n: int = 600, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(123))
    y = torch.randint(0, 4, (n,), generator=g)
    x = 0.5 + 0.5 * (templates[y] - 0.5) + 0.12 * torch.randn(n, 1, 8, 8, generator=g)
    return x.clamp(0, 1), y


def tiny_classifier(seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    net = build("mlp", in_channels=1, num_classes=4, width=32, input_size=8)
    return Classifier(net, Preprocessing(input_size=(8, 8), channels=1, mean=(0.5,), std=(0.5,)),
                      classes=["a", "b", "c", "d"], card={"name": "tiny", "arch": "mlp",
                      "arch_kwargs": {"in_channels": 1, "num_classes": 4, "width": 32, "input_size": 8},
                      "threat_model": {"norm": "linf", "eps": 0.1, "delta": 0.1}})


@pytest.fixture(scope="session")
def tiny_data():
    return make_data()


def trained_tiny_classifier(x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> Classifier:
    """:func:`tiny_classifier` trained on (x, y): 150 Adam steps, > 95% train accuracy."""
    model = tiny_classifier(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    acc = (model.predict(x) == y).float().mean().item()
    assert acc > 0.95, acc
    return model


@pytest.fixture(scope="session")
def tiny_model(tiny_data):
    return trained_tiny_classifier(*tiny_data)


@pytest.fixture(scope="session")
def tiny_model_file(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    card = {k: v for k, v in tiny_model.card.items() if k != "name"}
    card.update(preprocessing=tiny_model.pre.to_card(), classes=tiny_model.classes)
    save_model(tiny_model, path, card)
    return path


def save_photos(d, x: torch.Tensor, n: int, *, sizes: list[tuple[int, int]], rgb, name: str):
    """The first ``n`` tiny images as PNG photos in ``d``: photo i resized to ``sizes[i % len(sizes)]``, RGB where
    ``rgb(i)``, named ``name.format(i=i)``."""
    d.mkdir()
    for i in range(n):
        a = (x[i, 0].numpy() * 255).round().astype(np.uint8)
        im = Image.fromarray(a, "L").resize(sizes[i % len(sizes)], Image.NEAREST)
        (im.convert("RGB") if rgb(i) else im).save(d / name.format(i=i))
    return d


@pytest.fixture()
def photo_dir(tmp_path, tiny_data):
    """Six test photos of the tiny data, at odd sizes and in several modes."""
    return save_photos(tmp_path / "photos", tiny_data[0], 6, sizes=[(13, 9)], rgb=lambda i: i % 3 == 1, name="img{i}.png")


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False,
                     help="also run the slow tests (tests/test_identical.py: minutes, bit-for-bit against a golden file)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: minutes long; run with --slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
