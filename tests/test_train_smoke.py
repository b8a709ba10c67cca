"""Smoke tests of the reference training script ``python -m benchmarks.train``.

The script is imported in-process (not run as a subprocess) and driven through ``main(argv)``:
three short methods on the bundled digits must beat their untrained encoder; an interrupted and
resumed run must end with the same weights as an uninterrupted one; a non-finite loss must stop
the run; and the dataset readers are checked on small synthetic files with a known layout.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import sslosses
import sslosses.functional as SF
from benchmarks.train import config, loop, report
from benchmarks.train import data as train_data
from benchmarks.train import methods as train_methods
from benchmarks.train import probes as train_probes
from benchmarks.train import state as train_state
from benchmarks.train import views as train_views
from sslosses.transforms import Augmentation, MultiCrop, forward_multicrop

# A small, fast setting: width-8 ResNet, 128-image batches (10 steps per epoch on digits).
TINY = ["--width", "8", "--batch-size", "128", "--eval-every", "10", "--quiet"]


# --- training learns --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["simclr", "byol", "vicreg", "supcon"])
def test_short_run_beats_untrained_encoder(method: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    steps = 40
    args = ["--method", method, "--steps", str(steps), "--batch-size", "128"]
    (result,) = loop.main([*args, "--eval-every", "20", "--out", str(out), "--quiet"])
    assert result.method == method
    assert result.steps == steps
    assert result.knn_top1 > result.baseline_top1 + 2.0, (result.knn_top1, result.baseline_top1)

    lines = [json.loads(line) for line in (out / method / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == steps // (1347 // 128)  # one line per epoch of 10 steps
    assert [line["step"] for line in lines][-1] == steps
    assert all(line["method"] == method and np.isfinite(line["loss"]) for line in lines)
    assert [line["step"] for line in lines if "knn20" in line] == [20, 40]
    assert [line["step"] for line in lines if "linear" in line] == [40]  # after the last step
    assert [step for step, _ in result.curve] == list(range(1, steps + 1))  # loss per step
    table = (out / "results.md").read_text()
    assert f"| {result.title} | 0 | {steps} |" in table
    assert "| raw pixels |" in table and "| untrained encoder | 0 |" in table
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- checkpoints and resume -------------------------------------------------------------------


def _final_state(out: Path, method: str) -> dict[str, object]:
    """Model weights, buffers and extra states, and the optimizer's state, of a checkpoint."""
    ckpt = torch.load(out / method / "checkpoint.pt", weights_only=True)
    state: dict[str, object] = dict(ckpt["model"])
    for index, entries in ckpt["optimizer"]["state"].items():
        for key, value in entries.items():
            state[f"optimizer.{index}.{key}"] = value
    return state


def _same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dtype == b.dtype and torch.equal(a, b)
    return a == b


