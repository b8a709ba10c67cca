#!/usr/bin/env python
"""Reference training: every sslosses method on a real encoder, judged by kNN and linear probes.

One script that reads top to bottom: config, augmentations, networks, methods, evaluation, the
training loop, the report. The dataset readers (``train_data.py``), the probes
(``train_probes.py``) and the checkpoint helpers (``train_state.py``) sit next to it. It uses
only sslosses' losses and components (plus plain torch for the networks), so it doubles as a
worked example and as the end-to-end test that the losses actually train something.

Quick start (CPU, bundled scikit-learn digits, all methods in a few minutes)::

    python benchmarks/train.py --method all --out runs/default

Other data (no downloads: the files must already be on disk)::

    python benchmarks/train.py --method byol --data fashion-mnist  # Debian: dataset-fashion-mnist
    torchrun --nproc_per_node=8 benchmarks/train.py --method simclr --data cifar10 \\
        --data-dir ~/data/cifar-10-batches-py --backbone resnet18 --width 64 --batch-size 512 \\
        --steps 78000 --eval-every 3900 --out runs/cifar10

Each run writes ``<out>/<run>/metrics.jsonl`` (one JSON line per epoch),
``<out>/<run>/checkpoint.pt`` and, once finished, ``<out>/<run>/result.json``, where ``<run>``
is the method (``<method>-seed<S>`` for a seed other than 0); rerunning the same command
resumes from the checkpoint (a finished run is only reported). ``<out>/results.md``,
``results.json`` and ``results.png`` hold the table of every finished run in ``<out>`` and the
accuracy / loss curves (``--report`` writes them without training). See
``docs/guides/training.rst``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import itertools
import json
import math
import os
import statistics
import sys
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DistributedSampler

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the train_* modules next to this file

import train_probes
import train_reference
from train_data import FASHION_MNIST_DIR, Data, load_data
from train_state import autocast, rng_state, save_atomic, seed_everything, set_rng_state

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

SSLMethodName = Literal[
    "simclr", "moco", "byol", "simsiam", "swav", "barlow-twins", "dino", "dino-sinkhorn", "vicreg"
]
MethodName = SSLMethodName | Literal["supervised"]
METHODS: tuple[SSLMethodName, ...] = get_args(SSLMethodName)
# ``--method all``: every self-supervised method, then the supervised ceiling (same encoder,
# same augmentations and budget, trained on the labels)
ALL_RUNS: tuple[MethodName, ...] = (*METHODS, "supervised")
DataName = Literal["digits", "fashion-mnist", "cifar10", "stl10"]
BackboneName = Literal["resnet-tiny", "resnet10", "resnet18"]
KNN_KS = (200, 20)  # neighbours of the two kNN probes (DINO's eval_knn.py reports both)


# ------------------------------------------------------------------------------------------------
# 1. Configuration
# ------------------------------------------------------------------------------------------------


@dataclass
class Config:
    """Every knob of a run. ``None`` means "the default of the data preset / the method"; the
    ``default`` metadata names where it comes from, and ``--help`` prints the actual values."""

    method: MethodName | Literal["all"] = field(
        default="all",
        metadata={"help": "the method to train, or all of them in turn (then the supervised run)"},
    )
    data: DataName = field(default="digits", metadata={"help": "the dataset"})
    data_dir: str | None = field(
        default=None,
        metadata={"help": "folder with the dataset files (not for digits)", "default": "data"},
    )
    out: str = field(default="runs/default", metadata={"help": "output folder"})
    backbone: BackboneName | None = field(
        default=None, metadata={"help": "the encoder", "default": "preset"}
    )
    width: int | None = field(
        default=None, metadata={"help": "channels of the first stage", "default": "preset"}
    )
    stem_stride: int | None = field(
        default=None,
        metadata={
            "help": "stride of the 3x3 stem convolution (2: quarter cost)",
            "default": "preset",
        },
    )
    steps: int | None = field(
        default=None, metadata={"help": "optimizer steps per method", "default": "preset"}
    )
    batch_size: int | None = field(
        default=None,
        metadata={"help": "global batch size (split over the ranks)", "default": "preset"},
    )
    lr: float | None = field(
        default=None, metadata={"help": "peak learning rate", "default": "method"}
    )
    weight_decay: float | None = field(
        default=None, metadata={"help": "AdamW weight decay", "default": "method"}
    )
    warmup_steps: int | None = field(
        default=None, metadata={"help": "linear warm-up steps", "default": "10%% of --steps"}
    )
    temperature: float | None = field(
        default=None,
        metadata={
            "help": "temperature of NT-Xent / InfoNCE / SwAV / DINO's student",
            "default": "method",
        },
    )
    ema_momentum: float | None = field(
        default=None,
        metadata={
            "help": "start of the EMA momentum schedule (MoCo, BYOL, DINO)",
            "default": "method",
        },
    )
    queue_size: int | None = field(
        default=None,
        metadata={
            "help": "MoCo queue length (negatives)",
            "default": "half the training images, at most 65536",
        },
    )
    prototypes: int | None = field(
        default=None,
        metadata={
            "help": "SwAV prototypes",
            "default": "3000 for over 10k training images, else 300",
        },
    )
    image_size: int | None = field(
        default=None,
        metadata={"help": "resize the images to this side once at load", "default": "preset"},
    )
    small_crops: int | None = field(
        default=None,
        metadata={"help": "SwAV / DINO: number of small (multi-crop) views", "default": "preset"},
    )
    swav_queue: int = field(
        default=0, metadata={"help": "SwAV feature queue length per assignment crop (0: none)"}
    )
    barlow_lambda: float = field(
        default=0.0051, metadata={"help": "Barlow Twins off-diagonal weight"}
    )
    eval_every: int | None = field(
        default=None,
        metadata={"help": "kNN evaluation every this many steps", "default": "preset"},
    )
    knn_temperature: float = field(default=0.1, metadata={"help": "kNN vote temperature"})
    seed: int = field(default=0, metadata={"help": "seed of weights, data order, augmentations"})
    device: Literal["auto", "cpu", "cuda"] = field(
        default="auto", metadata={"help": "auto: CUDA when available"}
    )
    compile: bool = field(default=False, metadata={"help": "torch.compile the backbone"})
    unlabeled: bool = field(
        default=True, metadata={"help": "STL-10: also train on the 100k unlabeled images"}
    )
    resume: bool = field(default=True, metadata={"help": "resume from <out>/<run>/checkpoint.pt"})
    stop_after: int | None = field(
        default=None,
        metadata={"help": "stop after this many steps in this invocation (simulated preemption)"},
    )
    report: bool = field(
        default=False,
        metadata={"help": "train nothing: write the table of the finished runs in --out"},
    )
    quiet: bool = field(default=False, metadata={"help": "no progress bar"})


# Fields that do not change the result, so a checkpoint made with other values still resumes.
RUNTIME_ONLY = (
    "method", "data_dir", "out", "device", "compile", "resume", "stop_after", "report", "quiet"
)  # fmt: skip


@dataclass(frozen=True)
class DataPreset:
    """Defaults that depend on the data: network size, budget, augmentation strength."""

    backbone: BackboneName
    width: int
    steps: int
    batch_size: int
    eval_every: int
    knn_k: int  # the kNN probe of the headline column (both k = 200 and k = 20 are reported)
    image_size: int  # images are resized to this side once at load; the large crops have it
    small_crop_size: int  # side of SwAV's small crops
    small_crops: int  # how many (the paper: 6 on ImageNet)
    crop_scale: tuple[float, float]  # area range of the large crops
    small_crop_scale: tuple[float, float]
    flip: bool  # random horizontal flips (not for digits)
    stem_stride: int = 1  # 2 halves the resolution of every stage (a quarter of the cost)


PRESETS: dict[DataName, DataPreset] = {
    "digits": DataPreset(
        backbone="resnet-tiny",
        width=16,
        steps=200,
        batch_size=128,  # half the images per step of the other presets: make train < 5 min
        eval_every=50,
        knn_k=20,
        image_size=8,
        small_crop_size=4,
        small_crops=4,
        crop_scale=(0.5, 1.0),
        small_crop_scale=(0.3, 0.6),
        flip=False,
    ),
    # Native 28x28 images; ResNet-10 at width 16 (128-d features), 300 steps (1.3 epochs) and
    # 2 small crops for SwAV / DINO keep every method under 20 CPU-minutes on one core.
    "fashion-mnist": DataPreset(
        backbone="resnet10",
        width=16,
        steps=300,
        batch_size=256,
        eval_every=150,
        knn_k=200,
        image_size=28,
        small_crop_size=12,
        small_crops=2,
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
    """Per-method defaults (each with its source in ``METHOD_SPECS``). Head widths (in the
    method classes) are multiples of the backbone's feature size F, so that ResNet-18 (F = 512)
    gets the widths of the usual CIFAR-10 runs: 2048 hidden units (BYOL's 4096), 128/256-d
    outputs (SimSiam, Barlow: 2048)."""

    title: str
    lr: float
    weight_decay: float
    temperature: float | None
    ema_momentum: float | None
    sync_bn: bool  # SyncBatchNorm under DDP, as the paper does
    fixed_predictor_lr: bool = False  # the predictor's learning rate is not decayed


# Sources. All methods share AdamW with peak lr 2e-3 and weight decay 1e-6 (10% warm-up, cosine
# decay): Adam-family optimizers suit the short, small-batch runs here better than the papers'
# SGD/LARS (measured on digits: SGD at lr 0.06 x batch/256 learns slower in 200 steps).
# Temperatures: SimCLR 0.2 and MoCo v2 0.2 (MoCo v2 paper, Chen et al. 2020, section 3);
# SwAV 0.1 (the paper); DINO's student 0.1 (main_dino.py). EMA momenta: the papers' 0.996 (BYOL,
# DINO) and 0.999 (MoCo) assume hundreds of epochs; short runs use solo-learn's CIFAR values
# (BYOL base_tau 0.99 -> 1, MoCo 0.99), DINO keeps its 0.996 -> 1. SimSiam: the predictor's
# learning rate is fixed (not decayed), as the paper's section 4.4 and its main_simsiam.py
# (--fix-pred-lr) do.
METHOD_SPECS: dict[MethodName, MethodSpec] = {
    "simclr": MethodSpec("SimCLR", 2e-3, 1e-6, 0.2, None, True),
    "moco": MethodSpec("MoCo v2", 2e-3, 1e-6, 0.2, 0.99, False),
    "byol": MethodSpec("BYOL", 2e-3, 1e-6, None, 0.99, True),
    "simsiam": MethodSpec("SimSiam", 2e-3, 1e-6, None, None, False, fixed_predictor_lr=True),
    "swav": MethodSpec("SwAV", 2e-3, 1e-6, 0.1, None, True),
    "barlow-twins": MethodSpec("Barlow Twins", 2e-3, 1e-6, None, None, True),
    "dino": MethodSpec("DINO", 2e-3, 1e-6, 0.1, 0.996, False),
    # DINO for short runs: Sinkhorn-Knopp teacher targets (dinov2's train.centering option),
    # BatchNorm in the head (main_dino.py's --use_bn_in_head, its ResNet-50 setting), the
    # student at 0.2 and the teacher's EMA from 0.99 (the short-run value of BYOL and MoCo
    # here). Measured on digits: the only setting of those tried that leaves the uniform head
    # (issue 23; benchmarks/results/train_digits.md lists the others).
    "dino-sinkhorn": MethodSpec("DINO + Sinkhorn", 2e-3, 1e-6, 0.2, 0.99, False),
    "vicreg": MethodSpec("VICReg", 2e-3, 1e-6, None, None, True),
    # the ceiling: the same encoder, augmentations (one view) and budget, trained on the labels
    "supervised": MethodSpec("supervised (ceiling)", 2e-3, 1e-6, None, None, True),
}


@dataclass(frozen=True)
class Resolved:
    """The config of one method with every ``None`` filled in."""

    method: MethodName
    spec: MethodSpec
    preset: DataPreset
    backbone: BackboneName
    width: int
    stem_stride: int
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
        stem_stride=cfg.stem_stride or preset.stem_stride,
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
    """The command line, built from the fields of :class:`Config` (``--data-dir`` for data_dir).
    ``--help`` shows each default as it resolves, per dataset or per method where they differ."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} (default: {_default_text(f)})"
        if hints[f.name] is bool:
            action = argparse.BooleanOptionalAction
            parser.add_argument(flag, action=action, default=f.default, help=help_text)
        else:
            options = _argument_options(hints[f.name])
            parser.add_argument(flag, default=f.default, help=help_text, **options)
    return Config(**vars(parser.parse_args(argv)))


def _default_text(f: dataclasses.Field[Any]) -> str:
    """The default of a Config field as a user reads it: the value, or the per-dataset /
    per-method values it resolves to (grouped when several share a value)."""
    source = f.metadata.get("default")
    values: dict[str, Any]
    if source == "preset":
        values = {name: getattr(preset, f.name) for name, preset in PRESETS.items()}
    elif source == "method":
        values = {name: getattr(spec, f.name) for name, spec in METHOD_SPECS.items()}
        values = {name: value for name, value in values.items() if value is not None}
    elif source == "data":
        return f"none; fashion-mnist: {FASHION_MNIST_DIR}"
    elif source is not None:
        return str(source)
    else:
        if f.default is None or isinstance(f.default, bool):
            return {None: "none", False: "off", True: "on"}[f.default]
        return str(f.default)
    groups: dict[str, list[str]] = {}
    for name, value in values.items():
        groups.setdefault(str(value), []).append(name)
    if len(groups) == 1 and len(values) == len(METHOD_SPECS):
        return f"{next(iter(groups))} for every method"
    return "; ".join(f"{', '.join(names)}: {value}" for value, names in groups.items())


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
        if method in ("swav", "dino", "dino-sinkhorn") and r.small_crops:
            sizes, counts = [size, small], [2, r.small_crops]
            scales = [scale, preset.small_crop_scale]
        jitter = Augmentation(jitter=(0.4, 0.4, 0.0, 0.0), jitter_prob=0.8, mean=m, std=s)
        multicrop = MultiCrop(
            sizes, counts, scales, augmentations=jitter, flip_prob=0.5 if preset.flip else 0.0
        )
    elif method in ("simclr", "supervised"):
        multicrop = simclr_transform(size, scale=scale, strength=0.5, blur_prob=0.0, mean=m, std=s)
    elif method in ("moco", "simsiam"):
        multicrop = simclr_transform(size, scale=scale, strength=0.5, blur_prob=0.5, mean=m, std=s)
    elif method in ("byol", "barlow-twins", "vicreg"):  # VICReg uses BYOL's augmentations
        multicrop = byol_transform(size, scale=scale, mean=m, std=s)
    elif method in ("dino", "dino-sinkhorn"):
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
    global average pooling. ``out_dim`` is the feature size the kNN probe sees. A
    ``stem_stride`` of 2 halves the resolution of every stage (a quarter of the cost)."""

    def __init__(
        self, in_channels: int, width: int, blocks: Sequence[int], *, stem_stride: int = 1
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stem_stride, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
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
    """Base class. ``forward(views, labels)`` returns the loss of a batch (only the supervised
    ceiling reads the labels); ``after_step()`` runs after the
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

    def forward(self, views: list[Tensor], labels: Tensor) -> Tensor:
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

    def forward(self, views: list[Tensor], labels: Tensor) -> Tensor:
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

    def forward(self, views: list[Tensor], labels: Tensor) -> Tensor:
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

    def forward(self, views: list[Tensor], labels: Tensor) -> Tensor:
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

    def forward(self, views: list[Tensor], labels: Tensor) -> Tensor:
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

    def forward(self, views: list[Tensor], labels: Tensor) -> Tensor:
        z_a, z_b = per_view(self.online, views[:2])
        return SF.barlow_twins_loss(z_a, z_b, lambd=self.lambd, gather_distributed=self.gather)


class DINO(Method):
    """DINO (Caron et al. 2021): every student crop predicts the centered, sharpened output of
    the EMA teacher on the other global crops. The head is DINO's (L2-normalized bottleneck,
    weight-normalized last layer, frozen for the first ~2% of steps, as the paper's first
    epoch); the teacher's momentum follows a cosine from 0.996 to 1, its temperature warms up
    linearly from 0.04 to 0.07 over the first 30% of steps (the paper's ViT-S setting), and
    the center is updated explicitly after each loss. K is small for small data. With
    ``sinkhorn`` (``--method dino-sinkhorn``) the teacher's targets come from Sinkhorn-Knopp
    instead of the center (no state) and the head has BatchNorm."""

    def __init__(
        self, backbone: ResNet, r: Resolved, distributed: bool, *, sinkhorn: bool = False
    ) -> None:
        super().__init__()
        f = backbone.out_dim
        k = DINO_SMALL_OUTPUTS if r.image_size < 32 else 65_536  # small images: small K
        head = sslosses.DINOHead(
            f,
            k,
            hidden_dim=8 * f,
            bottleneck_dim=DINO_BOTTLENECK,
            use_bn=sinkhorn,
            freeze_steps=max(1, r.steps // 50),
        )
        self.online = Encoder(backbone, head)
        self.target = sslosses.EMA(
            self.online, momentum=r.ema_momentum, total_steps=r.steps, buffers="keep"
        )
        # Sinkhorn-Knopp targets need no center: no state to keep or checkpoint
        self.centering = (
            None
            if sinkhorn
            else sslosses.DINOCenter(k, momentum=0.9, gather_distributed=distributed)
        )
        self.criterion = sslosses.DINOLoss(
            student_temperature=r.temperature,
            centering="sinkhorn" if sinkhorn else "center",
            gather_distributed=distributed,
        )
        self.warmup_steps = max(1, (3 * r.steps) // 10)

    def teacher_temperature(self) -> float:
        # the teacher's step count is saved in the checkpoint, so a resumed run continues here
        start, end = DINO_TEACHER_TEMPERATURES
        return sslosses.linear_warmup_schedule(self.target.step, self.warmup_steps, start, end)

    def forward(self, views: list[Tensor], labels: Tensor) -> Tensor:
        student = forward_multicrop(self.online, views)  # one pass per crop size
        with torch.no_grad():
            teacher = forward_multicrop(self.target.module, views[:2])
        loss: Tensor = self.criterion(
            student,
            teacher,
            center=None if self.centering is None else self.centering.center,
            teacher_temperature=self.teacher_temperature(),
        )
        if self.centering is not None:
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

    def forward(self, views: list[Tensor], labels: Tensor) -> Tensor:
        z_a, z_b = per_view(self.online, views[:2])
        return SF.vicreg_loss(z_a, z_b, gather_distributed=self.gather)  # 25 / 25 / 1


class Supervised(Method):
    """The ceiling: the same backbone trained with cross-entropy on the labels, on one
    augmented view per image (the first of the pair the other methods get), same budget."""

    def __init__(self, backbone: ResNet, n_classes: int) -> None:
        super().__init__()
        self.online = Encoder(backbone, nn.Linear(backbone.out_dim, n_classes))

    def forward(self, views: list[Tensor], labels: Tensor) -> Tensor:
        return F.cross_entropy(self.online(views[0]).float(), labels)


def build_method(cfg: Config, r: Resolved, data: Data, distributed: bool) -> Method:
    """Backbone first (so every method starts from the same weights for a seed), then heads."""
    backbone = ResNet(data.train_x.shape[1], r.width, BLOCKS[r.backbone], stem_stride=r.stem_stride)
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
    if r.method in ("dino", "dino-sinkhorn"):
        return DINO(backbone, r, distributed, sinkhorn=r.method == "dino-sinkhorn")
    if r.method == "vicreg":
        return VICReg(backbone, r, distributed)
    if r.method == "supervised":
        return Supervised(backbone, data.n_classes)
    return BarlowTwins(backbone, r, distributed, cfg.barlow_lambda)


# ------------------------------------------------------------------------------------------------
# 6. Evaluation: kNN (k = 200 and 20) and a linear probe on frozen features (train_probes.py)
# ------------------------------------------------------------------------------------------------


class Evaluator:
    """Probes a frozen encoder: the train split is the kNN memory bank and the linear probe's
    fitting set, the test split the queries. Images are normalized with the train split's
    channel statistics (the same normalization the training views get)."""

    def __init__(self, data: Data, temperature: float, device: torch.device) -> None:
        self.data, self.temperature, self.device = data, temperature, device
        sample = to_float(data.train_x[:10_000], data)
        self.mean = sample.mean(dim=(0, 2, 3)).view(1, -1, 1, 1).to(device)
        self.std = sample.std(dim=(0, 2, 3)).view(1, -1, 1, 1).to(device)

    def prepare(self, images: Tensor) -> Tensor:
        return (to_float(images, self.data) - self.mean) / self.std

    def evaluate(self, encoder: Callable[[Tensor], Tensor], *, linear: bool) -> dict[str, float]:
        """``{"knn200": %, "knn20": %}``, plus ``"linear"`` (and its chosen ``"linear_l2"``)."""
        d = self.data
        features = functools.partial(
            train_probes.extract_features, encoder, prepare=self.prepare, device=self.device
        )
        bank, queries = features(d.train_x), features(d.test_x)
        knn = train_probes.knn_accuracy(
            bank, d.train_y, queries, d.test_y, ks=KNN_KS, temperature=self.temperature,
            n_classes=d.n_classes,
        )  # fmt: skip
        out = {f"knn{k}": acc for k, acc in knn.items()}
        if linear:
            probe = train_probes.linear_probe(
                bank, d.train_y, queries, d.test_y, n_classes=d.n_classes
            )
            out |= {"linear": probe.top1, "linear_l2": probe.l2}
        return out

    def evaluate_backbone(self, backbone: nn.Module, *, linear: bool) -> dict[str, float]:
        was_training = backbone.training
        backbone.eval()
        try:
            return self.evaluate(backbone, linear=linear)
        finally:
            backbone.train(was_training)


def read_baselines(out: Path) -> dict[str, dict[str, float]]:
    """The baselines computed so far for ``<out>`` (``<out>/baselines.json``; empty if none)."""
    path = out / "baselines.json"
    known: dict[str, dict[str, float]] = json.loads(path.read_text()) if path.is_file() else {}
    return known


def cached_baseline(
    out: Path, key: str, compute: Callable[[], dict[str, float]], *, write: bool
) -> dict[str, float]:
    """A baseline's probe results, computed once per ``<out>`` (``baselines.json``): runs of
    several methods (also in parallel processes) share the raw-pixel and untrained numbers."""
    known = read_baselines(out)
    if key not in known:
        value = compute()
        known = read_baselines(out)  # other processes may have added theirs meanwhile
        known[key] = value
        if write:
            out.mkdir(parents=True, exist_ok=True)
            path = out / "baselines.json"
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, path)
    result: dict[str, float] = known[key]
    return result


# ------------------------------------------------------------------------------------------------
# 7. Runtime: device, DDP, resumable checkpoints (RNG helpers, autocast: train_state.py)
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


def config_fingerprint(cfg: Config) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RUNTIME_ONLY}


def check_resumable(path: Path, saved: dict[str, Any], cfg: Config) -> None:
    """Refuse a checkpoint written with other settings (those in ``RUNTIME_ONLY`` aside)."""
    now = config_fingerprint(cfg)
    diff = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
    if diff:
        changes = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"{path} was written with other settings ({changes}); pass another --out "
            "or --no-resume to start over"
        )


