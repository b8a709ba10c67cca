"""The reference training's configuration: the command line, the per-data presets and the
per-method settings (with their sources), resolved into one :class:`Resolved` per run."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from benchmarks.train.data import FASHION_MNIST_DIR

SSLMethodName = Literal[
    "simclr", "moco", "byol", "simsiam", "swav", "barlow-twins", "dino", "dino-sinkhorn",
    "vicreg", "nnclr", "dcl", "align-uniform", "mmcr", "tico", "wmse", "lejepa", "dinov2",
]  # fmt: skip
LabelMethodName = Literal["supcon", "supervised"]  # trained on the labels

MethodName = SSLMethodName | LabelMethodName
METHODS: tuple[SSLMethodName, ...] = get_args(SSLMethodName)
LABEL_METHODS: tuple[LabelMethodName, ...] = get_args(LabelMethodName)
# ``--method all``: every self-supervised method, then the two that read the labels:
# supervised contrastive learning and the supervised ceiling (the same encoder, augmentations
# and budget, trained with cross-entropy)
ALL_RUNS: tuple[MethodName, ...] = (*METHODS, *LABEL_METHODS)
# the augmentation recipe of a method (benchmarks/train/views.py): each paper's on RGB data;
# "dino" and "swav" add small (multi-crop) views to the two large ones, on every data
Recipe = Literal["simclr", "mocov2", "byol", "dino", "swav"]
MULTICROP_RECIPES: frozenset[Recipe] = frozenset({"dino", "swav"})
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
            "help": "start of the EMA momentum schedule (MoCo, BYOL, DINO, TiCo)",
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
    # steps of the methods whose steps cost more than the others' (``steps`` for the rest)
    method_steps: Mapping[str, int] = field(default_factory=dict)
    # small crops of the multi-crop methods that learn better with fewer (``small_crops`` else)
    method_small_crops: Mapping[str, int] = field(default_factory=dict)


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
    # Native 28x28 images; ResNet-10 at width 32 with a stride-2 stem (256-d features; the
    # stages run at 14-7-4-2 pixels), 2 small crops for the multi-crop methods but SwAV. Steps
    # per method equalize the training's CPU time (measured per step on one core, SimCLR 0.68 s):
    # 450 for the methods at 0.6-0.75 s/step, fewer for the dearer ones, more for the DINO
    # family than equal time would give (each run stays under 20 CPU-minutes with its
    # evaluations).
    "fashion-mnist": DataPreset(
        backbone="resnet10",
        width=32,
        steps=450,
        batch_size=256,
        eval_every=234,  # kNN after the first epoch (234 steps) and at the end
        knn_k=200,
        image_size=28,
        small_crop_size=12,
        small_crops=2,
        crop_scale=(0.3, 1.0),
        small_crop_scale=(0.15, 0.4),
        flip=True,
        stem_stride=2,
        method_steps={
            "mmcr": 400,  # 0.78 s/step
            "moco": 350,  # 0.88-0.92 s/step: the momentum encoder's pass
            "byol": 350,
            # SwAV on its 2 large crops only (method_small_crops), cheaper per step: 600 steps
            # in 9.6-10.8 CPU-minutes with the evaluations (issue 26)
            "swav": 600,
            "lejepa": 300,  # 1.19 s/step: every crop through the head, 1024 SIGReg slices
            # 1.43-1.47 s/step (DINO's 2048-wide head on every crop): 250 steps would match
            # the others' CPU time, but DINO + Sinkhorn is still learning there (84.35 linear at
            # 250, 84.94 at 350: issue 26), so the family gets 350 (8-12 CPU-minutes)
            "dino": 350,
            "dino-sinkhorn": 350,
            "dinov2": 350,
        },
        # SwAV's linear probe: 83.28 at 500 steps with the 12-pixel crops, 85.04 at 450 without
        # them (train_fashion_mnist.md's retries); the other multi-crop methods keep theirs
        method_small_crops={"swav": 0},
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
    augmentation: Recipe  # the views it trains on (views.py)
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
    "simclr": MethodSpec("SimCLR", 2e-3, 1e-6, 0.2, None, True, augmentation="simclr"),
    "moco": MethodSpec("MoCo v2", 2e-3, 1e-6, 0.2, 0.99, False, augmentation="mocov2"),
    "byol": MethodSpec("BYOL", 2e-3, 1e-6, None, 0.99, True, augmentation="byol"),
    "simsiam": MethodSpec(
        "SimSiam", 2e-3, 1e-6, None, None, False, augmentation="mocov2", fixed_predictor_lr=True
    ),
    "swav": MethodSpec("SwAV", 2e-3, 1e-6, 0.1, None, True, augmentation="swav"),
    "barlow-twins": MethodSpec("Barlow Twins", 2e-3, 1e-6, None, None, True, augmentation="byol"),
    "dino": MethodSpec("DINO", 2e-3, 1e-6, 0.1, 0.996, False, augmentation="dino"),
    # DINO for short runs: Sinkhorn-Knopp teacher targets (dinov2's train.centering option),
    # BatchNorm in the head (main_dino.py's --use_bn_in_head, its ResNet-50 setting), the
    # student at 0.2 and the teacher's EMA from 0.99 (the short-run value of BYOL and MoCo
    # here). Measured on digits: the only setting of those tried that leaves the uniform head
    # (issue 23; benchmarks/results/train_digits.md lists the others).
    "dino-sinkhorn": MethodSpec(
        "DINO + Sinkhorn", 2e-3, 1e-6, 0.2, 0.99, False, augmentation="dino"
    ),
    "vicreg": MethodSpec("VICReg", 2e-3, 1e-6, None, None, True, augmentation="byol"),
    # NNCLR: the paper's temperature 0.1; the support set is a queue of past projections, as
    # long as MoCo's here (the paper: 98,304 on ImageNet).
    "nnclr": MethodSpec("NNCLR", 2e-3, 1e-6, 0.1, None, True, augmentation="simclr"),
    # DCL and alignment + uniformity: SimCLR's head, augmentations and temperature here.
    "dcl": MethodSpec("DCL", 2e-3, 1e-6, 0.2, None, True, augmentation="simclr"),
    "align-uniform": MethodSpec(
        "alignment + uniformity", 2e-3, 1e-6, None, None, True, augmentation="simclr"
    ),
    # MMCR and LeJEPA train on every crop (2 large + the preset's small ones, SwAV's recipe),
    # as their papers train on many views; TiCo (rho 8, beta 0.9: the paper) with a momentum
    # encoder from 0.99 (the short-run value of BYOL and MoCo here); W-MSE whitens sub-batches
    # of 128 (w >= 2 D for its 64-d output, the paper's CIFAR setting).
    "mmcr": MethodSpec("MMCR", 2e-3, 1e-6, None, None, True, augmentation="swav"),
    "tico": MethodSpec("TiCo", 2e-3, 1e-6, None, 0.99, True, augmentation="byol"),
    "wmse": MethodSpec("W-MSE", 2e-3, 1e-6, None, None, True, augmentation="byol"),
    "lejepa": MethodSpec("LeJEPA", 2e-3, 1e-6, None, None, True, augmentation="swav"),
    # DINOv2's recipe on a CNN: DINO + Sinkhorn's settings plus the KoLeo regularizer on the
    # student head's bottleneck of the large crops (weight and place: methods.DINO).
    "dinov2": MethodSpec(
        "DINOv2-style (Sinkhorn + KoLeo)", 2e-3, 1e-6, 0.2, 0.99, False, augmentation="dino"
    ),
    # SupCon (Khosla et al. 2020) on the labels: its temperature 0.1 (the paper's best)
    "supcon": MethodSpec("SupCon (labels)", 2e-3, 1e-6, 0.1, None, True, augmentation="simclr"),
    # the ceiling: the same encoder, augmentations (one view) and budget, trained on the labels
    "supervised": MethodSpec(
        "supervised (ceiling)", 2e-3, 1e-6, None, None, True, augmentation="simclr"
    ),
}

# methods that train on small (multi-crop) views besides the two large ones
MULTICROP_METHODS: frozenset[MethodName] = frozenset(
    method for method, spec in METHOD_SPECS.items() if spec.augmentation in MULTICROP_RECIPES
)


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
    steps = cfg.steps if cfg.steps is not None else preset.method_steps.get(method, preset.steps)
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
        small_crops=cfg.small_crops
        if cfg.small_crops is not None
        else preset.method_small_crops.get(method, preset.small_crops),
        eval_every=cfg.eval_every or preset.eval_every,
    )


def parse_args(argv: Sequence[str] | None) -> Config:
    """The command line, built from the fields of :class:`Config` (``--data-dir`` for data_dir).
    ``--help`` shows each default as it resolves, per dataset or per method where they differ."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.train",
        description="Reference training: every sslosses method on a real encoder, judged by kNN "
        "and linear probes.",
    )
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
        values = {}
        for data, preset in PRESETS.items():  # with the preset's per-method values in brackets
            per_method: Mapping[str, Any] = getattr(preset, f"method_{f.name}", {})
            shown = ", ".join(f"{m}: {v}" for m, v in per_method.items())
            values[data] = (
                f"{getattr(preset, f.name)} ({shown})" if shown else getattr(preset, f.name)
            )
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
