"""ONNX: export any model preempt loads, and run ONNX models through onnxruntime.

The exported graph takes a [0,1] image at the model's input size and channel count (N, C, H, W)
and contains the normalisation; resizing a photo to that size stays in torch (it is exact and
differentiable there), so score-based attacks such as Square still perturb the photo's own
pixels.  The export writes a card beside the file and checks that onnxruntime gives the same
logits as torch.
"""
from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .card import as_card
from .files import ModelError, read_card, sha256
from .wrapper import Classifier, Preprocessing


class _Graph(nn.Module):
    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.net, self.mean, self.std = model.net, model.mean, model.std

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


def _need(module: str):
    """Import an optional ONNX package, or say in one line how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ModelError(f"ONNX support needs {module}, which is not installed: pip install 'preempt[onnx]'") from e


def export_onnx(model: Classifier, path: str | Path, *, atol: float = 1e-4, opset: int = 17) -> dict:
    """Export ``model`` to ``path``; returns its card (with the logits check that was made)."""
    path = Path(path)
    _need("onnx")
    _need("onnxruntime")
    path.parent.mkdir(parents=True, exist_ok=True)
    g = _Graph(model).eval().cpu()
    h, w = model.pre.input_size
    example = torch.rand(2, model.pre.channels, h, w)
    kw: dict[str, Any] = dict(input_names=["image"], output_names=["logits"],
                              dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}}, opset_version=opset)
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kw["dynamo"] = False  # the TorchScript exporter needs no extra packages
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(g, (example,), str(path), **kw)
    probe = torch.rand(16, model.pre.channels, h, w, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = g(probe).numpy()
    got = OnnxClassifier.from_file(path, card=_card(model, path, None)).run(probe.numpy())
    err = float(np.abs(got - ref).max())
    if not err <= atol:
        raise ModelError(f"{path}: onnxruntime logits differ from torch by {err:.2e} (> {atol:g})")
    card = _card(model, path, err)
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def _card(model: Classifier, path: Path, err: float | None) -> dict:
    pre = model.pre.to_card()
    pre.update(mean=[0.0] * model.pre.channels, std=[1.0] * model.pre.channels)  # inside the graph
    card = {k: v for k, v in model.card.items() if k not in ("sha256", "name", "preprocessing", "arch", "arch_kwargs")}
    card.update(format="onnx", source_model=model.name, preprocessing=pre, classes=model.classes,
                onnx_check={"max_abs_logit_difference": err, "probes": 16} if err is not None else None)
    if path.exists():
        card["sha256"] = sha256(path)
    return card


class OnnxClassifier:
    """A model behind onnxruntime with preempt's preprocessing in front: implements
    :class:`~preempt.models.Model` without gradients (verify's blackbox suite only)."""

    differentiable = False

    def __init__(self, session, card: dict) -> None:
        self.session = session
        self.card = as_card(card)
        self.pre = Preprocessing.from_card(card)
        self.classes = card.get("classes")
        self.passes = 0
        self._torch_pre = Classifier(nn.Identity(), self.pre)
        self.training = False

    @classmethod
    def from_file(cls, path: str | Path, card: dict | None = None) -> OnnxClassifier:
        ort = _need("onnxruntime")

        path = Path(path)
        if card is None:
            cp = path.with_suffix(".json")
            if not cp.exists():
                raise ModelError(f"{path}: no card {cp.name} beside it (preempt export writes one)")
            card = read_card(cp)
        try:
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ModelError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0]})") from e
        card = dict(card, name=card.get("name", path.stem))
        return cls(sess, card)

    @property
    def name(self) -> str:
        return self.card["name"]

    def run(self, a: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.session.get_inputs()[0].name: a.astype(np.float32)})[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            xs = self._torch_pre.preprocess(x.detach().float().cpu())
        self.passes += len(xs)
        return torch.from_numpy(self.run(xs.numpy())).to(x.device)

    forward = __call__

    def predict(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        parts = [self(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)

    def eval(self):
        return self

    def to(self, *_a, **_k):
        return self
