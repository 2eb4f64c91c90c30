"""Datasets, read locally and never downloaded.

* Fashion-MNIST from the IDX files Debian's ``dataset-fashion-mnist`` installs
  (``/usr/share/datasets/fashion-mnist``), or any folder holding the same four files;
* CIFAR-10 from a local folder in torchvision's format (``cifar-10-batches-py``);
* any ImageFolder (one sub-folder per class).
"""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)


class DataError(Exception):
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
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
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


def cifar10(split: str = "train", root: str | Path = "data") -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 from torchvision's local folder format, without downloading."""
    from torchvision.datasets import CIFAR10

    try:
        ds = CIFAR10(str(root), train=(split == "train"), download=False)
    except RuntimeError as e:
        raise DataError(f"{root}: no CIFAR-10 there ({e})") from e
    x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).float().div_(255)
    return x, torch.tensor(ds.targets, dtype=torch.int64)


def image_folder(root: str | Path, size: int, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Any ImageFolder, resized to size×size."""
    from torchvision.datasets import ImageFolder
    from torchvision import transforms as T

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
        from torchvision.datasets import CIFAR10  # noqa: F401
        return (*cifar10(split, root or "data"), ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                                   "horse", "ship", "truck"])
    if name == "folder":
        if root is None:
            raise DataError("--data DIR is needed for an ImageFolder")
        sub = Path(root) / split
        return image_folder(sub if sub.is_dir() else root, **kw)
    raise DataError(f"unknown dataset {name!r}")