# ------------------------------------------------------------------------------------------------
# 8. Training
# ------------------------------------------------------------------------------------------------


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: training stops (like DINO) instead of going on."""


@dataclass
class MethodResult:
    method: MethodName
    title: str
    seed: int
    steps: int
    final_loss: float
    final: dict[str, float]  # probes of the trained backbone: knn200, knn20, linear
    untrained: dict[str, float]  # the same probes at initialization (same seed)
    headline_k: int  # the preset's kNN column
    seconds: float  # wall-clock training time, evaluations included
    cpu_seconds: float  # CPU time of the same (all threads of this process)
    history: list[dict[str, Any]]  # the JSON lines, one per epoch
    curve: list[tuple[int, float]]  # (step, mean loss) about 100 times per run, for the plot
    finished: bool
    # Python, torch (version and build), NumPy, scikit-learn: the numbers depend on them
    software: dict[str, str] = field(default_factory=dict)

    @property
    def knn_top1(self) -> float:
        return self.final.get(f"knn{self.headline_k}", float("nan"))

    @property
    def baseline_top1(self) -> float:
        return self.untrained[f"knn{self.headline_k}"]


@dataclass
class Progress:
    """Everything the loop accumulates; saved in the checkpoint with the model."""

    step: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch_loss: list[float] = field(default_factory=lambda: [0.0, 0])  # running sum, count
    curve: list[tuple[int, float]] = field(default_factory=list)
    window: list[float] = field(default_factory=lambda: [0.0, 0])  # for the next curve point


def lr_at(step: int, r: Resolved) -> float:
    """Linear warm-up to ``r.lr``, then cosine decay to zero."""
    if step < r.warmup_steps:
        return r.lr * (step + 1) / r.warmup_steps
    progress = (step - r.warmup_steps) / max(1, r.steps - r.warmup_steps)
    return r.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: Method, r: Resolved) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and BatchNorm parameters (1-D tensors). With
    ``fixed_predictor_lr`` (SimSiam) the predictor's groups keep the peak learning rate."""
    fixed = set()
    if r.spec.fixed_predictor_lr:
        fixed = {id(p) for p in typing.cast(nn.Module, model.predictor).parameters()}
    groups = []
    for is_fixed in (False, True):
        params = [p for p in model.parameters() if p.requires_grad and (id(p) in fixed) == is_fixed]
        for decay in (True, False):
            chosen = [p for p in params if (p.ndim > 1) == decay]
            if chosen:
                wd = r.weight_decay if decay else 0.0
                groups.append({"params": chosen, "weight_decay": wd, "fixed_lr": is_fixed})
    return torch.optim.AdamW(groups, lr=r.lr)