@pytest.mark.parametrize(
    ("method", "stop_after", "extra"),
    [
        ("moco", 10, []),  # one epoch, then the second epoch after resuming
        ("swav", 7, ["--swav-queue", "256"]),  # interrupted mid-epoch, with SwAV's queue
        ("dino", 13, []),  # DINO's center, teacher step (temperature schedule), frozen layer
        ("dino-sinkhorn", 13, []),  # Sinkhorn-Knopp targets, BatchNorm in the head
        ("nnclr", 7, []),  # the support queue
        ("tico", 13, []),  # the running covariance, the momentum encoder
    ],
)
def test_resume_reproduces_an_uninterrupted_run(
    method: str, stop_after: int, extra: list[str], tmp_path: Path
) -> None:
    common = ["--method", method, "--steps", "20", *TINY, *extra]
    loop.main([*common, "--out", str(tmp_path / "straight")])
    (first,) = loop.main([*common, "--out", str(tmp_path / "resumed"),
                           "--stop-after", str(stop_after)])  # fmt: skip
    assert first.steps == stop_after
    (second,) = loop.main([*common, "--out", str(tmp_path / "resumed")])
    assert second.steps == 20

    straight = _final_state(tmp_path / "straight", method)
    resumed = _final_state(tmp_path / "resumed", method)
    assert straight.keys() == resumed.keys()
    different = [k for k in straight if not _same(straight[k], resumed[k])]
    assert different == []
    if method == "moco":
        assert straight["target._extra_state"] == {"step": 20}  # the EMA's update counter
        assert straight["queue._extra_state"]["count"] == 1347 // 2  # full queue, restored
    if method == "nnclr":
        assert straight["queue._extra_state"]["count"] == 1347 // 2  # full queue, restored
    if method == "tico":
        covariance = straight["covariance.covariance"]
        assert isinstance(covariance, torch.Tensor) and covariance.shape == (256, 256)
        # 20 EMA steps (beta 0.9, from zero) of the unit rows' second moment, trace 1 each
        assert float(torch.trace(covariance)) == pytest.approx(1 - 0.9**20, abs=1e-5)
        assert straight["target._extra_state"] == {"step": 20}  # the momentum encoder's
    if method == "dino":
        assert straight["target._extra_state"] == {"step": 20}  # drives the temperature
        center = straight["centering.center"]
        assert isinstance(center, torch.Tensor) and center.shape == (1024,)
        assert bool(center.abs().sum() > 0)  # updated every step, saved and restored
    history = [
        json.loads(line)
        for line in (tmp_path / "resumed" / method / "metrics.jsonl").read_text().splitlines()
    ]
    assert [h["step"] for h in history] == [10, 20]
    curves = [
        torch.load(tmp_path / run / method / "checkpoint.pt", weights_only=True)["curve"]
        for run in ("straight", "resumed")
    ]
    assert curves[0] == curves[1] and len(curves[0]) == 20


def test_resume_refuses_a_checkpoint_with_other_settings(tmp_path: Path) -> None:
    args = ["--method", "simsiam", "--steps", "2", *TINY, "--out", str(tmp_path)]
    loop.main(args)
    with pytest.raises(ValueError, match=r"width: 8 -> 12.*--no-resume"):
        loop.main([*args, "--width", "12"])


def test_finished_run_is_reported_without_training(tmp_path: Path) -> None:
    args = ["--method", "barlow-twins", "--steps", "3", *TINY, "--out", str(tmp_path)]
    (first,) = loop.main(args)
    mtime = (tmp_path / "barlow-twins" / "checkpoint.pt").stat().st_mtime_ns
    (again,) = loop.main(args)
    assert again.knn_top1 == first.knn_top1
    assert (tmp_path / "barlow-twins" / "checkpoint.pt").stat().st_mtime_ns == mtime


_UNPICKLED: list[str] = []


def _record_unpickling() -> str:
    _UNPICKLED.append("code ran")
    return "payload"


