"""Barlow Twins loss: reference (facebookresearch/barlowtwins main.py), every algorithm,
properties, numerics, the auto rule, distributed, errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import penalty_gradient, value_and_grads
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import SEEDS, embeddings

from benchmarks.references import barlow_twins as barlow_twins_reference
from sslosses.barlow_twins import BarlowTwinsLoss, barlow_twins_loss
from sslosses.functional import select_algorithm
from sslosses.kernels import offdiag_triton

ALGORITHMS = ("dense", "gram", "fused", "auto")
ROOT = Path(__file__).resolve().parents[1]


def _pair(
    n: int = 6, d: int = 5, dtype: torch.dtype = torch.float64, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    z_a = 2 * torch.randn(n, d, generator=gen, dtype=torch.float64) + 1
    z_b = z_a + torch.randn(n, d, generator=gen, dtype=torch.float64)
    return z_a.to(dtype), z_b.to(dtype)


# ------------------------------------------------------------------------------------------
# reference
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(("n", "d"), [(6, 5), (3, 17), (17, 3), (9, 9), (2, 1), (2, 40)])
def test_matches_reference_value_and_gradient(algorithm: str, n: int, d: int) -> None:
    z_a, z_b = _pair(n, d)
    ref = value_and_grads(lambda a, b: barlow_twins_reference(a, b, 0.3, 1e-5), z_a, z_b)
    ours = value_and_grads(
        lambda a, b: barlow_twins_loss(a, b, lambd=0.3, algorithm=algorithm),  # type: ignore[arg-type]
        z_a,
        z_b,
    )
    for x, y in zip(ours, ref, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


@given(embeddings(min_n=2, max_n=12, max_d=12), st.sampled_from(ALGORITHMS), SEEDS)
@settings(max_examples=30)
def test_matches_reference_hypothesis(
    pair: tuple[torch.Tensor, ...], algorithm: str, seed: int
) -> None:
    z_a, z_b = pair
    lambd = float(torch.rand((), generator=torch.Generator().manual_seed(seed)))
    ref = value_and_grads(lambda a, b: barlow_twins_reference(a, b, lambd), z_a, z_b)
    ours = value_and_grads(
        lambda a, b: barlow_twins_loss(a, b, lambd=lambd, algorithm=algorithm),  # type: ignore[arg-type]
        z_a,
        z_b,
    )
    for x, y in zip(ours, ref, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-10)


def test_default_hyperparameters_are_the_official_ones() -> None:
    z_a, z_b = _pair(8, 6)
    torch.testing.assert_close(
        barlow_twins_loss(z_a, z_b), barlow_twins_reference(z_a, z_b, 0.0051, 1e-5)
    )


def test_eps_is_inside_the_square_root() -> None:
    z_a, z_b = _pair(5, 4)
    z_a = 1e-3 * z_a  # variance ~4e-6, comparable to eps
    for eps in (1e-5, 1e-3):
        torch.testing.assert_close(
            barlow_twins_loss(z_a, z_b, eps=eps), barlow_twins_reference(z_a, z_b, eps=eps)
        )


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_float32_near_identity_matches_float64_dense(algorithm: str) -> None:
    # N >> D with strongly correlated views: C is close to the identity, where "sum of all
    # squares minus the diagonal's" cancels in float32. Every algorithm must stay accurate.
    z_a, z_b = _pair(4096, 4, seed=0)
    z_b = z_a + 0.005 * (z_b - z_a)
    ref = value_and_grads(lambda a, b: barlow_twins_loss(a, b, algorithm="dense"), z_a, z_b)
    ours = value_and_grads(
        lambda a, b: barlow_twins_loss(a, b, algorithm=algorithm),  # type: ignore[arg-type]
        z_a.float(),
        z_b.float(),
    )
    assert ours[0].dtype == torch.float32
    torch.testing.assert_close(ours[0].double(), ref[0], rtol=1e-5, atol=0)
    for g, g_ref in zip(ours[1:], ref[1:], strict=True):
        assert float((g.double() - g_ref).abs().max() / g_ref.abs().max()) < 1e-4


def test_near_identity_shape_is_one_where_float32_cancellation_bites() -> None:
    # The shape above is meaningful: the naive float32 Gram formula (full sum minus the
    # diagonal, what "gram" would do without its float64 switch) misses the 1e-5 tolerance.
    z_a, z_b = _pair(4096, 4, seed=0)
    z_b = z_a + 0.005 * (z_b - z_a)
    ref = float(barlow_twins_loss(z_a, z_b, algorithm="dense"))
    A = F.batch_norm(z_a.float(), None, None, training=True, eps=1e-5)
    B = F.batch_norm(z_b.float(), None, None, training=True, eps=1e-5)
    n = A.shape[0]
    c = (A * B).sum(0) / n
    full = ((A @ A.T) * (B @ B.T)).sum() / n**2
    naive = float((c - 1).square().sum() + 0.0051 * (full - c.square().sum()))
    assert abs(naive - ref) / ref > 4e-5


# ------------------------------------------------------------------------------------------
# properties
# ------------------------------------------------------------------------------------------
@given(embeddings(min_n=4, max_n=12, max_d=10), st.sampled_from(ALGORITHMS), SEEDS)
@settings(max_examples=25)
def test_invariant_to_positive_per_feature_affine_maps(
    pair: tuple[torch.Tensor, ...], algorithm: str, seed: int
) -> None:
    z_a, z_b = pair
    gen = torch.Generator().manual_seed(seed)
    d = z_a.shape[1]
    scale_a = torch.exp(3 * torch.rand(d, generator=gen, dtype=torch.float64) - 1.5)
    scale_b = torch.exp(3 * torch.rand(d, generator=gen, dtype=torch.float64) - 1.5)
    shift_a, shift_b = 10 * torch.randn(2, d, generator=gen, dtype=torch.float64)
    eps = 1e-12  # eps breaks exact invariance; make it negligible
    loss = barlow_twins_loss(z_a, z_b, eps=eps, algorithm=algorithm)  # type: ignore[arg-type]
    moved = barlow_twins_loss(
        z_a * scale_a + shift_a,
        z_b * scale_b + shift_b,
        eps=eps,
        algorithm=algorithm,  # type: ignore[arg-type]
    )
    torch.testing.assert_close(moved, loss, rtol=1e-8, atol=1e-9)


@given(embeddings(min_n=2, max_n=12, max_d=10), st.sampled_from(ALGORITHMS), SEEDS)
@settings(max_examples=25)
def test_non_negative_symmetric_and_permutation_invariant(
    pair: tuple[torch.Tensor, ...], algorithm: str, seed: int
) -> None:
    z_a, z_b = pair
    gen = torch.Generator().manual_seed(seed)
    n, d = z_a.shape
    loss = barlow_twins_loss(z_a, z_b, algorithm=algorithm)  # type: ignore[arg-type]
    assert float(loss) >= 0
    # swapping the views transposes C; permuting samples, or features of both views, permutes it
    torch.testing.assert_close(
        barlow_twins_loss(z_b, z_a, algorithm=algorithm),  # type: ignore[arg-type]
        loss,
        rtol=1e-10,
        atol=1e-12,
    )
    rows = torch.randperm(n, generator=gen)
    cols = torch.randperm(d, generator=gen)
    permuted = barlow_twins_loss(
        z_a[rows][:, cols],
        z_b[rows][:, cols],
        algorithm=algorithm,  # type: ignore[arg-type]
    )
    torch.testing.assert_close(permuted, loss, rtol=1e-10, atol=1e-12)


def test_identical_whitened_views_give_zero_loss() -> None:
    # Zero-mean orthonormal columns scaled to unit variance: C = I / (1 + eps).
    n, d = 12, 4
    x = torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    z = torch.linalg.qr(x - x.mean(0))[0] * n**0.5  # (N, D)
    for algorithm in ALGORITHMS:
        loss = barlow_twins_loss(z, z, eps=1e-12, algorithm=algorithm)  # type: ignore[arg-type]
        assert abs(float(loss)) < 1e-12  # vs O(1) for unrelated views


def test_uncorrelated_views_value() -> None:
    # Each feature of z_b is orthogonal to every feature of z_a: C = 0 and the loss is D.
    n, d = 8, 3
    gen = torch.Generator().manual_seed(0)
    ones = torch.ones(n, 1, dtype=torch.float64)
    x = torch.cat([ones, torch.randn(n, 2 * d, dtype=torch.float64, generator=gen)], 1)
    q = torch.linalg.qr(x)[0][:, 1:]  # orthonormal columns, orthogonal to the constant
    z_a, z_b = q[:, :d], q[:, d:]
    for algorithm in ALGORITHMS:
        loss = barlow_twins_loss(z_a, z_b, algorithm=algorithm)  # type: ignore[arg-type]
        torch.testing.assert_close(loss, torch.tensor(float(d), dtype=torch.float64))


# ------------------------------------------------------------------------------------------
# module, autograd, numerics
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ["gram", "fused", "auto"])
def test_double_backward_raises_instead_of_a_silently_wrong_gradient(algorithm: str) -> None:
    # once_differentiable would return a constant gradient here, making a penalty's gradient wrong
    z_a, z_b = _pair(3, 8)  # "auto" runs "gram" here
    z_a.requires_grad_(True)
    loss = barlow_twins_loss(z_a, z_b, algorithm=algorithm)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match=r"has no double backward.*algorithm='dense'"):
        torch.autograd.grad(loss, [z_a], create_graph=True)
    (grad,) = torch.autograd.grad(barlow_twins_loss(z_a, z_b, algorithm=algorithm), [z_a])  # type: ignore[arg-type]
    assert grad.abs().sum() > 0  # first order still works


def test_dense_is_plain_autograd_with_a_double_backward() -> None:
    # The gradient of a gradient penalty through "dense" equals the reference's (plain ops too).
    z_a, z_b = _pair(5, 4)

    ours = penalty_gradient(
        lambda a, b: barlow_twins_loss(a, b, lambd=0.3, algorithm="dense"), z_a, z_b
    )
    ref = penalty_gradient(lambda a, b: barlow_twins_reference(a, b, 0.3, 1e-5), z_a, z_b)
    assert ours.abs().sum() > 0
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


def test_gradient_only_to_inputs_that_require_it() -> None:
    z_a, z_b = _pair(5, 4)
    z_a.requires_grad_(True)
    for algorithm in ALGORITHMS:
        z_a.grad = None
        barlow_twins_loss(z_a, z_b, algorithm=algorithm).backward()  # type: ignore[arg-type]
        assert z_a.grad is not None and z_a.grad.abs().sum() > 0
        assert z_b.grad is None


def test_returns_0d() -> None:
    z_a, z_b = _pair()
    for algorithm in ALGORITHMS:
        assert barlow_twins_loss(z_a, z_b, algorithm=algorithm).shape == ()  # type: ignore[arg-type]


def test_gram_float32_stays_float32_when_computing_in_float64() -> None:
    z_a, z_b = _pair(6, 4)  # float64 stays float64: tests/contracts.py
    # "gram" computes in float64 internally when N > D / 2 but returns the compute dtype
    out = barlow_twins_loss(z_a.float(), z_b.float(), algorithm="gram")
    assert out.dtype == torch.float32


# ------------------------------------------------------------------------------------------
# the auto rule
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n", "d", "expected"),
    [
        (256, 8192, "gram"),
        (2048, 8192, "gram"),
        (4096, 8192, "gram"),
        (4097, 8192, "dense"),
        (8192, 2048, "fused"),  # C in one strip (D * D <= 2**22), kept for the backward
        (1025, 2048, "fused"),
        (4096, 2049, "dense"),  # two strips: "fused" would recompute them
        (4096, 4096, "dense"),
        (16384, 16384, "fused"),  # D * D = 2**28 elements > 2**26
        (8192, 8192, "dense"),
    ],
)
def test_auto_rule_on_cpu(n: int, d: int, expected: str) -> None:
    assert select_algorithm(n, d) == expected
    assert select_algorithm(n, d, device=torch.device("cpu")) == expected


@pytest.mark.parametrize(
    ("n", "d", "expected"),
    [(256, 8192, "gram"), (8192, 2048, "dense"), (1024, 1024, "dense"), (16384, 16384, "fused")],
)
def test_auto_rule_off_cpu_keeps_dense_for_one_strip(n: int, d: int, expected: str) -> None:
    # the fused kernels are untimed on other devices: there "auto" keeps "dense" up to 2**26
    assert select_algorithm(n, d, device="cuda") == expected
    assert select_algorithm(n, d, device=torch.device("cuda", 0)) == expected


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((2.0, 8), {}, TypeError, "n must be an int, got float"),
        ((8, True), {}, TypeError, "d must be an int, got bool"),
        ((-1, 8), {}, ValueError, "n must be an int >= 0, got -1"),
        ((8, 8), {"symmetric": 1}, TypeError, "symmetric must be a bool, got int"),
        ((8, 8), {"device": 0}, TypeError, "device must be a torch.device or a string, got int"),
    ],
)
def test_public_selector_rejects_bad_arguments(
    args: tuple[object, ...], kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        select_algorithm(*args, **kwargs)  # type: ignore[arg-type]


def test_public_selector_accepts_numpy_integers() -> None:
    assert select_algorithm(np.int64(256), np.int32(8192)) == "gram"  # type: ignore[arg-type]


@pytest.mark.parametrize("has_triton", [True, False])
def test_auto_rule_on_cuda_does_not_depend_on_triton(
    monkeypatch: pytest.MonkeyPatch, has_triton: bool
) -> None:
    """The Triton kernels are untimed on a GPU: "auto" keeps "dense" there, Triton or not."""
    monkeypatch.setattr(offdiag_triton, "HAS_TRITON", has_triton)
    assert select_algorithm(8192, 2048, device="cuda") == "dense"
    assert select_algorithm(256, 8192, device="cuda") == "gram"
    assert select_algorithm(16384, 16384, device="cuda") == "fused"


def test_everything_works_without_triton() -> None:
    # Simulate an environment without Triton in a fresh interpreter.
    script = textwrap.dedent(
        """
        import sys
        sys.modules["triton"] = None
        import torch
        from sslosses.functional import barlow_twins_loss, select_algorithm
        from sslosses.kernels import offdiag_triton
        assert offdiag_triton.HAS_TRITON is False
        assert not offdiag_triton.usable(torch.device("cuda"), torch.float32)
        assert select_algorithm(8192, 2048) == "fused"
        assert select_algorithm(8192, 2048, device="cuda") == "dense"
        z_a, z_b = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
        fused = barlow_twins_loss(z_a, z_b, algorithm="fused")
        dense = barlow_twins_loss(z_a, z_b, algorithm="dense")
        torch.testing.assert_close(fused, dense, rtol=1e-12, atol=0)
        print("ok", float(fused))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok ")


