#!/usr/bin/env python
"""Reference training: every sslosses method on a real encoder, judged by a kNN probe.

One file that reads top to bottom: config, data, augmentations, networks, methods, kNN
evaluation, checkpoints, the training loop, the report. It uses only sslosses' losses and
components (plus plain torch for the networks), so it doubles as a worked example and as the
end-to-end test that the losses actually train something.

Quick start (CPU, bundled scikit-learn digits, a few minutes for all six methods)::

    python benchmarks/train.py --method all --out runs/default

Other data (no downloads: the files must already be on disk)::

    python benchmarks/train.py --method byol --data fashion-mnist  # Debian: dataset-fashion-mnist
    torchrun --nproc_per_node=8 benchmarks/train.py --method simclr --data cifar10 \\
        --data-dir ~/data/cifar-10-batches-py --backbone resnet18 --width 64 --batch-size 512 \\
        --steps 78000 --eval-every 3900 --out runs/cifar10

Each method writes ``<out>/<method>/metrics.jsonl`` (one JSON line per epoch) and
``<out>/<method>/checkpoint.pt``; rerunning the same command resumes from the checkpoint (a
finished method is only reported). ``<out>/results.md`` and ``<out>/results.png`` hold the
final table and the loss / kNN curves. See ``docs/guides/training.rst``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gzip
import inspect
import itertools
import json
import math
import os
import pickle
import random
import sys
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DistributedSampler

import sslosses
import sslosses.functional as SF
from sslosses.transforms import (
    Augmentation,
    MultiCrop,
    byol_transform,
    dino_transform,
    forward_multicrop,
    simclr_transform,
    swav_transform,
)

MethodName = Literal["simclr", "moco", "byol", "simsiam", "swav", "barlow-twins", "dino", "vicreg"]
METHODS: tuple[MethodName, ...] = get_args(MethodName)
DataName = Literal["digits", "fashion-mnist", "cifar10", "stl10"]
BackboneName = Literal["resnet-tiny", "resnet10", "resnet18"]
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


# ------------------------------------------------------------------------------------------------
# 1. Configuration
# ------------------------------------------------------------------------------------------------


@dataclass
class Config:
    """Every knob of a run. ``None`` means "the default of the data preset / the method"."""

    method: MethodName | Literal["all"] = field(
        default="all", metadata={"help": "the method to train, or all of them in turn"}
    )
    data: DataName = field(default="digits", metadata={"help": "the dataset"})
    data_dir: str | None = field(
        default=None, metadata={"help": "folder with the dataset files (not for digits)"}
    )
    out: str = field(default="runs/default", metadata={"help": "output folder"})
    backbone: BackboneName | None = field(default=None, metadata={"help": "the encoder"})
    width: int | None = field(default=None, metadata={"help": "channels of the first stage"})
    steps: int | None = field(default=None, metadata={"help": "optimizer steps per method"})
    batch_size: int | None = field(
        default=None, metadata={"help": "global batch size (split over the ranks)"}
    )
    lr: float | None = field(default=None, metadata={"help": "peak learning rate"})
    weight_decay: float | None = field(default=None, metadata={"help": "AdamW weight decay"})
    warmup_steps: int | None = field(
        default=None, metadata={"help": "linear warm-up steps (default: 10%% of --steps)"}
    )
    temperature: float | None = field(
        default=None, metadata={"help": "temperature of NT-Xent / InfoNCE / SwAV"}
    )
    ema_momentum: float | None = field(
        default=None, metadata={"help": "start of the EMA momentum schedule (MoCo, BYOL, DINO)"}
    )
    queue_size: int | None = field(default=None, metadata={"help": "MoCo queue length (negatives)"})
    prototypes: int | None = field(default=None, metadata={"help": "SwAV prototypes"})
    image_size: int | None = field(
        default=None, metadata={"help": "resize the images to this side once at load"}
    )
    small_crops: int | None = field(
        default=None, metadata={"help": "SwAV: number of small (multi-crop) views"}
    )
    swav_queue: int = field(
        default=0, metadata={"help": "SwAV feature queue length per assignment crop (0: none)"}
    )
    barlow_lambda: float = field(
        default=0.0051, metadata={"help": "Barlow Twins off-diagonal weight"}
    )
    eval_every: int | None = field(
        default=None, metadata={"help": "kNN evaluation every this many steps"}
    )
    knn_k: int | None = field(default=None, metadata={"help": "neighbours of the kNN probe"})
    knn_temperature: float = field(default=0.1, metadata={"help": "kNN vote temperature"})
    seed: int = field(default=0, metadata={"help": "seed of weights, data order, augmentations"})
    device: Literal["auto", "cpu", "cuda"] = field(
        default="auto", metadata={"help": "auto: CUDA when available"}
    )
    compile: bool = field(default=False, metadata={"help": "torch.compile the backbone"})
    unlabeled: bool = field(
        default=True, metadata={"help": "STL-10: also train on the 100k unlabeled images"}
    )
    resume: bool = field(
        default=True, metadata={"help": "resume from <out>/<method>/checkpoint.pt"}
    )
    stop_after: int | None = field(
        default=None,
        metadata={"help": "stop after this many steps in this invocation (simulated preemption)"},
    )
    quiet: bool = field(default=False, metadata={"help": "no progress bar"})


# Fields that do not change the result, so a checkpoint made with other values still resumes.
RUNTIME_ONLY = ("method", "data_dir", "out", "device", "compile", "resume", "stop_after", "quiet")


@dataclass(frozen=True)
class DataPreset:
    """Defaults that depend on the data: network size, budget, augmentation strength."""

    backbone: BackboneName
    width: int
    steps: int
    batch_size: int
    eval_every: int
    knn_k: int
    image_size: int  # images are resized to this side once at load; the large crops have it
    small_crop_size: int  # side of SwAV's small crops
    small_crops: int  # how many (the paper: 6 on ImageNet)
    crop_scale: tuple[float, float]  # area range of the large crops
    small_crop_scale: tuple[float, float]
    flip: bool  # random horizontal flips (not for digits)


PRESETS: dict[DataName, DataPreset] = {
    "digits": DataPreset(
        backbone="resnet-tiny",
        width=16,
        steps=200,
        batch_size=256,
        eval_every=50,
        knn_k=20,
        image_size=8,
        small_crop_size=4,
        small_crops=4,
        crop_scale=(0.5, 1.0),
        small_crop_scale=(0.3, 0.6),
        flip=False,
    ),
    "fashion-mnist": DataPreset(
        backbone="resnet-tiny",
        width=16,
        steps=200,
        batch_size=256,
        eval_every=200,
        knn_k=200,
        image_size=16,
        small_crop_size=8,
        small_crops=4,
        crop_scale=(0.3, 1.0),
        small_crop_scale=(0.15, 0.4),
        flip=True,
    ),
    "cifar10": DataPreset(
        backbone="resnet18",
        width=64,
        steps=78_000,
        batch_size=512,
        eval_every=3_900,
        knn_k=200,
        image_size=32,
        small_crop_size=18,
        small_crops=6,
        crop_scale=(0.08, 1.0),
        small_crop_scale=(0.05, 0.3),
        flip=True,
    ),
    "stl10": DataPreset(
        backbone="resnet18",
        width=64,
        steps=80_000,
        batch_size=512,
        eval_every=4_000,
        knn_k=200,
        image_size=96,
        small_crop_size=48,
        small_crops=6,
        crop_scale=(0.08, 1.0),
        small_crop_scale=(0.05, 0.3),
        flip=True,
    ),
}


@dataclass(frozen=True)
class MethodSpec:
    """Per-method defaults. The EMA momenta are lower than the papers' (MoCo 0.999, BYOL 0.996)
    because the default runs are short. Head widths (in the method classes) are multiples of
    the backbone's feature size F, so that ResNet-18 (F = 512) gets the widths of the usual
    CIFAR-10 runs: 2048 hidden units (BYOL's 4096), 128/256-d outputs (SimSiam, Barlow: 2048)."""

    title: str
    lr: float
    weight_decay: float
    temperature: float | None
    ema_momentum: float | None
    sync_bn: bool  # SyncBatchNorm under DDP, as the paper does


METHOD_SPECS: dict[MethodName, MethodSpec] = {
    "simclr": MethodSpec("SimCLR", 2e-3, 1e-6, 0.2, None, True),
    "moco": MethodSpec("MoCo v2", 2e-3, 1e-6, 0.2, 0.99, False),
    "byol": MethodSpec("BYOL", 2e-3, 1e-6, None, 0.99, True),
    "simsiam": MethodSpec("SimSiam", 2e-3, 1e-6, None, None, False),
    "swav": MethodSpec("SwAV", 2e-3, 1e-6, 0.1, None, True),
    "barlow-twins": MethodSpec("Barlow Twins", 2e-3, 1e-6, None, None, True),
    "dino": MethodSpec("DINO", 2e-3, 1e-6, 0.1, 0.996, False),
    "vicreg": MethodSpec("VICReg", 2e-3, 1e-6, None, None, True),
}


@dataclass(frozen=True)
class Resolved:
    """The config of one method with every ``None`` filled in."""

    method: MethodName
    spec: MethodSpec
    preset: DataPreset
    backbone: BackboneName
    width: int
    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    temperature: float
    ema_momentum: float
    queue_size: int
    prototypes: int
    image_size: int
    small_crop_size: int
    small_crops: int
    eval_every: int


def resolve(cfg: Config, method: MethodName, n_train: int) -> Resolved:
    """Fill the ``None`` fields of ``cfg`` from the data preset and the method's spec."""
    preset, spec = PRESETS[cfg.data], METHOD_SPECS[method]
    steps = cfg.steps if cfg.steps is not None else preset.steps
    image_size = cfg.image_size or preset.image_size
    return Resolved(
        method=method,
        spec=spec,
        preset=preset,
        backbone=cfg.backbone or preset.backbone,
        width=cfg.width or preset.width,
        steps=steps,
        batch_size=cfg.batch_size or preset.batch_size,
        lr=cfg.lr if cfg.lr is not None else spec.lr,
        weight_decay=cfg.weight_decay if cfg.weight_decay is not None else spec.weight_decay,
        warmup_steps=cfg.warmup_steps if cfg.warmup_steps is not None else steps // 10,
        temperature=cfg.temperature or spec.temperature or 0.1,
        ema_momentum=cfg.ema_momentum or spec.ema_momentum or 0.99,
        queue_size=cfg.queue_size or min(65_536, n_train // 2),
        # more prototypes than embedding dimensions (128), as SwAV's 3000: with fewer, the
        # embeddings can settle orthogonal to all of them, a flat point where the loss is log K
        prototypes=cfg.prototypes or (3_000 if n_train > 10_000 else 300),
        image_size=image_size,
        small_crop_size=max(1, round(preset.small_crop_size * image_size / preset.image_size)),
        small_crops=cfg.small_crops if cfg.small_crops is not None else preset.small_crops,
        eval_every=cfg.eval_every or preset.eval_every,
    )


def parse_args(argv: Sequence[str] | None) -> Config:
    """The command line, built from the fields of :class:`Config` (``--data-dir`` for data_dir)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        flag, help_text = "--" + f.name.replace("_", "-"), f.metadata["help"]
        if hints[f.name] is bool:
            action = argparse.BooleanOptionalAction
            parser.add_argument(flag, action=action, default=f.default, help=help_text)
        else:
            options = _argument_options(hints[f.name])
            parser.add_argument(flag, default=f.default, help=help_text, **options)
    return Config(**vars(parser.parse_args(argv)))


def _argument_options(kind: Any) -> dict[str, Any]:
    """``choices`` for a Literal (or a union of Literals and None), else the ``type``."""
    members = [kind] if typing.get_origin(kind) is Literal else get_args(kind) or [kind]
    members = [m for m in members if m is not type(None)]
    if all(typing.get_origin(m) is Literal for m in members):
        return {"choices": [value for m in members for value in get_args(m)]}
    return {"type": members[0]}


# ------------------------------------------------------------------------------------------------
# 2. Data: images as uint8 tensors (N, C, H, W), read from disk without downloading anything
# ------------------------------------------------------------------------------------------------


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


def load_data(cfg: Config) -> Data:
    """Load ``cfg.data`` (see the module docstring for where the files come from)."""
    if cfg.data == "digits":
        return load_digits()
    if cfg.data == "fashion-mnist":
        return load_fashion_mnist(Path(cfg.data_dir or FASHION_MNIST_DIR))
    if cfg.data_dir is None:
        raise ValueError(f"--data {cfg.data} needs --data-dir (the folder holding its files)")
    if cfg.data == "cifar10":
        return load_cifar10(Path(cfg.data_dir))
    return load_stl10(Path(cfg.data_dir), unlabeled=cfg.unlabeled)


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


# ------------------------------------------------------------------------------------------------
# 3. Augmentations (sslosses.transforms: batched, on the training device, seeded generator)
# ------------------------------------------------------------------------------------------------

Augment = Callable[[Tensor, torch.Generator], list[Tensor]]


def build_augment(r: Resolved, data: Data, mean: Tensor, std: Tensor) -> Augment:
    """The views each method trains on, normalized with the data's channel statistics.

    RGB data gets each paper's recipe at the data's crop size: SimCLR's (colour strength 0.5
    and no blur, its CIFAR-10 setting), MoCo v2's for MoCo and SimSiam (SimCLR's with strength
    0.5 and blur), BYOL's asymmetric pair for BYOL and Barlow Twins (which copies it), SwAV's
    multi-crop. Grayscale data (digits, Fashion-MNIST) gets random resized crops, brightness
    and contrast jitter, and flips where they make sense (not for digits); no hue, saturation
    or grayscale (meaningless) and no blur (it erases 8x8 digits).
    """
    m, s = tuple(mean.flatten().tolist()), tuple(std.flatten().tolist())
    method, preset = r.method, r.preset
    size, small, scale = r.image_size, r.small_crop_size, preset.crop_scale
    gray = data.train_x.shape[1] == 1
    multicrop: MultiCrop
    if gray:
        # Grayscale images go through the pipeline with their one channel (brightness and
        # contrast jitter work on it; contrast's luma is the channel itself).
        sizes, counts, scales = [size], [2], [scale]
        if method in ("swav", "dino") and r.small_crops:
            sizes, counts = [size, small], [2, r.small_crops]
            scales = [scale, preset.small_crop_scale]
        jitter = Augmentation(jitter=(0.4, 0.4, 0.0, 0.0), jitter_prob=0.8, mean=m, std=s)
        multicrop = MultiCrop(
            sizes, counts, scales, augmentations=jitter, flip_prob=0.5 if preset.flip else 0.0
        )
    elif method == "simclr":
        multicrop = simclr_transform(size, scale=scale, strength=0.5, blur_prob=0.0, mean=m, std=s)
    elif method in ("moco", "simsiam"):
        multicrop = simclr_transform(size, scale=scale, strength=0.5, blur_prob=0.5, mean=m, std=s)
    elif method in ("byol", "barlow-twins", "vicreg"):  # VICReg uses BYOL's augmentations
        multicrop = byol_transform(size, scale=scale, mean=m, std=s)
    elif method == "dino":
        multicrop = dino_transform(
            size,
            small,
            local_count=r.small_crops,
            global_scale=scale,
            local_scale=preset.small_crop_scale,
            mean=m,
            std=s,
        )
    else:
        multicrop = swav_transform(
            size,
            small,
            local_count=r.small_crops,
            global_scale=scale,
            local_scale=preset.small_crop_scale,
            blur_kernel_size=None,
            mean=m,
            std=s,
        )

    def augment(images: Tensor, generator: torch.Generator) -> list[Tensor]:
        return list(multicrop(to_float(images, data), generator=generator))

    return augment


def to_float(images: Tensor, data: Data) -> Tensor:
    """uint8 (N, C, H, W) -> float in [0, 1]."""
    return images.float() / data.max_value


# ------------------------------------------------------------------------------------------------
# 4. Networks: a small ResNet in plain torch, and the heads of the papers
# ------------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions with BatchNorm and a residual connection."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet (3x3 stem, no max-pool): stages of basic blocks, widths doubling,
    global average pooling. ``out_dim`` is the feature size the kNN probe sees."""

    def __init__(self, in_channels: int, width: int, blocks: Sequence[int]) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        layers: list[nn.Module] = []
        c_in = width
        for stage, n_blocks in enumerate(blocks):
            c_out = width * 2**stage
            for i in range(n_blocks):
                layers.append(BasicBlock(c_in, c_out, 2 if stage > 0 and i == 0 else 1))
                c_in = c_out
        self.stages = nn.Sequential(*layers)
        self.out_dim = c_in

    def forward(self, x: Tensor) -> Tensor:
        features: Tensor = self.stages(self.stem(x)).mean(dim=(2, 3))  # (N, F)
        return features