class _Payload:
    """An object whose unpickling calls a function: what a malicious checkpoint would do."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_record_unpickling, ())


def test_checkpoints_hold_only_weights_only_types_and_resume_refuses_others(
    tmp_path: Path,
) -> None:
    """Issue 10.16: resume used ``torch.load(weights_only=False)``, which runs the code a
    pickled object names. Checkpoints now hold tensors, numbers and strings only (the RNG
    states as tensors), and resume loads with ``weights_only=True``."""
    args = ["--method", "byol", "--steps", "3", *TINY, "--out", str(tmp_path)]
    loop.main([*args, "--stop-after", "2"])
    path = tmp_path / "byol" / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)  # raises on anything but the safe types
    rng = ckpt["rng"][0]
    assert all(isinstance(rng[k], torch.Tensor) for k in ("python", "numpy", "torch", "augment"))
    assert ckpt["step"] == 2 and ckpt["model"]["target._extra_state"] == {"step": 2}
    ckpt["note"] = _Payload()
    torch.save(ckpt, path)
    with pytest.raises(pickle.UnpicklingError, match=r"Weights only load failed"):
        loop.main(args)
    assert _UNPICKLED == []  # the payload's code never ran


def test_rng_state_round_trips_through_a_weights_only_load() -> None:
    generator = torch.Generator().manual_seed(5)
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0.0, 1.0)  # leaves a cached Gaussian in both Python's and NumPy's state
    np.random.randn()
    buf = io.BytesIO()
    torch.save(train_state.rng_state(generator), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)

    def draws() -> tuple[float, ...]:
        return (
            random.random(),
            random.gauss(0.0, 1.0),
            float(np.random.rand()),
            float(np.random.randn()),
            torch.rand(()).item(),
            torch.rand((), generator=generator).item(),
        )

    expected = draws()
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    generator.manual_seed(9)
    train_state.set_rng_state(state, generator)
    assert draws() == expected


# --- non-finite loss --------------------------------------------------------------------------


def test_non_finite_loss_stops_the_run(tmp_path: Path) -> None:
    args = ["--method", "simclr", "--steps", "20", *TINY, "--lr", "1e30", "--out", str(tmp_path)]
    with pytest.raises(
        loop.NonFiniteLossError, match=r"simclr: non-finite loss (nan|inf) at step \d+"
    ):
        loop.main(args)


def test_cli_exits_non_zero_on_non_finite_loss(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--method", "byol", "--steps", "20", *TINY, "--lr", "1e30", "--out", str(tmp_path)]
    assert loop.cli(args) == 1
    assert "error: byol: non-finite loss" in capsys.readouterr().err


# --- configuration ----------------------------------------------------------------------------


def test_parse_args_fills_the_typed_config() -> None:
    cfg = config.parse_args(["--method", "swav", "--data-dir", "/x", "--lr", "0.5", "--no-resume"])
    assert (cfg.method, cfg.data, cfg.data_dir, cfg.lr, cfg.resume) == (
        "swav",
        "digits",
        "/x",
        0.5,
        False,
    )
    with pytest.raises(SystemExit):
        config.parse_args(["--method", "mae"])
    with pytest.raises(SystemExit):
        config.parse_args(["--data", "imagenet"])


def test_cifar10_without_data_dir_is_an_error() -> None:
    with pytest.raises(ValueError, match="--data cifar10 needs --data-dir"):
        train_data.load_data("cifar10")


# --- kNN probe --------------------------------------------------------------------------------


def test_weighted_knn_vote_uses_similarity_weights() -> None:
    # Query [1, 0]: its nearest neighbour is class 0 (cos 1.0); the other two of the k=3
    # neighbours are class 1 (cos 0.6). Weights exp(cos / 0.1) make class 0 win a vote that an
    # unweighted majority would give to class 1.
    bank = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 0])
    query = torch.tensor([[1.0, 0.0]])
    acc = train_probes.knn_accuracy(bank, labels, query, torch.tensor([0]), ks=(3, 1),
                                    temperature=0.1, n_classes=2)  # fmt: skip
    assert acc == {3: 100.0, 1: 100.0}
    acc_flat = train_probes.knn_accuracy(bank, labels, query, torch.tensor([0]), ks=(3, 1),
                                         temperature=100.0, n_classes=2)  # fmt: skip
    assert acc_flat == {3: 0.0, 1: 100.0}  # k=1: the nearest neighbour alone decides


# --- dataset readers on synthetic files -------------------------------------------------------


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


@pytest.mark.parametrize("compressed", [True, False])
def test_fashion_mnist_reads_idx_files(tmp_path: Path, compressed: bool) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28)),
        "train-labels-idx1-ubyte": np.array([0, 9, 3, 3, 1]),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (2, 28, 28)),
        "t10k-labels-idx1-ubyte": np.array([7, 2]),
    }
    for name, array in arrays.items():
        if compressed:
            with gzip.open(tmp_path / f"{name}.gz", "wb") as f:
                f.write(_idx_bytes(array))
        else:
            (tmp_path / name).write_bytes(_idx_bytes(array))
    data = train_data.load_data("fashion-mnist", str(tmp_path))
    assert data.train_x.shape == (5, 1, 28, 28) and data.train_x.dtype == torch.uint8
    assert torch.equal(
        data.train_x[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]).byte()
    )
    assert torch.equal(data.test_x[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).byte())
    assert data.train_y.tolist() == [0, 9, 3, 3, 1] and data.test_y.tolist() == [7, 2]
    assert data.max_value == 255.0


def test_idx_reader_rejects_other_files(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01abcd")  # float IDX
    with pytest.raises(ValueError, match="not an unsigned-byte IDX file"):
        train_data.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(_idx_bytes(np.zeros((4, 2)))[:-3])
    with pytest.raises(ValueError, match=r"header says \(4, 2\), found 5 values"):
        train_data.read_idx(tmp_path / "short")


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match=r"train-images-idx3-ubyte\[\.gz\] not found"
    ) as err:
        train_data.load_fashion_mnist(tmp_path)
    assert "apt-get install dataset-fashion-mnist" in str(err.value)
    assert str(tmp_path) in str(err.value)


def test_cifar10_reads_python_pickles(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (6, 3, 32, 32)).astype(np.uint8)  # (N, C, H, W)
    for i, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        # the official layout: each row is the red plane, then green, then blue, row-major
        entry = {b"data": images[i : i + 1].reshape(1, 3072), b"labels": [i]}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    data = train_data.load_cifar10(tmp_path)  # the parent folder works too
    assert data.train_x.shape == (5, 3, 32, 32)
    assert torch.equal(data.train_x, torch.from_numpy(images[:5]))
    assert torch.equal(data.test_x, torch.from_numpy(images[5:]))
    assert data.train_y.tolist() == [0, 1, 2, 3, 4] and data.test_y.tolist() == [5]
    assert data.train_x[2, 1, 4, 7] == images[2].reshape(-1)[1 * 1024 + 4 * 32 + 7]


def test_missing_cifar10_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="data_batch_1 not found") as err:
        train_data.load_cifar10(tmp_path)
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in str(err.value)


def _stl_bytes(images: np.ndarray) -> bytes:
    # STL-10 stores each 96x96 plane column-major (Fortran order)
    return images.transpose(0, 1, 3, 2).astype(np.uint8).tobytes()


def test_stl10_reads_column_major_binaries(tmp_path: Path) -> None:
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(2)
    train_images = rng.integers(0, 256, (2, 3, 96, 96)).astype(np.uint8)
    test_images = rng.integers(0, 256, (1, 3, 96, 96)).astype(np.uint8)
    unlabeled = rng.integers(0, 256, (3, 3, 96, 96)).astype(np.uint8)
    (folder / "train_X.bin").write_bytes(_stl_bytes(train_images))
    (folder / "test_X.bin").write_bytes(_stl_bytes(test_images))
    (folder / "unlabeled_X.bin").write_bytes(_stl_bytes(unlabeled))
    (folder / "train_y.bin").write_bytes(bytes([1, 10]))
    (folder / "test_y.bin").write_bytes(bytes([4]))
    # A pixel at row 1, column 0 of the red plane is the second byte of the file.
    assert (folder / "train_X.bin").read_bytes()[1] == train_images[0, 0, 1, 0]

    data = train_data.load_stl10(tmp_path, unlabeled=True)
    assert torch.equal(data.train_x, torch.from_numpy(train_images))
    assert torch.equal(data.test_x, torch.from_numpy(test_images))
    assert data.unlabeled_x is not None and torch.equal(
        data.unlabeled_x, torch.from_numpy(unlabeled)
    )
    assert data.train_y.tolist() == [0, 9] and data.test_y.tolist() == [3]
    assert len(data.ssl_x) == 5
    assert train_data.load_stl10(folder, unlabeled=False).unlabeled_x is None


def test_missing_stl10_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"train_X\.bin not found") as err:
        train_data.load_stl10(tmp_path, unlabeled=True)
    assert "https://cs.stanford.edu/~acoates/stl10/" in str(err.value)


# --- grayscale data -------------------------------------------------------------------------


def test_grayscale_views_keep_one_channel_and_equal_the_three_channel_route() -> None:
    """Digits go through the pipeline with one channel: every view is (N, 1, h, w), and equals
    the first channel of the former route (three equal channels, one kept after) with the same
    random draws, since brightness and contrast treat a gray channel as its own luma."""
    data = train_data.load_digits()
    cfg = config.parse_args(["--method", "swav"])
    r = config.resolve(cfg, "swav", data.train_x.shape[0])
    mean, std = torch.tensor([0.3]), torch.tensor([0.2])
    images = data.train_x[:16]
    views = train_views.build_augment(r, data, mean, std)(images, torch.Generator().manual_seed(3))
    sizes = [r.image_size] * 2 + [r.small_crop_size] * r.small_crops
    assert [tuple(v.shape) for v in views] == [(16, 1, s, s) for s in sizes]

    def route(channels: int) -> list[torch.Tensor]:
        jitter = Augmentation(
            jitter=(0.4, 0.4, 0.0, 0.0),
            jitter_prob=0.8,
            mean=(0.3,) * channels,
            std=(0.2,) * channels,
        )
        multicrop = MultiCrop(
            (r.image_size, r.small_crop_size),
            (2, r.small_crops),
            (r.preset.crop_scale, r.preset.small_crop_scale),
            augmentations=jitter,
            flip_prob=0.5 if r.preset.flip else 0.0,
        )
        x = train_views.to_float(images, data).expand(-1, channels, -1, -1)
        return list(multicrop(x, generator=torch.Generator().manual_seed(3)))

    for one, new, three in zip(route(1), views, route(3), strict=True):
        torch.testing.assert_close(new, one, rtol=0, atol=0)
        torch.testing.assert_close(one, three[:, :1], rtol=0, atol=1e-6)
        torch.testing.assert_close(
            three[:, 1:], three[:, :1].expand(-1, 2, -1, -1), rtol=0, atol=1e-6
        )


@pytest.mark.parametrize("method", config.ALL_RUNS)
def test_each_method_gets_its_views(method: config.MethodName) -> None:
    """The multi-crop methods train on the 2 large crops and the preset's small ones; the
    others on 2 large crops."""
    data = train_data.load_digits()
    r = config.resolve(config.parse_args(["--method", method]), method, len(data.train_x))
    mean, std = torch.tensor([0.3]), torch.tensor([0.2])
    views = train_views.build_augment(r, data, mean, std)(
        data.train_x[:8], torch.Generator().manual_seed(0)
    )
    multicrop = {"swav", "dino", "dino-sinkhorn", "dinov2", "mmcr", "lejepa"}
    small = r.small_crops if method in multicrop else 0
    assert [v.shape[-1] for v in views] == [r.image_size] * 2 + [r.small_crop_size] * small
    assert multicrop == config.MULTICROP_METHODS  # derived from each spec's augmentation


def test_fashion_preset_gives_the_dearer_methods_fewer_steps() -> None:
    steps = {
        m: config.resolve(config.parse_args(["--data", "fashion-mnist"]), m, 60_000).steps
        for m in config.ALL_RUNS
    }
    assert steps["simclr"] == steps["supervised"] == config.PRESETS["fashion-mnist"].steps
    assert steps["moco"] < steps["simclr"] and steps["lejepa"] < steps["moco"]
    assert steps["dino"] == steps["dino-sinkhorn"] == steps["dinov2"]  # one family, one budget
    assert {m for m, n in steps.items() if n != steps["simclr"]} == set(
        config.PRESETS["fashion-mnist"].method_steps
    )
    overridden = config.parse_args(["--data", "fashion-mnist", "--steps", "7"])
    assert config.resolve(overridden, "dino", 60_000).steps == 7  # --steps wins


def test_fashion_preset_trains_swav_on_its_two_large_crops_only() -> None:
    """SwAV on Fashion-MNIST learns better without the 12-pixel small crops (issue 26): the
    preset gives it none, the other multi-crop methods the preset's 2; --small-crops wins."""
    cfg = config.parse_args(["--data", "fashion-mnist"])
    crops = {m: config.resolve(cfg, m, 60_000).small_crops for m in config.MULTICROP_METHODS}
    assert crops.pop("swav") == 0
    assert set(crops.values()) == {2} == {config.PRESETS["fashion-mnist"].small_crops}
    assert config.resolve(config.parse_args(["--data", "digits"]), "swav", 1_000).small_crops == 4
    overridden = config.parse_args(["--data", "fashion-mnist", "--small-crops", "3"])
    assert config.resolve(overridden, "swav", 60_000).small_crops == 3
    r = config.resolve(cfg, "swav", 60_000)
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    labels = torch.zeros(4, dtype=torch.long)
    data = train_data.Data("fashion-mnist", images, labels, images, labels, 10, 255.0)
    views = train_views.build_augment(r, data, torch.tensor([0.3]), torch.tensor([0.2]))(
        images, torch.Generator().manual_seed(0)
    )
    assert [tuple(v.shape) for v in views] == [(4, 1, 28, 28)] * 2


