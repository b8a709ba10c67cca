"""The training loop: evaluation, runtime (device, DDP, checkpoints), training, and ``main``."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import os
import sys
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DistributedSampler

from benchmarks.train import probes, reference
from benchmarks.train.config import (
    ALL_RUNS,
    KNN_KS,
    LABEL_METHODS,
    PRESETS,
    RUNTIME_ONLY,
    Config,
    MethodName,
    Resolved,
    parse_args,
    resolve,
)
from benchmarks.train.data import Data, load_data
from benchmarks.train.methods import Method, build_method
from benchmarks.train.report import MethodResult, cached_baseline, raw_pixels_key, write_report
from benchmarks.train.state import autocast, rng_state, save_atomic, seed_everything, set_rng_state
from benchmarks.train.views import build_augment, to_float

# ------------------------------------------------------------------------------------------------
# 6. Evaluation: kNN (k = 200 and 20) and a linear probe on frozen features (probes.py)
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
            probes.extract_features, encoder, prepare=self.prepare, device=self.device
        )
        bank, queries = features(d.train_x), features(d.test_x)
        knn = probes.knn_accuracy(
            bank, d.train_y, queries, d.test_y, ks=KNN_KS, temperature=self.temperature,
            n_classes=d.n_classes,
        )  # fmt: skip
        out = {f"knn{k}": acc for k, acc in knn.items()}
        if linear:
            probe = probes.linear_probe(bank, d.train_y, queries, d.test_y, n_classes=d.n_classes)
            out |= {"linear": probe.top1, "linear_l2": probe.l2}
        return out

    def evaluate_backbone(self, backbone: nn.Module, *, linear: bool) -> dict[str, float]:
        was_training = backbone.training
        backbone.eval()
        try:
            return self.evaluate(backbone, linear=linear)
        finally:
            backbone.train(was_training)


# ------------------------------------------------------------------------------------------------
# 7. Runtime: device, DDP, resumable checkpoints (RNG helpers, autocast: state.py)
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


def train_method(
    method: MethodName, cfg: Config, data: Data, rt: Runtime, evaluator: Evaluator
) -> MethodResult:
    """Train one method (resuming if a checkpoint exists) and return its results."""
    reads_labels = method in LABEL_METHODS  # SupCon and the supervised ceiling
    images = data.train_x if reads_labels else data.ssl_x
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
    labels = (data.train_y if reads_labels else torch.full((len(images),), -1)).to(rt.device)
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
        software=reference.software_versions(),
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
