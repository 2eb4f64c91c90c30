import json

import pytest
import torch
from conftest import make_data, tiny_classifier

from preempt import Linf
from preempt.attacks import losses
from preempt.train import METHODS, TrainConfig, train
from preempt.train.methods import batch_loss, descend

DATA = (*make_data(700, seed=1), ["a", "b", "c", "d"])


def _cfg(method, **kw):
    base = dict(method=method, arch="mlp", width=32, epochs=3, batch_size=50, lr=0.05, val_size=100,
                val_attack_size=50, val_attack_steps=5, steps=3, delta_steps=2, replays=2, seed=0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_and_its_loss_goes_down(method):
    res = train(_cfg(method), tensors=DATA)
    losses_ = [h["loss"] for h in res.history]
    assert losses_[-1] < losses_[0], losses_
    assert res.history[-1]["val_clean"] > 0.5


def test_preempt_finds_a_descending_point_inside_delta():
    x, y, _ = DATA
    model = tiny_classifier()
    x, y = x[:64], y[:64]
    ball = Linf(0.1)
    xr = descend(model, x, y, ball, steps=3)
    assert (ball.distance(xr, x) <= 0.1 + 1e-6).all()
    assert losses.ce(model(xr), y).mean() < losses.ce(model(x), y).mean()
    xa = descend(model, x, y, ball, steps=3, ascent=True)
    assert losses.ce(model(xa), y).mean() > losses.ce(model(x), y).mean()


def test_training_attacks_respect_their_budgets(monkeypatch):
    """The preempt objective attacks inside B_ε(x̂_r) with x̂_r inside B_δ(x)."""
    import preempt.train.methods as m

    x, y, _ = DATA
    x, y = x[:32], y[:32]
    model = tiny_classifier()
    seen = {}
    real = m._pgd_points

    def spy(model_, xr, y_, threat, steps, step_size, gen=None):
        out = real(model_, xr, y_, threat, steps, step_size, gen)
        seen["xr"], seen["xa"] = xr, out
        return out

    monkeypatch.setattr(m, "_pgd_points", spy)
    cfg = _cfg("preempt", eps=0.05, delta=0.1)
    batch_loss("preempt", model, x, y, cfg, Linf(0.05), Linf(0.1))
    assert (Linf(0).distance(seen["xr"], x) <= 0.1 + 1e-6).all()
    assert (Linf(0).distance(seen["xa"], seen["xr"]) <= 0.05 + 1e-6).all()
    assert (Linf(0).distance(seen["xa"], x) > 0.1).any()  # ε and δ add up


def test_resume_continues_where_it_stopped(tmp_path):
    cfg = _cfg("fast-at", epochs=3)
    full = train(cfg, tensors=DATA, run_dir=tmp_path / "a")

    class Stop(Exception):
        pass

    def stop_after_2(rec):
        if rec.get("end_of_epoch") and rec["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        train(cfg, tensors=DATA, run_dir=tmp_path / "b", on_step=stop_after_2)
    assert len((tmp_path / "b" / "log.jsonl").read_text().splitlines()) == 2
    resumed = train(cfg, tensors=DATA, run_dir=tmp_path / "b", resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for a, b in zip(full.model.net.state_dict().values(), resumed.model.net.state_dict().values()):
        assert torch.equal(a, b)


def test_weights_and_card_are_written(tmp_path):
    out = tmp_path / "w.safetensors"
    train(_cfg("standard", epochs=1), tensors=DATA, out=out, command="preempt train --test")
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["command"] == "preempt train --test"
    assert card["threat_model"] == {"norm": "linf", "eps": 0.1, "delta": 0.1}
    from preempt.models import load_model

    m = load_model(out)
    assert m.classes == ["a", "b", "c", "d"]


def test_unknown_method():
    with pytest.raises(ValueError):
        TrainConfig(method="nope")


def _image_folder(root, n_per_class=12, size=10):
    from PIL import Image

    x, y = make_data(4 * n_per_class, seed=5)
    for split in ("train", "test"):
        for i in range(len(x)):
            d = root / split / f"class{int(y[i])}"
            d.mkdir(parents=True, exist_ok=True)
            a = (x[i, 0].numpy() * 255).round().astype("uint8")
            Image.fromarray(a).resize((size, size)).save(d / f"{i}.png")
    return root


def test_image_folder_training_path(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    out = tmp_path / "w.safetensors"
    res = train(TrainConfig(method="fast-at", dataset="folder", data=str(root), arch="cnn", width=4, image_size=8,
                            channels=1, epochs=1, batch_size=16, val_size=8, val_attack_size=8, val_attack_steps=2),
                out=out)
    assert res.model.pre.input_size == (8, 8) and res.model.pre.channels == 1
    assert res.model.classes == ["class0", "class1", "class2", "class3"]
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["metrics"]["test"]["n_clean"] == 48


def test_cifar10_folder_is_read_without_torchvision_download_or_unsafe_pickles(tmp_path):
    import pickle

    import numpy as np

    from preempt.data import DataError, cifar10

    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 9]}
        with open(d / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    x, y = cifar10("train", tmp_path)
    assert x.shape == (20, 3, 32, 32) and y.tolist()[:4] == [0, 1, 2, 9]
    x, y = cifar10("test", tmp_path)
    assert x.shape == (4, 3, 32, 32)
    res = train(TrainConfig(method="standard", dataset="cifar10", data=str(tmp_path), arch="cnn", width=4,
                            epochs=1, batch_size=8, val_size=4, val_attack_size=0))
    assert res.model.pre.input_size == (32, 32) and res.model.pre.channels == 3

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(d / "test_batch", "wb") as f:
        pickle.dump({"data": Evil(), "labels": []}, f)
    with pytest.raises(DataError, match="refusing"):
        cifar10("test", tmp_path)


def test_ddp_with_two_processes(tmp_path):
    """torchrun, 2 processes, gloo on CPU, on a tiny ImageFolder."""
    import os
    import subprocess
    import sys

    root = _image_folder(tmp_path / "imgs", n_per_class=8)
    out = tmp_path / "ddp.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "preempt",
           "train", "--method", "pgd-at", "--steps", "2", "--dataset", "folder", "--data", str(root), "--arch", "cnn",
           "--width", "4", "--image-size", "8", "--channels", "1", "--epochs", "2", "--batch-size", "8",
           "--val-size", "8", "--device", "cpu", "-o", str(out)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "ddp.safetensors.run" / "log.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in log] == [1, 2]
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["method"] == "pgd-at"


def test_batchnorm_mode_while_crafting_attacks_is_an_option():
    x, y, classes = DATA
    res = train(TrainConfig(method="fast-at", arch="cnn-bn", width=4, epochs=1, batch_size=50, val_size=100,
                            val_attack_size=20, val_attack_steps=2, attack_bn="eval", channels=1),
                tensors=(torch.nn.functional.interpolate(x, size=(8, 8)), y, classes))
    assert res.model.net.training is False  # returned in eval mode
    bn = [m for m in res.model.net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and bn[0].num_batches_tracked > 0


def test_learning_curves_and_the_step_schedule():
    """--curve-size logs clean and PGD accuracy on the training images every epoch (robust overfitting's curves);
    --schedule step divides the learning rate by 10 at half and at three quarters of the run."""
    from preempt.train.loop import _lr, robust_accuracy

    cfg = _cfg("pgd-at", epochs=4, schedule="step", curve_size=60)
    assert [_lr(cfg, it, 100) for it in (0, 49, 50, 74, 75, 99)] == pytest.approx([0.05, 0.05, 0.005, 0.005, 5e-4, 5e-4])
    res = train(cfg, tensors=DATA)
    assert [h["lr"] for h in res.history] == pytest.approx([0.05, 0.05, 0.005, 5e-4])
    last = res.history[-1]
    assert 0 <= last["train_pgd5"] <= last["train_clean"] <= 1 and "test_clean" not in last  # no test split given
    x, y, _ = DATA  # the curve is the training images' robust accuracy, recomputed here from the final model
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.seed))
    xt, yt = x[perm][cfg.val_size:][:60], y[perm][cfg.val_size:][:60]
    assert last["train_pgd5"] == robust_accuracy(res.model, xt, yt, Linf(cfg.eps), 5)
    with pytest.raises(ValueError, match="unknown schedule"):
        _cfg("pgd-at", schedule="linear")


def test_pseudo_labelled_training_labels_the_rest_with_a_model_trained_on_d_alone(tmp_path):
    """Adversarial training with unlabelled data: D = the first N (as --limit N picks them), D̃ =
    the rest labelled by the teacher; the true labels of D̃ only measure the pseudo-labels."""
    teacher = tmp_path / "teacher.safetensors"
    train(_cfg("standard", limit=200, epochs=4), tensors=DATA, out=teacher)
    res = train(_cfg("pgd-at", labelled=200, unlabelled=300, pseudo_labeller=str(teacher), epochs=2), tensors=DATA,
                out=tmp_path / "s.safetensors")
    info = res.pseudo_labels
    assert info["labelled"] == 200 and info["unlabelled"] == 300 and info["labeller_trained_on_d"]
    card = json.loads((tmp_path / "s.json").read_text())
    assert card["pseudo_labels"] == info
    # the accuracy is the teacher's on those 300 images against their hidden labels
    from preempt.models import load_model

    x, y = DATA[0][300:600], DATA[1][300:600]
    assert info["accuracy"] == pytest.approx((load_model(teacher).predict(x) == y).float().mean().item(), abs=1e-4)
    assert 0.5 < info["accuracy"] < 1.0 + 1e-9
    # a teacher that saw other labels (another D) is refused
    with pytest.raises(ValueError, match="not trained on this run's labelled subset"):
        train(_cfg("pgd-at", labelled=250, pseudo_labeller=str(teacher), epochs=1), tensors=DATA)
    with pytest.raises(ValueError):
        _cfg("pgd-at", labelled=200)  # no labeller
    with pytest.raises(ValueError):
        _cfg("pgd-at", labelled=200, limit=200, pseudo_labeller=str(teacher))