def test_dinov2_adds_koleo_of_the_head_bottleneck_to_dino_sinkhorn() -> None:
    """``--method dinov2`` is ``dino-sinkhorn``'s loss plus 0.01 x KoLeo of the student head's
    bottleneck (its MLP's output, before the L2-normalization) of each large crop, on the same
    weights and views; the student's scores, split at the bottleneck, are still ``head(f)``."""
    data = train_data.load_digits()
    views = [torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(v)) for v in (0, 1)]
    views += [torch.randn(32, 1, 4, 4, generator=torch.Generator().manual_seed(2))]
    losses = {}
    for method in ("dino-sinkhorn", "dinov2"):
        cfg = config.parse_args(["--method", method, "--width", "8"])
        r = config.resolve(cfg, method, len(data.train_x))
        torch.manual_seed(0)
        model = train_methods.build_method(cfg, r, data, distributed=False)
        losses[method] = model(views, torch.zeros(32, dtype=torch.long))
    assert isinstance(model, train_methods.DINO)
    head = model.online.projector
    assert isinstance(head, sslosses.DINOHead)
    every_crop = forward_multicrop(model.backbone, views)
    with torch.no_grad():
        teacher = forward_multicrop(model.target.module, views[:2])
    dino = model.criterion(
        [head(f) for f in every_crop],
        teacher,
        teacher_temperature=model.teacher_temperature(),
    )
    torch.testing.assert_close(losses["dino-sinkhorn"], dino)
    features = every_crop[:2]  # the large crops
    koleo = sum(SF.koleo_loss(head.mlp(f)) for f in features)
    assert float(koleo.detach()) != 0.0
    torch.testing.assert_close(losses["dinov2"], losses["dino-sinkhorn"] + 0.01 * koleo)