def set_lr(optimizer: torch.optim.Optimizer, step: int, r: Resolved) -> float:
    lr = lr_at(step, r)
    for group in optimizer.param_groups:
        group["lr"] = r.lr if group["fixed_lr"] else lr
    return lr


def run_name(method: MethodName, seed: int) -> str:
    return method if seed == 0 else f"{method}-seed{seed}"


def untrained_key(r: Resolved, cfg: Config) -> str:
    stem = "" if r.stem_stride == 1 else f"-stem{r.stem_stride}"
    return f"untrained/{cfg.data}/{r.backbone}-w{r.width}{stem}-{r.image_size}px-seed{cfg.seed}"


def raw_pixels_key(cfg: Config, image_size: int) -> str:
    return f"raw-pixels/{cfg.data}/{image_size}px"


def train_method(
    method: MethodName, cfg: Config, data: Data, rt: Runtime, evaluator: Evaluator
) -> MethodResult:
    """Train one method (resuming if a checkpoint exists) and return its results."""
    supervised = method == "supervised"
    images = data.train_x if supervised else data.ssl_x
    r = resolve(cfg, method, len(images))
    if r.batch_size % rt.world:
        raise ValueError(f"--batch-size {r.batch_size} must be divisible by {rt.world} ranks")
    local_batch = r.batch_size // rt.world
    sampler: DistributedSampler[int] = DistributedSampler(
        typing.cast(Any, range(len(images))),
        num_replicas=rt.world,
        rank=rt.rank,
        shuffle=True,
        seed=cfg.seed,
        drop_last=True,
    )
    steps_per_epoch = len(sampler) // local_batch
    if steps_per_epoch == 0:
        raise ValueError(f"--batch-size {r.batch_size} exceeds the {len(images)} training images")

    out_dir = Path(cfg.out) / run_name(method, cfg.seed)
    ckpt_path, metrics_path = out_dir / "checkpoint.pt", out_dir / "metrics.jsonl"
    if rt.main:
        out_dir.mkdir(parents=True, exist_ok=True)

    # Model, untrained baseline, optimizer: identical for a seed whether or not we resume.
    seed_everything(cfg.seed)
    model = build_method(cfg, r, data, rt.distributed).to(rt.device)
    untrained = cached_baseline(
        Path(cfg.out),
        untrained_key(r, cfg),
        lambda: evaluator.evaluate_backbone(model.backbone, linear=True),
        write=rt.main,
    )
    if rt.distributed and r.spec.sync_bn:
        if rt.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[no-untyped-call]
        elif rt.main:
            print(
                f"[{method}] SyncBatchNorm needs CUDA: BatchNorm stays per process", file=sys.stderr
            )
    optimizer = make_optimizer(model, r)
    augment = build_augment(r, data, evaluator.mean, evaluator.std)
    generator = torch.Generator()  # on the CPU: the same crops on every device
    generator.manual_seed(cfg.seed * 1000 + rt.rank)

    state = Progress()
    if cfg.resume and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path, cfg, rt, model, optimizer, generator, method)
    if rt.main:  # the log mirrors the checkpoint: drop lines written after it
        metrics_path.write_text("".join(json.dumps(h) + "\n" for h in state.history))

    train_model = wrap_model(model, cfg, rt)
    images = images.to(rt.device)
    labels = (data.train_y if supervised else torch.full((len(images),), -1)).to(rt.device)
    curve_every = max(1, r.steps // 100)
    clock = (time.perf_counter(), time.process_time())
    steps_this_run = 0
    model.train()
    while state.step < r.steps:
        epoch = state.step // steps_per_epoch
        sampler.set_epoch(epoch)
        order = torch.tensor(list(iter(sampler)), device=rt.device)
        batches = order[: steps_per_epoch * local_batch].view(steps_per_epoch, local_batch)
        first = state.step - epoch * steps_per_epoch
        last = min(steps_per_epoch, first + (r.steps - state.step))
        bar = progress(range(first, last), f"{method} epoch {epoch}", cfg, rt)
        for i in bar:
            batch = batches[i]
            value = train_step(
                train_model, model, optimizer, augment(images[batch], generator), labels[batch],
                state.step, r, method,
            )  # fmt: skip
            state.step += 1
            steps_this_run += 1
            state.epoch_loss = [state.epoch_loss[0] + value, state.epoch_loss[1] + 1]
            state.window = [state.window[0] + value, state.window[1] + 1]
            if state.step % curve_every == 0 or state.step == r.steps:
                state.curve.append((state.step, state.window[0] / state.window[1]))
                state.window = [0.0, 0]
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{value:.4f}")
            if cfg.stop_after is not None and steps_this_run >= cfg.stop_after:
                break
        epoch_done = state.step % steps_per_epoch == 0 or state.step == r.steps
        stopping = cfg.stop_after is not None and steps_this_run >= cfg.stop_after
        if epoch_done:
            record = epoch_record(method, epoch, state, r, model, evaluator)
            clock = tick(state, clock)
            record |= {
                "seconds": round(state.seconds, 2),
                "cpu_seconds": round(state.cpu_seconds, 2),
            }
            state.history.append(record)
            state.epoch_loss = [0.0, 0]
            if rt.main:
                line = json.dumps(record)
                print(line, flush=True)
                with open(metrics_path, "a") as f:
                    f.write(line + "\n")
        if epoch_done or stopping:
            clock = tick(state, clock)
            save_checkpoint(ckpt_path, cfg, rt, model, optimizer, generator, state)
        if stopping:
            break

    final = state.history[-1] if state.history else {}
    result = MethodResult(
        method=method,
        title=r.spec.title,
        seed=cfg.seed,
        steps=state.step,
        final_loss=final.get("loss", float("nan")),
        final={k: v for k, v in final.items() if k.startswith(("knn", "linear"))},
        untrained=untrained,
        headline_k=r.preset.knn_k,
        seconds=state.seconds,
        cpu_seconds=state.cpu_seconds,
        history=state.history,
        curve=state.curve,
        finished=state.step == r.steps,
        software=train_reference.software_versions(),
    )
    if rt.main and result.finished:
        (out_dir / "result.json").write_text(json.dumps(dataclasses.asdict(result)) + "\n")
    return result


def train_step(
    train_model: nn.Module,
    model: Method,
    optimizer: torch.optim.Optimizer,
    views: list[Tensor],
    labels: Tensor,
    step: int,
    r: Resolved,
    method: str,
) -> float:
    """One optimizer step; returns the loss (a non-finite loss stops the run)."""
    lr = set_lr(optimizer, step, r)
    with autocast(next(model.parameters()).device):
        loss = train_model(views, labels)
    value = float(loss.item())
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"{method}: non-finite loss {value} at step {step} (lr {lr:.3g}); stopping. "
            "Lower --lr or check the data."
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    model.before_optimizer_step(step)
    optimizer.step()
    model.after_step(step)
    return value


def epoch_record(
    method: str, epoch: int, state: Progress, r: Resolved, model: Method, evaluator: Evaluator
) -> dict[str, Any]:
    """The JSON line of a finished epoch: mean loss, learning rate, the method's own values,
    and the probes when an evaluation is due (the linear probe only after the last step)."""
    record: dict[str, Any] = {
        "method": method,
        "epoch": epoch,
        "step": state.step,
        "loss": state.epoch_loss[0] / max(1, state.epoch_loss[1]),
        "lr": lr_at(state.step - 1, r),
        **model.log_values(),
    }
    steps_before = state.step - int(state.epoch_loss[1])
    last = state.step == r.steps
    if last or state.step // r.eval_every > steps_before // r.eval_every:
        record |= evaluator.evaluate_backbone(model.backbone, linear=last)
    return record


def tick(state: Progress, clock: tuple[float, float]) -> tuple[float, float]:
    """Add the wall-clock and CPU time since ``clock`` to ``state``; returns the new clock."""
    now = (time.perf_counter(), time.process_time())
    state.seconds += now[0] - clock[0]
    state.cpu_seconds += now[1] - clock[1]
    return now


def wrap_model(model: Method, cfg: Config, rt: Runtime) -> nn.Module:
    """Compile the backbone if asked; wrap in DDP under torchrun."""
    if cfg.compile:
        model.backbone.compile()
    if not rt.distributed:
        return model
    # Buffers stay per rank after the start (SwAV's queues are per rank, as in its code).
    ddp = nn.parallel.DistributedDataParallel
    no_sync: dict[str, Any] = (
        {"forward_sync_buffers": False}
        if "forward_sync_buffers" in inspect.signature(ddp).parameters
        else {"broadcast_buffers": False}  # PyTorch before forward_sync_buffers
    )
    device_ids = [rt.device.index] if rt.device.type == "cuda" else None
    return ddp(model, device_ids=device_ids, **no_sync)


def save_checkpoint(
    path: Path,
    cfg: Config,
    rt: Runtime,
    model: Method,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    state: Progress,
) -> None:
    """Tensors, numbers and strings only (RNG states as tensors), so that resume can load it
    with ``weights_only=True``: nothing is unpickled beyond those."""
    states = [rng_state(generator)]
    if rt.distributed:
        states = [None] * rt.world  # type: ignore[list-item]
        dist.all_gather_object(states, rng_state(generator))
    if rt.main:
        save_atomic(
            {
                "config": config_fingerprint(cfg),
                **dataclasses.asdict(state),
                "rng": states,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
            },
            path,
        )


def load_checkpoint(
    path: Path,
    cfg: Config,
    rt: Runtime,
    model: Method,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    method: str,
) -> Progress:
    ckpt = torch.load(path, map_location=rt.device, weights_only=True)
    check_resumable(path, ckpt["config"], cfg)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    state = Progress(**{f.name: ckpt[f.name] for f in dataclasses.fields(Progress)})
    rng = ckpt["rng"]
    if len(rng) == rt.world:
        set_rng_state(rng[rt.rank], generator)
    elif rt.main:
        print(
            f"[{method}] checkpoint from {len(rng)} ranks, now {rt.world}: the RNGs start "
            "afresh, so the run goes on but not as it would have",
            file=sys.stderr,
        )
    if rt.main:
        print(f"[{method}] resumed from {path} at step {state.step}", file=sys.stderr)
    return state


def progress(steps: range, desc: str, cfg: Config, rt: Runtime) -> Any:
    """A tqdm bar on an interactive terminal (rank 0, without --quiet); else the plain range."""
    if cfg.quiet or not rt.main or not sys.stderr.isatty():
        return steps
    from tqdm import tqdm  # type: ignore[import-untyped]

    return tqdm(steps, desc=desc, leave=False, dynamic_ncols=True)


# ------------------------------------------------------------------------------------------------
# 9. Report: Markdown table, JSON and PNG plot of every finished run in --out
# ------------------------------------------------------------------------------------------------

PROBES = (("knn200", "kNN k=200"), ("knn20", "kNN k=20"), ("linear", "linear"))


def load_results(out: Path) -> list[MethodResult]:
    """The finished runs in ``out``, in the order of ``ALL_RUNS`` then seed."""
    results = []
    for path in out.glob("*/result.json"):
        entry = json.loads(path.read_text())
        entry["curve"] = [tuple(point) for point in entry["curve"]]
        results.append(MethodResult(**entry))
    return sorted(results, key=lambda res: (ALL_RUNS.index(res.method), res.seed))


def _cells(values: dict[str, float]) -> str:
    return " | ".join(f"{values[key]:.2f}" if key in values else "-" for key, _ in PROBES)


def _gains(values: dict[str, float], reference: dict[str, float]) -> str:
    return " / ".join(
        f"{values[key] - reference[key]:+.2f}" if key in values and key in reference else "-"
        for key, _ in PROBES
    )


def markdown_table(results: Sequence[MethodResult], raw: dict[str, float], cfg: Config) -> str:
    """One row per run, the raw-pixel and untrained rows first; then, for methods run with
    several seeds, the mean and standard deviation over the seeds."""
    probes = " | ".join(title for _, title in PROBES)
    short = " / ".join(title for _, title in PROBES)
    rows = [
        f"| run | seed | steps | {probes} | vs raw pixels ({short}) | vs untrained ({short}) "
        "| final loss | CPU s |",
        "|---|---:|---:|---:|---:|---:|---|---|---:|---:|",
        f"| raw pixels | - | - | {_cells(raw)} | - | - | - | - |",
    ]
    untrained = {res.seed: res.untrained for res in results}
    for seed, values in sorted(untrained.items()):
        rows.append(f"| untrained encoder | {seed} | 0 | {_cells(values)} | - | - | - | - |")
    for res in results:
        rows.append(
            f"| {res.title} | {res.seed} | {res.steps} | {_cells(res.final)} | "
            f"{_gains(res.final, raw)} | {_gains(res.final, res.untrained)} | "
            f"{res.final_loss:.4f} | {res.cpu_seconds:.0f} |"
        )
    by_method: dict[str, list[MethodResult]] = {}
    for res in results:
        by_method.setdefault(res.title, []).append(res)
    spread = {title: runs for title, runs in by_method.items() if len(runs) > 1}
    if spread:
        rows += ["", f"| run | seeds | {probes} |", "|---|---:|---:|---:|---:|"]
        for title, runs in spread.items():
            cells = []
            for key, _ in PROBES:
                accs = [run.final[key] for run in runs if key in run.final]
                sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
                cells.append(f"{statistics.mean(accs):.2f} ± {sd:.2f}" if accs else "-")
            rows.append(f"| {title} | {len(runs)} | {' | '.join(cells)} |")
    rows += ["", f"Data: {cfg.data}. Gains are percentage points (same probe, test split)."]
    rows += [f"Software: {train_reference.describe(s)}." for s in _software(results)]
    return "\n".join(rows) + "\n"


def _software(results: Sequence[MethodResult]) -> list[dict[str, str]]:
    """The distinct software the runs were trained with (one entry when they agree)."""
    distinct: list[dict[str, str]] = []
    for res in results:
        if res.software not in distinct:
            distinct.append(res.software)
    return distinct


def plot(results: Sequence[MethodResult], raw: dict[str, float], k: int, path: Path) -> None:
    """kNN accuracy against step for every run, with the raw-pixel and untrained levels, and
    one loss panel per method (their scales differ)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(results))
    rows = math.ceil(len(results) / cols)
    fig = plt.figure(figsize=(4 * cols, 2.4 * rows + 3.6))
    grid = fig.add_gridspec(rows + 1, cols, height_ratios=[1.0] * rows + [1.6])
    ax_acc = fig.add_subplot(grid[rows, :])
    key = f"knn{k}"
    for i, res in enumerate(results):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        ax.plot([s for s, _ in res.curve], [loss for _, loss in res.curve])
        ax.set_title(f"{res.title} (seed {res.seed}): training loss", fontsize=9)
        ax.tick_params(labelsize=7)
        evals = [h for h in res.history if key in h]
        ax_acc.plot(
            [0] + [h["step"] for h in evals],
            [res.untrained[key]] + [h[key] for h in evals],
            marker="o",
            ms=3,
            label=f"{res.title} (seed {res.seed})",
        )
    if results:
        ax_acc.axhline(results[0].untrained[key], color="gray", ls=":", lw=1.2, label="untrained")
    if key in raw:
        ax_acc.axhline(raw[key], color="black", ls="--", lw=1.2, label="raw pixels")
    ax_acc.set(xlabel="step", ylabel=f"kNN k={k} top-1 (%)", title="kNN accuracy on the test split")
    ax_acc.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(cfg: Config, image_size: int) -> list[MethodResult]:
    """results.md / .json / .png of every finished run in ``cfg.out``."""
    out = Path(cfg.out)
    results = load_results(out)
    raw = read_baselines(out).get(raw_pixels_key(cfg, image_size), {})
    table = markdown_table(results, raw, cfg)
    (out / "results.md").write_text(table)
    software = _software(results)
    summary = {
        "data": cfg.data,
        "raw_pixels": raw,
        # the runs' software when they agree (else see each run's own)
        "software": software[0] if len(software) == 1 else {},
        "runs": [dataclasses.asdict(r) for r in results],
    }
    (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    if results:
        plot(results, raw, PRESETS[cfg.data].knn_k, out / "results.png")
    print(table, flush=True)
    if cfg.data == "digits" and cfg == parse_args(["--out", cfg.out]):  # the `make train` run
        print(train_reference.compare_with_committed(summary), flush=True)
    return results


# ------------------------------------------------------------------------------------------------
# 10. Main
# ------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> list[MethodResult]:
    """Run the command line ``argv``; returns one :class:`MethodResult` per method trained."""
    cfg = parse_args(argv)
    image_size = cfg.image_size or PRESETS[cfg.data].image_size
    if cfg.report:
        return write_report(cfg, image_size)
    rt = setup_runtime(cfg)
    data = load_data(cfg.data, cfg.data_dir, unlabeled=cfg.unlabeled).resized(image_size)
    evaluator = Evaluator(data, cfg.knn_temperature, rt.device)
    raw = cached_baseline(
        Path(cfg.out),
        raw_pixels_key(cfg, image_size),
        lambda: evaluator.evaluate(lambda x: x, linear=True),
        write=rt.main,
    )
    if rt.main:
        header = {
            "data": data.name,
            "train": len(data.train_x),
            "test": len(data.test_x),
            "ssl_images": len(data.ssl_x),
            "device": str(rt.device),
            "world_size": rt.world,
            "raw_pixels": raw,
        }
        print(json.dumps(header), flush=True)
    methods = ALL_RUNS if cfg.method == "all" else (cfg.method,)
    results = []
    for method in methods:
        results.append(train_method(method, cfg, data, rt, evaluator))
        if not results[-1].finished:  # stopped by --stop-after
            break
    if rt.main and results[-1].finished:
        write_report(cfg, image_size)
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
