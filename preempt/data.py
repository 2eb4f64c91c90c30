"""Datasets, read locally and never downloaded.

* Fashion-MNIST from the IDX files Debian's ``dataset-fashion-mnist`` installs
  (``/usr/share/datasets/fashion-mnist``), or any folder holding the same four files;
* CIFAR-10 from a local folder in torchvision's format (``cifar-10-batches-py``);
* any ImageFolder (one sub-folder per class).
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from .errors import PreemptError

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)


class DataError(PreemptError):
    pass


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file")
    dtype_code, ndim = data[2], data[3]
    dtypes: dict[int, npt.DTypeLike] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if dtype_code not in dtypes:
        raise DataError(f"{path}: unknown IDX data type 0x{dtype_code:02x}")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=dtypes[dtype_code], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise DataError(f"{path}: truncated ({arr.size} values for shape {shape})")
    return arr.reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).exists():
            return root / name
    raise DataError(f"{root}: no {stem}[.gz] (install Debian's dataset-fashion-mnist or pass --data DIR)")


def fashion_mnist(split: str = "train", root: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N,1,28,28) float in [0,1] and labels (N,) int64."""
    if root is None:
        root = os.environ.get("PREEMPT_FASHION_MNIST") or next(
            (d for d in FASHION_MNIST_DIRS if Path(d).is_dir()), FASHION_MNIST_DIRS[0])
    root = Path(root)
    prefix = {"train": "train", "test": "t10k"}[split]
    x = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
    y = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
    xt = torch.from_numpy(x.copy()).float().div_(255).unsqueeze(1)
    return xt, torch.from_numpy(y.astype(np.int64))


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays, lists and dicts and refuses everything else,
    so a CIFAR batch file cannot run code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise DataError(f"refusing to unpickle {module}.{name}")


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        d = _ArraysOnly(f, encoding="latin1").load()
    data = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return data, np.asarray(d.get("labels", d.get("fine_labels")), dtype=np.int64)


def cifar10(split: str = "train", root: str | Path = "data") -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 from torchvision's local folder format (``ROOT/cifar-10-batches-py``), never
    downloading.  Batches are unpickled with an arrays-only unpickler."""
    root = Path(root)
    d = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [n for n in names if not (d / n).exists()]
    if missing:
        raise DataError(f"{d}: no CIFAR-10 batches {', '.join(missing)} (torchvision's cifar-10-batches-py format)")
    parts = [_cifar_batch(d / n) for n in names]
    x = torch.from_numpy(np.concatenate([p[0] for p in parts])).float().div_(255)
    return x, torch.from_numpy(np.concatenate([p[1] for p in parts]))


def image_folder(root: str | Path, size: int = 32, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Any ImageFolder, resized to size×size."""
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder

    tf = [T.Resize((size, size)), T.ToTensor()]
    if channels == 1:
        tf.insert(0, T.Grayscale())
    ds = ImageFolder(str(root), transform=T.Compose(tf))
    xs, ys = zip(*[ds[i] for i in range(len(ds))]) if len(ds) else ((), ())
    if not xs:
        raise DataError(f"{root}: no images")
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64), ds.classes


def load(name: str, split: str, root: str | Path | None = None, **kw):
    """(x, y, classes) for 'fashion-mnist', 'cifar10' or 'folder'."""
    if name == "fashion-mnist":
        return (*fashion_mnist(split, root), FASHION_MNIST_CLASSES)
    if name == "cifar10":
        return (*cifar10(split, root or "data"), CIFAR10_CLASSES)
    if name == "folder":
        if root is None:
            raise DataError("--data DIR is needed for an ImageFolder")
        sub = Path(root) / split
        if not sub.is_dir():
            if split != "train":
                raise DataError(f"{root}: no {split}/ sub-folder")
            sub = Path(root) / "train" if (Path(root) / "train").is_dir() else Path(root)
        return image_folder(sub, **kw)
    raise DataError(f"unknown dataset {name!r}")
