"""Reading model files and cards safely: never unpickles code.

Weights are read as safetensors, or as torch files with ``weights_only=True``; cards are JSON or
TOML.  Every failure is a :class:`ModelError` whose message is one line naming the file.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import PreemptError

CARD_SUFFIXES = (".json", ".toml")


class ModelError(PreemptError):
    """A model could not be found or loaded; the message names the file and the cause."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from ``.safetensors`` or a torch file (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)  # never unpickle objects
    except Exception as e:
        raise ModelError(f"{path}: cannot read weights ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: not a state_dict (a mapping of parameter names to tensors)")
    return state


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive (``torch.jit.save``) holds compiled code; a ``torch.save`` file does not."""
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in n or n.startswith("code/") for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def read_card(path: Path) -> dict[str, Any]:
    """A model card from JSON or TOML."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ModelError(f"{path}: cannot read the card ({e.strerror or e})") from e
    try:
        if path.suffix == ".toml":
            try:
                import tomllib  # type: ignore[import-not-found]  # stdlib on 3.11+, handled below on 3.10
            except ModuleNotFoundError:  # Python 3.10
                raise ModelError(f"{path}: TOML cards need Python ≥ 3.11; write the card as JSON") from None
            card = tomllib.loads(text)
        else:
            card = json.loads(text)
    except ValueError as e:
        raise ModelError(f"{path}: not a valid {path.suffix[1:].upper() or 'JSON'} card ({e})") from e
    if not isinstance(card, dict):
        raise ModelError(f"{path}: a card must be an object/table, not {type(card).__name__}")
    classes_file = card.get("classes_file")
    if classes_file and "classes" not in card:
        cf = (path.parent / classes_file)
        try:
            card["classes"] = [ln.strip() for ln in cf.read_text().splitlines() if ln.strip()]
        except OSError as e:
            raise ModelError(f"{path}: cannot read classes_file {cf} ({e.strerror or e})") from e
    return card


def card_beside(path: Path) -> Path | None:
    """``model.json`` or ``model.toml`` next to ``model.<ext>``."""
    for suf in CARD_SUFFIXES:
        c = Path(path).with_suffix(suf)
        if c.is_file():
            return c
    return None