BLOCKS: dict[BackboneName, tuple[int, ...]] = {
    "resnet-tiny": (1, 1, 1),
    "resnet10": (1, 1, 1, 1),
    "resnet18": (2, 2, 2, 2),
}


def mlp(
    dims: Sequence[int], *, bn: bool = True, last_bn: bool | None = None, last_bias: bool = True
) -> nn.Sequential:
    """Linear layers ``dims[0] -> ... -> dims[-1]`` with BatchNorm (if ``bn``) and ReLU between.
    ``last_bn``: None = no BatchNorm after the last layer; False/True = one with that ``affine``.
    Layers followed by BatchNorm have no bias."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(itertools.pairwise(dims)):
        last = i == len(dims) - 2
        bias = (last and last_bn is None and last_bias) or (not last and not bn)
        layers.append(nn.Linear(d_in, d_out, bias=bias))
        if not last:
            layers += [nn.BatchNorm1d(d_out), nn.ReLU()] if bn else [nn.ReLU()]
    if last_bn is not None:
        layers.append(nn.BatchNorm1d(dims[-1], affine=last_bn))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """Backbone followed by a projection head: ``forward`` returns the projections."""

    def __init__(self, backbone: ResNet, projector: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector

    def forward(self, x: Tensor) -> Tensor:
        z: Tensor = self.projector(self.backbone(x))  # (N, D)
        return z


# ------------------------------------------------------------------------------------------------
# 5. Methods: each is a module whose forward returns the loss of one batch of views
# ------------------------------------------------------------------------------------------------


class Method(nn.Module):
    """Base class. ``forward(views)`` returns the loss; ``after_step()`` runs after the
    optimizer step (EMA update, queue push, prototype normalization); ``online`` is what the
    optimizer trains and what the target networks follow."""

    online: Encoder

    @property
    def backbone(self) -> ResNet:
        return self.online.backbone

    def before_optimizer_step(self, step: int) -> None:
        """Adjust gradients between backward and optimizer step ``step``. Default: nothing."""

    def after_step(self, step: int) -> None:
        """Update state after optimizer step ``step`` (0-based). Default: nothing."""

    def log_values(self) -> dict[str, float]:
        """Extra numbers for the JSON log (e.g. the EMA momentum)."""
        return {}


def per_view(net: nn.Module, views: Sequence[Tensor]) -> list[Tensor]:
    """One forward pass per view, so each view has its own BatchNorm statistics (as the official
    BYOL, SimSiam, Barlow Twins and MoCo code do; SimCLR and SwAV batch the views together)."""
    return [net(v) for v in views]


class SimCLR(Method):
    """SimCLR (Chen et al. 2020): NT-Xent between the two views' projections."""

    def __init__(self, backbone: ResNet, r: Resolved, distributed: bool) -> None:
        super().__init__()
        f = backbone.out_dim
        self.online = Encoder(backbone, mlp([f, 4 * f, 128]))
        self.temperature = r.temperature
        self.gather = distributed

    def forward(self, views: list[Tensor]) -> Tensor:
        z_a, z_b = forward_multicrop(self.online, views[:2])
        return SF.nt_xent(z_a, z_b, temperature=self.temperature, gather_distributed=self.gather)


