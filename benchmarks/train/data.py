"""Dataset readers of the reference training: images as uint8 tensors ``(N, C, H, W)``.

Nothing is downloaded: scikit-learn's bundled digits need no files; Fashion-MNIST is read from
its IDX files (Debian's ``dataset-fashion-mnist`` package puts them in
``/usr/share/datasets/fashion-mnist``); CIFAR-10 (python pickles) and STL-10 (binary version)
from the folder given with ``--data-dir``. A missing file raises ``FileNotFoundError`` saying
where to get it.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


@dataclass
class Data:
    """A dataset in memory. ``unlabeled`` images are used for training only."""

    name: str
    train_x: Tensor  # (N, C, H, W) uint8: the labeled train split (also the kNN memory bank)
    train_y: Tensor  # (N,) int64
    test_x: Tensor
    test_y: Tensor
    n_classes: int
    max_value: float  # pixel value of white (16 for digits, 255 otherwise)
    unlabeled_x: Tensor | None = None

    def resized(self, size: int) -> Data:
        """All splits resized to ``size`` x ``size`` (antialiased bilinear), if they differ."""
        if self.train_x.shape[-2:] == (size, size):
            return self
        fit = functools.partial(resize_images, size=size, max_value=self.max_value)
        unlabeled = None if self.unlabeled_x is None else fit(self.unlabeled_x)
        return dataclasses.replace(
            self, train_x=fit(self.train_x), test_x=fit(self.test_x), unlabeled_x=unlabeled
        )

    @property
    def ssl_x(self) -> Tensor:
        """The images the self-supervised methods train on."""
        if self.unlabeled_x is None:
            return self.train_x
        return torch.cat([self.train_x, self.unlabeled_x])


def resize_images(images: Tensor, *, size: int, max_value: float) -> Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, size, size), in chunks to bound the memory."""
    out = []
    for chunk in torch.split(images, 4096):
        x = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True)
        out.append(x.round().clamp(0, max_value).to(torch.uint8))
    return torch.cat(out)


def load_data(name: str, data_dir: str | None = None, *, unlabeled: bool = True) -> Data:
    """Load dataset ``name`` (see the module docstring for where the files come from)."""
    if name == "digits":
        return load_digits()
    if name == "fashion-mnist":
        return load_fashion_mnist(Path(data_dir or FASHION_MNIST_DIR))
    if data_dir is None:
        raise ValueError(f"--data {name} needs --data-dir (the folder holding its files)")
    if name == "cifar10":
        return load_cifar10(Path(data_dir))
    if name == "stl10":
        return load_stl10(Path(data_dir), unlabeled=unlabeled)
    raise ValueError(f"unknown dataset {name!r}: digits, fashion-mnist, cifar10 or stl10")


def load_digits() -> Data:
    """scikit-learn's bundled 8x8 digits (values 0..16), split 1,347 / 450 stratified."""
    from sklearn.datasets import load_digits as sklearn_digits  # type: ignore[import-untyped]
    from sklearn.model_selection import train_test_split  # type: ignore[import-untyped]

    bunch = sklearn_digits()
    images = np.asarray(bunch.images, dtype=np.uint8)[:, None]  # (1797, 1, 8, 8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    train, test = train_test_split(
        np.arange(len(labels)), test_size=450, stratify=labels, random_state=0
    )
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    return Data("digits", x[train], y[train], x[test], y[test], 10, 16.0)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or plain."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(shape):
        raise ValueError(f"{path}: header says {shape}, found {data.size} values")
    return data.reshape(shape)


def _find(folder: Path, name: str, how_to_get: str) -> Path:
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{folder / name}[.gz] not found. {how_to_get}")


def load_fashion_mnist(folder: Path) -> Data:
    """Fashion-MNIST from its four IDX files (Debian: ``/usr/share/datasets/fashion-mnist``)."""
    how = (
        "Install Debian's package (`sudo apt-get install dataset-fashion-mnist`, files in "
        f"{FASHION_MNIST_DIR}) or pass --data-dir to a folder with the IDX files from "
        "https://github.com/zalandoresearch/fashion-mnist."
    )
    arrays = {
        name: read_idx(_find(folder, f"{name}-idx{3 if 'images' in name else 1}-ubyte", how))
        for name in ("train-images", "train-labels", "t10k-images", "t10k-labels")
    }
    x_train = torch.from_numpy(arrays["train-images"].copy())[:, None]  # (60000, 1, 28, 28)
    x_test = torch.from_numpy(arrays["t10k-images"].copy())[:, None]
    y_train = torch.from_numpy(arrays["train-labels"].astype(np.int64))
    y_test = torch.from_numpy(arrays["t10k-labels"].astype(np.int64))
    return Data("fashion-mnist", x_train, y_train, x_test, y_test, 10, 255.0)


def load_cifar10(folder: Path) -> Data:
    """CIFAR-10, python version: ``data_batch_1..5`` and ``test_batch`` pickles."""
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    how = (
        "Download the CIFAR-10 python version (cifar-10-python.tar.gz) from "
        "https://www.cs.toronto.edu/~kriz/cifar.html, extract it and pass "
        "--data-dir .../cifar-10-batches-py."
    )

    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found. {how}")
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="bytes")  # the official format is a pickle
        images = np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        return images, np.asarray(entry[b"labels"], dtype=np.int64)

    parts = [batch(f"data_batch_{i}") for i in range(1, 6)]
    x_test, y_test = batch("test_batch")
    return Data(
        "cifar10",
        torch.from_numpy(np.concatenate([p[0] for p in parts])),
        torch.from_numpy(np.concatenate([p[1] for p in parts])),
        torch.from_numpy(x_test),
        torch.from_numpy(y_test),
        10,
        255.0,
    )


def read_stl10_images(path: Path) -> np.ndarray:
    """STL-10 binary images: each image is 3 column-major 96x96 planes; returns (N, 3, H, W)."""
    raw = np.fromfile(path, dtype=np.uint8)
    return np.ascontiguousarray(raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2))


def load_stl10(folder: Path, *, unlabeled: bool) -> Data:
    """STL-10, binary version: ``train_X.bin``, ``train_y.bin``, ``test_*``, ``unlabeled_X.bin``."""
    if (folder / "stl10_binary").is_dir():
        folder = folder / "stl10_binary"
    how = (
        "Download the STL-10 binary version (stl10_binary.tar.gz) from "
        "https://cs.stanford.edu/~acoates/stl10/, extract it and pass --data-dir .../stl10_binary."
    )
    names = ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"]
    names += ["unlabeled_X.bin"] if unlabeled else []
    for name in names:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} not found. {how}")

    def labels(name: str) -> Tensor:  # stored as 1..10
        return torch.from_numpy(np.fromfile(folder / name, dtype=np.uint8).astype(np.int64) - 1)

    return Data(
        "stl10",
        torch.from_numpy(read_stl10_images(folder / "train_X.bin")),
        labels("train_y.bin"),
        torch.from_numpy(read_stl10_images(folder / "test_X.bin")),
        labels("test_y.bin"),
        10,
        255.0,
        torch.from_numpy(read_stl10_images(folder / "unlabeled_X.bin")) if unlabeled else None,
    )