# --- probes, baselines, report ------------------------------------------------------------------


def test_logistic_regression_reaches_the_penalized_optimum() -> None:
    """The probe minimizes mean cross-entropy + l2/2 ||W||^2: at its solution the gradient of
    that objective vanishes (which checks the conversion to scikit-learn's C = 1 / (l2 N))."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 5, generator=gen, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * torch.randn(300, generator=gen, dtype=torch.float64) > 0).long()
    y[x[:, 1] > 1.0] = 2
    for l2 in (1e-3, 1e-1):
        weight, bias = train_probes.fit_logistic_regression(x, y, n_classes=3, l2=l2, max_iter=1000)
        w, b = weight.clone().requires_grad_(True), bias.clone().requires_grad_(True)
        objective = torch.nn.functional.cross_entropy(x @ w + b, y) + 0.5 * l2 * w.pow(2).sum()
        objective.backward()
        assert w.grad is not None and b.grad is not None
        assert float(w.grad.abs().max()) < 1e-4 and float(b.grad.abs().max()) < 1e-4


def test_linear_probe_chooses_l2_on_train_data_only() -> None:
    gen = torch.Generator().manual_seed(1)
    centers = 3.0 * torch.randn(4, 8, generator=gen)
    y = torch.randint(0, 4, (600,), generator=gen)
    x = centers[y] + torch.randn(600, 8, generator=gen)
    test_y = torch.randint(0, 4, (200,), generator=gen)
    test_x = centers[test_y] + torch.randn(200, 8, generator=gen)
    result = train_probes.linear_probe(x, y, test_x, test_y, n_classes=4)
    assert result.top1 > 95.0
    assert set(result.validation) == set(train_probes.L2_GRID) and result.l2 in result.validation
    shuffled = test_y[torch.randperm(200, generator=gen)]
    other = train_probes.linear_probe(x, y, test_x, shuffled, n_classes=4)
    assert other.l2 == result.l2 and other.validation == result.validation  # test never seen
    assert other.top1 < 50.0


def test_knn_clamps_k_to_the_bank() -> None:
    bank = torch.eye(3)
    labels = torch.tensor([0, 1, 1])
    acc = train_probes.knn_accuracy(bank, labels, bank, labels, ks=(200, 1), temperature=100.0,
                                    n_classes=2)  # fmt: skip
    # k=1: each point finds itself; k=200 (clamped to 3): near-equal votes, class 1 (two) wins
    assert acc[1] == 100.0 and acc[200] == pytest.approx(200 / 3)


def test_help_shows_the_defaults_each_dataset_and_method_resolves_to(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        config.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text
    fashion = config.PRESETS["fashion-mnist"]
    per_method = ", ".join(f"{m}: {n}" for m, n in fashion.method_steps.items())
    steps = f"digits: 200; fashion-mnist: {fashion.steps} ({per_method}); cifar10: 78000"
    assert f"optimizer steps per method (default: {steps}; stl10: 80000)" in text
    assert "(default: digits: 4; fashion-mnist: 2 (swav: 0); cifar10, stl10: 6)" in text
    temperatures = "simclr, moco, dino-sinkhorn, dcl, dinov2: 0.2; swav, dino, nnclr, supcon: 0.1"
    assert f"(default: {temperatures})" in text  # per method
    assert "--stop-after" in text and "(default: none)" in text


def test_supervised_ceiling_and_a_second_seed_make_one_report(tmp_path: Path) -> None:
    args = ["--steps", "20", *TINY, "--out", str(tmp_path)]
    (supervised,) = loop.main(["--method", "supervised", *args])
    assert supervised.knn_top1 > supervised.baseline_top1 + 5.0
    assert supervised.final["linear"] > supervised.untrained["linear"]
    runs = [loop.main(["--method", "vicreg", "--seed", str(s), *args])[0] for s in (0, 1)]
    assert [run.seed for run in runs] == [0, 1]
    assert (tmp_path / "vicreg" / "result.json").is_file()
    assert (tmp_path / "vicreg-seed1" / "result.json").is_file()
    baselines = json.loads((tmp_path / "baselines.json").read_text())
    assert sorted(k.split("/")[0] for k in baselines) == ["raw-pixels", "untrained", "untrained"]
    assert runs[0].untrained == supervised.untrained != runs[1].untrained  # cached per seed

    reported = loop.main(["--report", *args])
    assert [(r.method, r.seed) for r in reported] == [("vicreg", 0), ("vicreg", 1),
                                                       ("supervised", 0)]  # fmt: skip
    table = (tmp_path / "results.md").read_text()
    linear = [r.final["linear"] for r in runs]
    mean, sd = sum(linear) / 2, abs(linear[0] - linear[1]) / 2**0.5
    assert "| VICReg | 2 |" in table and f"{mean:.2f} ± {sd:.2f}" in table
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["raw_pixels"] == baselines[report.raw_pixels_key(config.parse_args(args), 8)]
    assert [run["cpu_seconds"] > 0 for run in summary["runs"]] == [True] * 3