class MoCo(Method):
    """MoCo v2 (Chen et al. 2020): InfoNCE of queries against momentum-encoder keys and a queue
    of past keys. Symmetrized over the two views (as MoCo v3 and solo-learn's MoCo v2+ do; the
    official MoCo v2 uses one direction), so both views' keys are enqueued."""

    def __init__(self, backbone: ResNet, r: Resolved, distributed: bool) -> None:
        super().__init__()
        f = backbone.out_dim
        self.online = Encoder(backbone, mlp([f, 4 * f, 128], bn=False))
        self.target = sslosses.EMA(self.online, momentum=r.ema_momentum, buffers="keep")
        self.queue = sslosses.MoCoQueue(r.queue_size, 128, gather_distributed=distributed)
        self.temperature = r.temperature
        self._keys: Tensor | None = None

    def forward(self, views: list[Tensor]) -> Tensor:
        q_a, q_b = per_view(self.online, views[:2])
        with torch.no_grad():
            k_a, k_b = per_view(self.target.module, views[:2])
        # MoCo v2 contrasts with the queue only; on the very first step the queue is still
        # empty (MoCo fills it with random noise instead), so the batch's keys stand in.
        negatives = self.queue.features() if len(self.queue) else None
        nce = functools.partial(
            SF.info_nce,
            negatives=negatives,
            temperature=self.temperature,
            in_batch_negatives=negatives is None,
        )
        loss = 0.5 * (nce(q_a, k_b) + nce(q_b, k_a))
        self._keys = F.normalize(torch.cat([k_a, k_b]).float(), dim=1)
        return loss

    def after_step(self, step: int) -> None:
        self.target.update(self.online)
        if self._keys is not None:
            self.queue.push(self._keys)
            self._keys = None

    def log_values(self) -> dict[str, float]:
        return {"ema_momentum": self.target.momentum}