# ------------------------------------------------------------------------------------------
# distributed (gloo, W=2 and W=3, unequal data per rank)
# ------------------------------------------------------------------------------------------
def _rank_data(rank: int, sizes: list[int], d: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + rank)
    z_a = (rank + 1) * torch.randn(sizes[rank], d, generator=gen, dtype=torch.float64) + rank
    z_b = z_a + torch.randn(sizes[rank], d, generator=gen, dtype=torch.float64)
    return z_a, z_b


def _dist_case(
    rank: int, world: int, sizes: list[int], d: int, algorithm: str, gather: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    z_a, z_b = _rank_data(rank, sizes, d)
    z_a.requires_grad_(True)
    z_b.requires_grad_(True)
    if algorithm == "module":
        loss = BarlowTwinsLoss(lambd=0.3, gather_distributed=gather)(z_a, z_b)
    else:
        loss = barlow_twins_loss(
            z_a,
            z_b,
            lambd=0.3,
            gather_distributed=gather,
            algorithm=algorithm,  # type: ignore[arg-type]
        )
    loss.backward()
    assert z_a.grad is not None and z_b.grad is not None
    return loss.detach(), z_a.grad, z_b.grad


@pytest.mark.parametrize("algorithm", [*ALGORITHMS, "module"])
@pytest.mark.parametrize(
    ("sizes", "d"),
    [
        # N > D / 2 (gram in float64 anyway), odd D: unequal feature shards; at W=3 a rank
        # holds a single row
        ([3, 5, 1], 7),
        ([2, 3, 1], 16),  # N <= D / 2: auto picks gram
        ([1, 1, 1], 1),  # one sample per rank, one feature: rank 0's feature shard is empty
    ],
)
def test_distributed_matches_global_batch(
    dist_pool_w: object, algorithm: str, sizes: list[int], d: int
) -> None:
    world = dist_pool_w.world_size  # type: ignore[attr-defined]
    sizes = sizes[:world]
    results = dist_pool_w.run(_dist_case, sizes, d, algorithm, True)  # type: ignore[attr-defined]
    parts = [_rank_data(r, sizes, d) for r in range(world)]
    z_a = torch.cat([p[0] for p in parts])
    z_b = torch.cat([p[1] for p in parts])
    ref, grad_a, grad_b = value_and_grads(lambda a, b: barlow_twins_reference(a, b, 0.3), z_a, z_b)
    mean = sum(r[0] for r in results) / world
    torch.testing.assert_close(mean, ref, rtol=1e-8, atol=1e-8)
    for r, (loss, g_a, g_b) in enumerate(results):
        torch.testing.assert_close(loss, ref, rtol=1e-8, atol=1e-8)  # every rank: global loss
        rows = slice(sum(sizes[:r]), sum(sizes[: r + 1]))
        torch.testing.assert_close(g_a / world, grad_a[rows], rtol=1e-8, atol=1e-8)
        torch.testing.assert_close(g_b / world, grad_b[rows], rtol=1e-8, atol=1e-8)


def test_distributed_off_is_local(dist_pool: object) -> None:
    sizes, d = [3, 5], 4
    results = dist_pool.run(_dist_case, sizes, d, "auto", False)  # type: ignore[attr-defined]
    for r, (loss, g_a, g_b) in enumerate(results):
        ref, grad_a, grad_b = value_and_grads(
            lambda a, b: barlow_twins_reference(a, b, 0.3), *_rank_data(r, sizes, d)
        )
        torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(g_a, grad_a, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(g_b, grad_b, rtol=1e-10, atol=1e-12)


# Errors, the shared ones and this loss's own hyperparameters: test_offdiag_checks.py