class BYOL(Method):
    """BYOL (Grill et al. 2020): the online predictor regresses the EMA target's projection."""

    def __init__(self, backbone: ResNet, r: Resolved, distributed: bool) -> None:
        super().__init__()
        f = backbone.out_dim
        self.online = Encoder(backbone, mlp([f, 8 * f, 256]))
        self.predictor = mlp([256, 8 * f, 256])
        self.target = sslosses.EMA(
            self.online, momentum=r.ema_momentum, total_steps=r.steps, buffers="keep"
        )

    def forward(self, views: list[Tensor]) -> Tensor:
        z_a, z_b = per_view(self.online, views[:2])
        p_a, p_b = per_view(self.predictor, [z_a, z_b])
        with torch.no_grad():
            t_a, t_b = per_view(self.target.module, views[:2])
        return SF.byol_loss(p_a, t_b) + SF.byol_loss(p_b, t_a)

    def after_step(self, step: int) -> None:
        self.target.update(self.online)

    def log_values(self) -> dict[str, float]:
        return {"ema_momentum": self.target.momentum}


class SimSiam(Method):
    """SimSiam (Chen & He 2021): predictor vs stop-gradient projection, no target network."""

    def __init__(self, backbone: ResNet, r: Resolved, distributed: bool) -> None:
        super().__init__()
        f = backbone.out_dim
        self.online = Encoder(backbone, mlp([f, 4 * f, 4 * f, 4 * f], last_bn=False))
        self.predictor = mlp([4 * f, f, 4 * f])

    def forward(self, views: list[Tensor]) -> Tensor:
        z_a, z_b = per_view(self.online, views[:2])
        p_a, p_b = per_view(self.predictor, [z_a, z_b])
        return 0.5 * (
            SF.negative_cosine_similarity(p_a, z_b) + SF.negative_cosine_similarity(p_b, z_a)
        )


class SwAV(Method):
    """SwAV (Caron et al. 2020): swapped prediction of Sinkhorn codes over multi-crop views."""

    def __init__(self, backbone: ResNet, r: Resolved, distributed: bool, queue: int) -> None:
        super().__init__()
        f = backbone.out_dim
        self.online = Encoder(backbone, mlp([f, 4 * f, 128]))
        # frozen for the first ~2% of training (the paper: the first epoch)
        self.prototypes = sslosses.SwAVPrototypes(
            128, r.prototypes, freeze_steps=max(1, r.steps // 50)
        )
        self.prototypes.normalize_()
        self.temperature = r.temperature
        self.gather = distributed
        # optional feature queue per assignment crop (each rank its own, as the official code)
        self.queues = nn.ModuleList(
            [sslosses.MoCoQueue(queue, 128) for _ in range(2)] if queue else []
        )
        self._embeddings: list[Tensor] = []

    def forward(self, views: list[Tensor]) -> Tensor:
        # one forward pass per crop size (SwAV's multi-crop), then onto the unit sphere
        z = [F.normalize(out, dim=1) for out in forward_multicrop(self.online, views)]
        scores = [self.prototypes(zv) for zv in z]
        queue_scores = None
        if self.queues and all(q.is_full for q in self._queues()):  # used once full
            queue_scores = [self.prototypes(q.features()).detach() for q in self._queues()]
        self._embeddings = [z[0].detach(), z[1].detach()]
        return SF.swav_loss(
            scores,
            temperature=self.temperature,
            queue_scores=queue_scores,
            gather_distributed=self.gather,
        )

    def before_optimizer_step(self, step: int) -> None:
        self.prototypes.cancel_gradients_(step)

    def after_step(self, step: int) -> None:
        self.prototypes.normalize_()
        if self.queues:
            for queue, embedding in zip(self._queues(), self._embeddings, strict=True):
                queue.push(embedding.float())
        self._embeddings = []

    def _queues(self) -> list[sslosses.MoCoQueue]:
        return [typing.cast(sslosses.MoCoQueue, q) for q in self.queues]


class BarlowTwins(Method):
    """Barlow Twins (Zbontar et al. 2021): cross-correlation of the two views -> identity."""

    def __init__(self, backbone: ResNet, r: Resolved, distributed: bool, lambd: float) -> None:
        super().__init__()
        f = backbone.out_dim
        self.online = Encoder(backbone, mlp([f, 4 * f, 4 * f, 4 * f], last_bias=False))
        self.lambd = lambd
        self.gather = distributed

    def forward(self, views: list[Tensor]) -> Tensor:
        z_a, z_b = per_view(self.online, views[:2])
        return SF.barlow_twins_loss(z_a, z_b, lambd=self.lambd, gather_distributed=self.gather)


class DINO(Method):
    """DINO (Caron et al. 2021): every student crop predicts the centered, sharpened output of
    the EMA teacher on the other global crops. The head is DINO's (L2-normalized bottleneck,
    weight-normalized last layer, frozen for the first ~2% of steps, as the paper's first
    epoch); the teacher's momentum follows a cosine from 0.996 to 1, its temperature warms up
    linearly from 0.04 to 0.07 over the first 30% of steps (the paper's ViT-S setting), and
    the center is updated explicitly after each loss. K is small for small data."""

    def __init__(self, backbone: ResNet, r: Resolved, distributed: bool) -> None:
        super().__init__()
        f = backbone.out_dim
        k = DINO_SMALL_OUTPUTS if r.image_size <= 16 else 65_536  # small data: small K
        head = sslosses.DINOHead(
            f,
            k,
            hidden_dim=8 * f,
            bottleneck_dim=DINO_BOTTLENECK,
            freeze_steps=max(1, r.steps // 50),
        )
        self.online = Encoder(backbone, head)
        self.target = sslosses.EMA(
            self.online, momentum=r.ema_momentum, total_steps=r.steps, buffers="keep"
        )
        self.centering = sslosses.DINOCenter(k, momentum=0.9, gather_distributed=distributed)
        self.criterion = sslosses.DINOLoss(
            student_temperature=r.temperature, gather_distributed=distributed
        )
        self.warmup_steps = max(1, (3 * r.steps) // 10)

    def teacher_temperature(self) -> float:
        # the teacher's step count is saved in the checkpoint, so a resumed run continues here
        start, end = DINO_TEACHER_TEMPERATURES
        return sslosses.linear_warmup_schedule(self.target.step, self.warmup_steps, start, end)

    def forward(self, views: list[Tensor]) -> Tensor:
        student = forward_multicrop(self.online, views)  # one pass per crop size
        with torch.no_grad():
            teacher = forward_multicrop(self.target.module, views[:2])
        loss: Tensor = self.criterion(
            student,
            teacher,
            center=self.centering.center,
            teacher_temperature=self.teacher_temperature(),
        )
        self.centering.update(teacher)
        return loss

    def before_optimizer_step(self, step: int) -> None:
        typing.cast(sslosses.DINOHead, self.online.projector).cancel_gradients_(step)

    def after_step(self, step: int) -> None:
        self.target.update(self.online)

    def log_values(self) -> dict[str, float]:
        return {
            "ema_momentum": self.target.momentum,
            "teacher_temperature": self.teacher_temperature(),
        }


DINO_SMALL_OUTPUTS = 1024  # K of the DINO head on digits / Fashion-MNIST (paper: 65536)
DINO_BOTTLENECK = 256
DINO_TEACHER_TEMPERATURES = (0.04, 0.07)


class VICReg(Method):
    """VICReg (Bardes et al. 2022): invariance, variance and covariance of the two views'
    embeddings. The expander is the paper's three layers (8192-8192-8192 on ResNet-50's 2048
    features) scaled to the backbone: 4F-4F-4F, BatchNorm and ReLU between, no final bias."""

    def __init__(self, backbone: ResNet, r: Resolved, distributed: bool) -> None:
        super().__init__()
        f = backbone.out_dim
        self.online = Encoder(backbone, mlp([f, 4 * f, 4 * f, 4 * f], last_bias=False))
        self.gather = distributed

    def forward(self, views: list[Tensor]) -> Tensor:
        z_a, z_b = per_view(self.online, views[:2])
        return SF.vicreg_loss(z_a, z_b, gather_distributed=self.gather)  # 25 / 25 / 1


def build_method(cfg: Config, r: Resolved, data: Data, distributed: bool) -> Method:
    """Backbone first (so every method starts from the same weights for a seed), then heads."""
    backbone = ResNet(data.train_x.shape[1], r.width, BLOCKS[r.backbone])
    if r.method == "simclr":
        return SimCLR(backbone, r, distributed)
    if r.method == "moco":
        return MoCo(backbone, r, distributed)
    if r.method == "byol":
        return BYOL(backbone, r, distributed)
    if r.method == "simsiam":
        return SimSiam(backbone, r, distributed)
    if r.method == "swav":
        return SwAV(backbone, r, distributed, cfg.swav_queue)
    if r.method == "dino":
        return DINO(backbone, r, distributed)
    if r.method == "vicreg":
        return VICReg(backbone, r, distributed)
    return BarlowTwins(backbone, r, distributed, cfg.barlow_lambda)


# ------------------------------------------------------------------------------------------------
# 6. Evaluation: weighted kNN on frozen, L2-normalized features (Wu et al. 2018)
# ------------------------------------------------------------------------------------------------


@torch.no_grad()
def extract_features(
    encoder: Callable[[Tensor], Tensor],
    images: Tensor,
    prepare: Callable[[Tensor], Tensor],
    device: torch.device,
    batch_size: int = 1024,
) -> Tensor:
    """Features of ``images`` (uint8, any device) in float32, L2-normalized, on ``device``."""
    out = []
    for start in range(0, len(images), batch_size):
        x = prepare(images[start : start + batch_size].to(device, non_blocking=True))
        with autocast(device):
            out.append(F.normalize(encoder(x).float().flatten(1), dim=1))
    return torch.cat(out)


@torch.no_grad()
def knn_accuracy(
    bank: Tensor,
    bank_labels: Tensor,
    queries: Tensor,
    query_labels: Tensor,
    *,
    k: int,
    temperature: float,
    n_classes: int,
    chunk: int = 512,
) -> float:
    """Top-1 accuracy (%) of the weighted kNN vote: the ``k`` most cosine-similar bank entries
    vote for their class with weight ``exp(sim / temperature)``. Features must be normalized."""
    bank_labels = bank_labels.to(bank.device)
    correct = 0
    for start in range(0, len(queries), chunk):
        sim = queries[start : start + chunk] @ bank.T  # (B, N_bank)
        top_sim, top_idx = sim.topk(k, dim=1)  # (B, k)
        votes = torch.zeros(len(sim), n_classes, device=bank.device)
        votes.scatter_add_(1, bank_labels[top_idx], (top_sim / temperature).exp())
        pred = votes.argmax(dim=1).cpu()
        correct += int((pred == query_labels[start : start + chunk]).sum())
    return 100.0 * correct / len(queries)


class KNNProbe:
    """Evaluates a frozen backbone: train split as memory bank, test split as queries."""

    def __init__(self, data: Data, k: int, temperature: float, device: torch.device) -> None:
        self.data, self.k, self.temperature, self.device = data, k, temperature, device
        mean = to_float(data.train_x[:10_000], data).mean(dim=(0, 2, 3)).view(1, -1, 1, 1)
        std = to_float(data.train_x[:10_000], data).std(dim=(0, 2, 3)).view(1, -1, 1, 1)
        self.mean, self.std = mean.to(device), std.to(device)

    def prepare(self, images: Tensor) -> Tensor:
        return (to_float(images, self.data) - self.mean) / self.std

    def accuracy(self, encoder: Callable[[Tensor], Tensor]) -> float:
        bank = extract_features(encoder, self.data.train_x, self.prepare, self.device)
        queries = extract_features(encoder, self.data.test_x, self.prepare, self.device)
        return knn_accuracy(
            bank,
            self.data.train_y,
            queries,
            self.data.test_y,
            k=self.k,
            temperature=self.temperature,
            n_classes=self.data.n_classes,
        )

    def backbone_accuracy(self, backbone: nn.Module) -> float:
        was_training = backbone.training
        backbone.eval()
        try:
            return self.accuracy(backbone)
        finally:
            backbone.train(was_training)


# ------------------------------------------------------------------------------------------------
# 7. Runtime: device, DDP, autocast, RNG state, checkpoints
# ------------------------------------------------------------------------------------------------


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_runtime(cfg: Config) -> Runtime:
    """CUDA when available; a process group when launched by ``torchrun`` (RANK, WORLD_SIZE)."""
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if use_cuda:
            torch.cuda.set_device(local_rank)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
        return Runtime(device, dist.get_rank(), dist.get_world_size())
    return Runtime(torch.device("cuda" if use_cuda else "cpu"))


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA; a disabled context on CPU (float32 there)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every RNG's state as tensors, ints, floats and None only: ``weights_only`` loads it."""
    py_version, py_words, py_gauss = random.getstate()
    np_name, np_words, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    if np_name != "MT19937":
        raise ValueError(f"unexpected NumPy bit generator {np_name!r}")
    state: dict[str, Any] = {
        "python": torch.tensor(py_words, dtype=torch.int64),  # 625 words < 2**32
        "python_version": int(py_version),
        "python_gauss": py_gauss,
        "numpy": torch.from_numpy(np.asarray(np_words, dtype=np.int64)),  # 624 uint32 words
        "numpy_pos": int(np_pos),
        "numpy_gauss": (int(np_has_gauss), float(np_gauss)),
        "torch": torch.get_rng_state(),
        "augment": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    """Restore :func:`rng_state`'s states (its tensors may have been mapped to an accelerator)."""
    words = tuple(int(w) for w in state["python"].tolist())
    random.setstate((state["python_version"], words, state["python_gauss"]))
    has_gauss, gauss = state["numpy_gauss"]
    np_words = state["numpy"].cpu().numpy().astype(np.uint32)
    np.random.set_state(("MT19937", np_words, state["numpy_pos"], has_gauss, gauss))
    torch.set_rng_state(state["torch"].cpu())
    generator.set_state(state["augment"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def config_fingerprint(cfg: Config) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RUNTIME_ONLY}


def check_resumable(path: Path, saved: dict[str, Any], cfg: Config) -> None:
    now = config_fingerprint(cfg)
    diff = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
    if diff:
        changes = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"{path} was written with other settings ({changes}); pass another --out "
            "or --no-resume to start over"
        )


def save_atomic(obj: object, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------
# 8. Training
# ------------------------------------------------------------------------------------------------


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: training stops (like DINO) instead of going on."""


@dataclass
class MethodResult:
    method: MethodName
    title: str
    steps: int
    final_loss: float
    knn_top1: float
    baseline_top1: float
    seconds: float
    history: list[dict[str, Any]]  # the JSON lines, one per epoch
    curve: list[tuple[int, float]]  # (step, mean loss) about 100 times per run, for the plot
    finished: bool


def lr_at(step: int, r: Resolved) -> float:
    """Linear warm-up to ``r.lr``, then cosine decay to zero."""
    if step < r.warmup_steps:
        return r.lr * (step + 1) / r.warmup_steps
    progress = (step - r.warmup_steps) / max(1, r.steps - r.warmup_steps)
    return r.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: Method, r: Resolved) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and BatchNorm parameters (1-D tensors)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": r.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=r.lr)


def train_method(
    method: MethodName, cfg: Config, data: Data, rt: Runtime, probe: KNNProbe
) -> MethodResult:
    """Train one method (resuming if a checkpoint exists) and return its results."""
    ssl_x = data.ssl_x
    r = resolve(cfg, method, len(ssl_x))
    if r.batch_size % rt.world:
        raise ValueError(f"--batch-size {r.batch_size} must be divisible by {rt.world} ranks")
    local_batch = r.batch_size // rt.world
    sampler: DistributedSampler[int] = DistributedSampler(
        typing.cast(Any, range(len(ssl_x))),
        num_replicas=rt.world,
        rank=rt.rank,
        shuffle=True,
        seed=cfg.seed,
        drop_last=True,
    )
    steps_per_epoch = len(sampler) // local_batch
    if steps_per_epoch == 0:
        raise ValueError(f"--batch-size {r.batch_size} exceeds the {len(ssl_x)} training images")

    out_dir = Path(cfg.out) / method
    ckpt_path = out_dir / "checkpoint.pt"
    metrics_path = out_dir / "metrics.jsonl"
    if rt.main:
        out_dir.mkdir(parents=True, exist_ok=True)

    # Model, untrained baseline, optimizer: identical for a seed whether or not we resume.
    seed_everything(cfg.seed)
    model = build_method(cfg, r, data, rt.distributed).to(rt.device)
    baseline = probe.backbone_accuracy(model.backbone)
    if rt.distributed and r.spec.sync_bn:
        if rt.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[no-untyped-call]
        elif rt.main:
            print(
                f"[{method}] SyncBatchNorm needs CUDA: BatchNorm stays per process", file=sys.stderr
            )
    optimizer = make_optimizer(model, r)
    augment = build_augment(r, data, probe.mean, probe.std)
    generator = torch.Generator()  # on the CPU: the same crops on every device
    generator.manual_seed(cfg.seed * 1000 + rt.rank)

    step, seconds, history = 0, 0.0, []
    epoch_loss = [0.0, 0]  # running sum and count of the current epoch's losses
    curve: list[tuple[int, float]] = []
    curve_every, window = max(1, r.steps // 100), [0.0, 0]
    if cfg.resume and ckpt_path.is_file():
        # Tensors, numbers and strings only (RNG states as tensors): nothing is unpickled
        # beyond those, so a checkpoint cannot run code when it is loaded.
        ckpt = torch.load(ckpt_path, map_location=rt.device, weights_only=True)
        check_resumable(ckpt_path, ckpt["config"], cfg)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step, seconds, history = ckpt["step"], ckpt["seconds"], ckpt["history"]
        epoch_loss, curve, window = ckpt["epoch_loss"], ckpt["curve"], ckpt["window"]
        rng = ckpt["rng"]
        if len(rng) == rt.world:
            set_rng_state(rng[rt.rank], generator)
        elif rt.main:
            print(
                f"[{method}] checkpoint from {len(rng)} ranks, now {rt.world}: the RNGs "
                "start afresh, so the run goes on but not as it would have",
                file=sys.stderr,
            )
        if rt.main:
            print(f"[{method}] resumed from {ckpt_path} at step {step}", file=sys.stderr)
    if rt.main:  # the log mirrors the checkpoint: drop lines written after it
        metrics_path.write_text("".join(json.dumps(h) + "\n" for h in history))

    def checkpoint() -> None:
        states = [rng_state(generator)]
        if rt.distributed:
            states = [None] * rt.world  # type: ignore[list-item]
            dist.all_gather_object(states, rng_state(generator))
        if rt.main:
            save_atomic(
                {
                    "config": config_fingerprint(cfg),
                    "step": step,
                    "seconds": seconds,
                    "history": history,
                    "epoch_loss": epoch_loss,
                    "curve": curve,
                    "window": window,
                    "rng": states,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                },
                ckpt_path,
            )

    train_model: nn.Module = model
    if cfg.compile:
        model.backbone.compile()
    if rt.distributed:
        # Buffers stay per rank after the start (SwAV's queues are per rank, as in its code).
        ddp = nn.parallel.DistributedDataParallel
        no_sync: dict[str, Any] = (
            {"forward_sync_buffers": False}
            if "forward_sync_buffers" in inspect.signature(ddp).parameters
            else {"broadcast_buffers": False}  # PyTorch before forward_sync_buffers
        )
        device_ids = [rt.device.index] if rt.device.type == "cuda" else None
        train_model = ddp(model, device_ids=device_ids, **no_sync)
    images = ssl_x.to(rt.device)
    started, steps_this_run = time.perf_counter(), 0
    model.train()
    while step < r.steps:
        epoch = step // steps_per_epoch
        sampler.set_epoch(epoch)
        order = torch.tensor(list(iter(sampler)), device=rt.device)
        batches = order[: steps_per_epoch * local_batch].view(steps_per_epoch, local_batch)
        first = step - epoch * steps_per_epoch
        last = min(steps_per_epoch, first + (r.steps - step))
        bar = progress(range(first, last), f"{method} epoch {epoch}", cfg, rt)
        for i in bar:
            views = augment(images[batches[i]], generator)
            lr = lr_at(step, r)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast(rt.device):
                loss = train_model(views)
            value = float(loss.item())
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"{method}: non-finite loss {value} at step {step} (epoch {epoch}, lr "
                    f"{lr:.3g}); stopping. Lower --lr or check the data."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            model.before_optimizer_step(step)
            optimizer.step()
            model.after_step(step)
            step += 1
            steps_this_run += 1
            epoch_loss = [epoch_loss[0] + value, epoch_loss[1] + 1]
            window = [window[0] + value, window[1] + 1]
            if step % curve_every == 0 or step == r.steps:
                curve.append((step, window[0] / window[1]))
                window = [0.0, 0]
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{value:.4f}")
            if cfg.stop_after is not None and steps_this_run >= cfg.stop_after:
                break
        epoch_done = step % steps_per_epoch == 0 or step == r.steps
        stopping = cfg.stop_after is not None and steps_this_run >= cfg.stop_after
        if epoch_done:
            record: dict[str, Any] = {
                "method": method,
                "epoch": epoch,
                "step": step,
                "loss": epoch_loss[0] / max(1, epoch_loss[1]),
                "lr": lr_at(step - 1, r),
                **model.log_values(),
            }
            steps_before = step - epoch_loss[1]
            if step == r.steps or step // r.eval_every > steps_before // r.eval_every:
                record["knn_top1"] = probe.backbone_accuracy(model.backbone)
            seconds += time.perf_counter() - started
            started = time.perf_counter()
            record["seconds"] = round(seconds, 2)
            history.append(record)
            epoch_loss = [0.0, 0]
            if rt.main:
                line = json.dumps(record)
                print(line, flush=True)
                with open(metrics_path, "a") as f:
                    f.write(line + "\n")
        if epoch_done or stopping:
            seconds += time.perf_counter() - started
            started = time.perf_counter()
            checkpoint()
        if stopping:
            break

    evaluated = [h for h in history if "knn_top1" in h]
    return MethodResult(
        method=method,
        title=r.spec.title,
        steps=step,
        final_loss=history[-1]["loss"] if history else float("nan"),
        knn_top1=evaluated[-1]["knn_top1"] if evaluated else float("nan"),
        baseline_top1=baseline,
        seconds=seconds,
        history=history,
        curve=curve,
        finished=step == r.steps,
    )


def progress(steps: range, desc: str, cfg: Config, rt: Runtime) -> Any:
    """A tqdm bar on an interactive terminal (rank 0, without --quiet); else the plain range."""
    if cfg.quiet or not rt.main or not sys.stderr.isatty():
        return steps
    from tqdm import tqdm  # type: ignore[import-untyped]

    return tqdm(steps, desc=desc, leave=False, dynamic_ncols=True)


# ------------------------------------------------------------------------------------------------
# 9. Report: Markdown table and PNG plot
# ------------------------------------------------------------------------------------------------


def markdown_table(results: Sequence[MethodResult], raw_top1: float, cfg: Config) -> str:
    rows = [
        "| method | steps | final loss | kNN top-1 (%) | untrained (%) | gain | time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for res in results:
        rows.append(
            f"| {res.title} | {res.steps} | {res.final_loss:.4f} | {res.knn_top1:.2f} | "
            f"{res.baseline_top1:.2f} | {res.knn_top1 - res.baseline_top1:+.2f} | "
            f"{res.seconds:.0f} |"
        )
    rows.append("")
    rows.append(f"Raw pixels, same kNN (context only): {raw_top1:.2f}%. Data: {cfg.data}.")
    return "\n".join(rows) + "\n"


def plot(results: Sequence[MethodResult], path: Path) -> None:
    """One loss panel per method (their scales differ) and one kNN panel for all."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(results))
    rows = math.ceil(len(results) / cols)
    fig = plt.figure(figsize=(4 * cols, 2.4 * rows + 3.6))
    grid = fig.add_gridspec(rows + 1, cols, height_ratios=[1.0] * rows + [1.6])
    ax_knn = fig.add_subplot(grid[rows, :])
    for i, res in enumerate(results):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        ax.plot([s for s, _ in res.curve], [loss for _, loss in res.curve])
        ax.set_title(f"{res.title}: training loss", fontsize=9)
        ax.tick_params(labelsize=7)
        evals = [h for h in res.history if "knn_top1" in h]
        line = ax_knn.plot(
            [0] + [h["step"] for h in evals],
            [res.baseline_top1] + [h["knn_top1"] for h in evals],
            marker="o",
            ms=3,
            label=res.title,
        )
        ax_knn.axhline(res.baseline_top1, color=line[0].get_color(), ls=":", lw=0.8)
    ax_knn.set(xlabel="step", ylabel="kNN top-1 (%)", title="kNN accuracy (dotted: untrained)")
    ax_knn.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# 10. Main
# ------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> list[MethodResult]:
    """Run the command line ``argv``; returns one :class:`MethodResult` per method trained."""
    cfg = parse_args(argv)
    rt = setup_runtime(cfg)
    preset = PRESETS[cfg.data]
    data = load_data(cfg).resized(cfg.image_size or preset.image_size)
    probe = KNNProbe(
        data, min(cfg.knn_k or preset.knn_k, len(data.train_x)), cfg.knn_temperature, rt.device
    )
    raw_top1 = probe.accuracy(lambda x: x)
    if rt.main:
        header = {
            "data": data.name,
            "train": len(data.train_x),
            "test": len(data.test_x),
            "ssl_images": len(data.ssl_x),
            "device": str(rt.device),
            "world_size": rt.world,
            "raw_pixels_knn_top1": raw_top1,
        }
        print(json.dumps(header), flush=True)
    methods = METHODS if cfg.method == "all" else (cfg.method,)
    results = []
    for method in methods:
        results.append(train_method(method, cfg, data, rt, probe))
        if not results[-1].finished:  # stopped by --stop-after
            break
    if rt.main:
        table = markdown_table(results, raw_top1, cfg)
        out = Path(cfg.out)
        (out / "results.md").write_text(table)
        plot(results, out / "results.png")
        print(table, flush=True)
    return results


def cli(argv: Sequence[str] | None = None) -> int:
    """The command-line entry point: exit status 1 (and a message) on a non-finite loss."""
    try:
        main(argv)
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(cli())
