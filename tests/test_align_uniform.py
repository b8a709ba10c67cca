"""Alignment and uniformity: reference, invariants, blockwise uniformity, distributed, errors."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from helpers import assert_all_close, value_and_grads
from hypothesis import given
from hypothesis import strategies as st
from strategies import SEEDS, embeddings, positive_scales

from benchmarks.references import align, uniform
from sslosses import AlignmentLoss, UniformityLoss, _chunked_ce
from sslosses.functional import alignment_loss, byol_loss, uniformity_loss

F64 = torch.float64
TOL = {"rtol": 1e-10, "atol": 1e-10}
CHUNKS = st.none() | st.integers(min_value=1, max_value=20)
ALPHAS = st.sampled_from([2.0, 1.0, 0.5]) | st.floats(min_value=0.25, max_value=4.0)
TS = st.floats(min_value=0.1, max_value=5.0)


def _rows(n: int, d: int, *, seed: int = 0, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=1)


def _orthogonal(d: int, seed: int) -> torch.Tensor:
    q, r = torch.linalg.qr(_rows(d, d, seed=seed))
    return q * torch.sign(torch.diagonal(r))  # (D, D), Haar-distributed


# ---------------------------------------------------------------- alignment: reference
@given(embeddings(min_n=1, max_n=12), ALPHAS, st.booleans())
def test_alignment_matches_reference(views, alpha: float, normalize: bool) -> None:
    a, b = views
    ours = value_and_grads(
        lambda x, y: alignment_loss(x, y, alpha=alpha, normalize=normalize), a, b
    )
    if normalize:  # the original's callers normalize first
        ref = value_and_grads(lambda x, y: align(_unit(x), _unit(y), alpha), a, b)
    else:
        ref = value_and_grads(lambda x, y: align(x, y, alpha), a, b)
    # A pair that coincides (with D = 1 a normalized pair does half the time): the original's
    # gradient there is NaN below alpha = 1 and ours 0, the documented difference (see
    # test_alignment_is_zero_for_identical_views); everywhere else they agree.
    same = ((_unit(a) - _unit(b)) if normalize else (a - b)).eq(0).all(dim=1)  # (N,)
    for grad in ref[1:]:
        assert bool(grad[~same].isfinite().all())
        grad[same] = 0.0
    assert_all_close(ours, ref, **TOL)


@pytest.mark.parametrize("normalize", [True, False])
def test_alignment_gradcheck(normalize: bool) -> None:
    a, b = (_rows(5, 3, seed=s).requires_grad_(True) for s in (1, 2))
    for alpha in (2.0, 1.0, 0.7, 3.0):
        assert torch.autograd.gradcheck(
            lambda x, y, p=alpha: alignment_loss(
                x, y, alpha=p, normalize=normalize, reduction="none"
            ),
            (a, b),
        )


@given(embeddings(min_n=1, max_n=12, count=1), ALPHAS)
def test_alignment_is_zero_for_identical_views(rows, alpha: float) -> None:
    (a,) = rows
    for normalize in (True, False):
        value, ga, gb = value_and_grads(
            lambda x, y, n=normalize: alignment_loss(x, y, alpha=alpha, normalize=n), a, a
        )
        assert value.item() == 0.0
        # the gradient at identical rows is 0 for every alpha (the original's is NaN below 1)
        assert torch.count_nonzero(ga) == 0 and torch.count_nonzero(gb) == 0


def test_alignment_original_gradient_is_nan_below_alpha_one_at_identical_rows() -> None:
    a = _rows(3, 4).requires_grad_(True)
    (grad,) = torch.autograd.grad(align(a, a.detach().clone(), 0.5), [a])
    assert bool(grad.isnan().all())  # what the documented difference avoids


@given(embeddings(min_n=1, max_n=12))
def test_alignment_at_alpha_two_is_byol_loss(views) -> None:
    a, b = views  # on unit rows ||a - b||^2 = 2 - 2 cos
    for reduction in ("none", "mean", "sum"):
        torch.testing.assert_close(
            alignment_loss(a, b, reduction=reduction), byol_loss(a, b, reduction=reduction), **TOL
        )


@given(embeddings(min_n=1, max_n=12), ALPHAS)
def test_alignment_is_within_its_bounds_on_unit_rows(views, alpha: float) -> None:
    a, b = views
    per_row = alignment_loss(a, b, alpha=alpha, reduction="none")
    assert bool((per_row >= 0).all()) and bool((per_row <= 2**alpha + 1e-12).all())


def test_alignment_of_opposite_rows_is_two_to_the_alpha() -> None:
    a = _rows(4, 3)
    for alpha in (1.0, 2.0, 3.0):
        torch.testing.assert_close(
            alignment_loss(a, -a, alpha=alpha), torch.tensor(2.0**alpha, dtype=F64), **TOL
        )


# ---------------------------------------------------------------- uniformity: reference
@given(embeddings(min_n=2, max_n=14, count=1), TS, CHUNKS, st.booleans())
def test_uniformity_matches_reference(rows, t: float, chunk_size, normalize: bool) -> None:
    (z,) = rows
    if not normalize:
        z = z / 3  # squared distances up to ~ 10 D: the reference's exp stays representable
    ours = value_and_grads(
        lambda x: uniformity_loss(x, t=t, normalize=normalize, chunk_size=chunk_size), z
    )
    ref = value_and_grads(lambda x: uniform(_unit(x) if normalize else x, t), z)
    assert_all_close(ours, ref, **TOL)


@given(embeddings(min_n=2, max_n=30, count=1, scale=5.0), TS, st.integers(1, 31), st.booleans())
def test_uniformity_blockwise_equals_plain(rows, t: float, chunk_size: int, normalize) -> None:
    (z,) = rows
    assert_all_close(
        value_and_grads(
            lambda x: uniformity_loss(x, t=t, normalize=normalize, chunk_size=chunk_size), z
        ),
        value_and_grads(lambda x: uniformity_loss(x, t=t, normalize=normalize, chunk_size=None), z),
        **TOL,
    )


@pytest.mark.parametrize("chunk_size", [None, 1, 3])
@pytest.mark.parametrize("normalize", [True, False])
def test_uniformity_gradcheck(chunk_size: int | None, normalize: bool) -> None:
    z = _rows(6, 3, seed=1).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: uniformity_loss(x, t=1.5, normalize=normalize, chunk_size=chunk_size), (z,)
    )


def test_uniformity_double_backward_blockwise_equals_plain() -> None:
    # torch.pdist (the reference) has no double backward; the plain path is plain autograd
    z = _rows(7, 4, seed=5).requires_grad_(True)
    penalties = []
    for fn in (
        lambda x: uniformity_loss(x, chunk_size=3),
        lambda x: uniformity_loss(x, chunk_size=None),
    ):
        (grad,) = torch.autograd.grad(fn(z), [z], create_graph=True)
        penalties.append(torch.autograd.grad(grad.square().sum(), [z])[0])
    torch.testing.assert_close(penalties[0], penalties[1], rtol=1e-8, atol=1e-8)


# ---------------------------------------------------------------- uniformity: invariants
@given(embeddings(min_n=2, max_n=12, min_d=2, count=1), SEEDS, CHUNKS, st.booleans())
def test_uniformity_invariant_to_rotation(rows, seed: int, chunk_size, normalize: bool) -> None:
    (z,) = rows
    q = _orthogonal(z.shape[1], seed)
    kwargs = {"normalize": normalize, "chunk_size": chunk_size}
    torch.testing.assert_close(
        uniformity_loss(z @ q, **kwargs), uniformity_loss(z, **kwargs), **TOL
    )


@given(embeddings(min_n=2, max_n=12, count=1), SEEDS, CHUNKS)
def test_uniformity_invariant_to_row_permutation(rows, seed: int, chunk_size) -> None:
    (z,) = rows
    perm = torch.randperm(z.shape[0], generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(
        uniformity_loss(z[perm], chunk_size=chunk_size),
        uniformity_loss(z, chunk_size=chunk_size),
        **TOL,
    )


@given(
    embeddings(min_n=2, max_n=10, count=1), st.lists(positive_scales(), min_size=10, max_size=10)
)
def test_uniformity_invariant_to_positive_row_scaling(rows, scales: list[float]) -> None:
    (z,) = rows
    s = torch.tensor(scales[: z.shape[0]], dtype=F64)
    torch.testing.assert_close(uniformity_loss(z * s[:, None]), uniformity_loss(z), **TOL)


@given(embeddings(min_n=2, max_n=12), SEEDS)
def test_alignment_invariant_to_rotation_and_permutation(views, seed: int) -> None:
    a, b = views
    q = _orthogonal(a.shape[1], seed)
    perm = torch.randperm(a.shape[0], generator=torch.Generator().manual_seed(seed))
    per_row = alignment_loss(a, b, reduction="none")
    torch.testing.assert_close(alignment_loss(a @ q, b @ q, reduction="none"), per_row, **TOL)
    torch.testing.assert_close(alignment_loss(a[perm], b[perm], reduction="none"), per_row[perm])


@given(embeddings(min_n=2, max_n=12, count=1), TS)
def test_uniformity_is_within_its_bounds_on_unit_rows(rows, t: float) -> None:
    (z,) = rows
    value = uniformity_loss(z, t=t).item()
    assert -4 * t - 1e-12 <= value <= 1e-12


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_uniformity_closed_forms(chunk_size: int | None) -> None:
    t = 1.5
    corners = torch.eye(5, dtype=F64)  # every pair at squared distance 2
    torch.testing.assert_close(
        uniformity_loss(corners, t=t, chunk_size=chunk_size), torch.tensor(-2 * t, dtype=F64)
    )
    same = torch.full((4, 3), 0.5, dtype=F64)  # every pair at distance 0
    torch.testing.assert_close(
        uniformity_loss(same, chunk_size=chunk_size), torch.tensor(0.0, dtype=F64), **TOL
    )
    antipodal = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=F64)  # the minimum: -4t
    torch.testing.assert_close(
        uniformity_loss(antipodal, t=t, chunk_size=chunk_size), torch.tensor(-4 * t, dtype=F64)
    )


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_uniformity_finite_where_the_original_underflows(chunk_size: int | None) -> None:
    far = torch.tensor([[0.0, 0.0], [30.0, 0.0], [0.0, 40.0]], dtype=F64)
    t = 2.0
    assert uniform(far, t).item() == -math.inf  # exp(-1800) underflows to 0: log(0)
    # log((e^{-t 900} + e^{-t 1600} + e^{-t 2500}) / 3), dominated by the closest pair
    expected = -t * 900 + math.log1p(math.exp(-t * 700) + math.exp(-t * 1600)) - math.log(3)
    value, grad = value_and_grads(
        lambda x: uniformity_loss(x, t=t, normalize=False, chunk_size=chunk_size), far
    )
    torch.testing.assert_close(value, torch.tensor(expected, dtype=F64), **TOL)
    assert bool(torch.isfinite(grad).all())


# ---------------------------------------------------------------- diagnostics, reductions, modules
def test_diagnostics_under_no_grad() -> None:
    a, b = (_rows(32, 8, seed=s, dtype=torch.float32).requires_grad_(True) for s in (1, 2))
    with torch.no_grad():
        align_value = alignment_loss(a, b)
        uniform_value = uniformity_loss(a, chunk_size=4)  # the blockwise path too
    assert not align_value.requires_grad and not uniform_value.requires_grad
    torch.testing.assert_close(align_value, alignment_loss(a, b).detach(), rtol=0, atol=0)
    torch.testing.assert_close(uniform_value, uniformity_loss(a, chunk_size=4).detach())


def test_alignment_reductions() -> None:
    a, b = _rows(7, 5, seed=1), _rows(7, 5, seed=2)
    none = alignment_loss(a, b, reduction="none")
    assert none.shape == (7,) and alignment_loss(a, b).shape == ()
    torch.testing.assert_close(none.mean(), alignment_loss(a, b), rtol=0, atol=0)
    torch.testing.assert_close(none.sum(), alignment_loss(a, b, reduction="sum"), rtol=0, atol=0)


def test_modules_match_functional() -> None:
    a, b = _rows(6, 4, seed=1), _rows(6, 4, seed=2)
    for kwargs in ({}, {"alpha": 1.0, "normalize": False, "reduction": "none"}):
        torch.testing.assert_close(
            AlignmentLoss(**kwargs)(a, b), alignment_loss(a, b, **kwargs), rtol=0, atol=0
        )
    for kwargs in ({}, {"t": 0.5, "normalize": False, "chunk_size": 4, "gather_distributed": True}):
        torch.testing.assert_close(
            UniformityLoss(**kwargs)(a), uniformity_loss(a, **kwargs), rtol=0, atol=0
        )
    assert repr(AlignmentLoss(alpha=1)) == (
        "AlignmentLoss(alpha=1.0, normalize=True, gather_distributed=False, reduction='mean')"
    )
    assert repr(UniformityLoss(t=3, chunk_size=None)) == (
        "UniformityLoss(t=3.0, normalize=True, gather_distributed=False, chunk_size=None)"
    )


def test_gather_distributed_without_process_group_is_local() -> None:
    a, b = _rows(5, 3, seed=1), _rows(5, 3, seed=2)
    assert not dist.is_initialized()
    for reduction in ("mean", "sum", "none"):
        torch.testing.assert_close(
            alignment_loss(a, b, gather_distributed=True, reduction=reduction),
            alignment_loss(a, b, reduction=reduction),
            rtol=0,
            atol=0,
        )
    torch.testing.assert_close(
        uniformity_loss(a, gather_distributed=True), uniformity_loss(a), rtol=0, atol=0
    )


def test_uniformity_auto_follows_resolve_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from sslosses.functional import resolve_chunk_size

    blocks: list[int] = []
    original = _chunked_ce._BlockwiseLogSumExp.apply

    def spy(*args: object) -> torch.Tensor:
        blocks.append(args[-1])  # type: ignore[arg-type]
        return original(*args)  # type: ignore[no-any-return]

    monkeypatch.setattr(_chunked_ce._BlockwiseLogSumExp, "apply", spy)
    uniformity_loss(_rows(64, 3, dtype=torch.float32))  # small: the plain path
    uniformity_loss(_rows(4096, 3, dtype=torch.float32))  # rows = cols = 4096
    uniformity_loss(_rows(4096, 3, dtype=torch.float32), chunk_size=None)
    uniformity_loss(_rows(300, 3, dtype=torch.float32), chunk_size=100)
    assert resolve_chunk_size("auto", 4096, 4096, "cpu") == 256
    assert blocks == [256, 100]


# ---------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_float32(dtype: torch.dtype) -> None:
    a, b = _rows(6, 8, seed=1, dtype=dtype), _rows(6, 8, seed=2, dtype=dtype)
    out = alignment_loss(a, b)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, alignment_loss(a.float(), b.float()), rtol=0, atol=0)
    for chunk_size in (None, 2):
        out = uniformity_loss(a, chunk_size=chunk_size)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, uniformity_loss(a.float()), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- errors
def test_rejects_bad_inputs() -> None:
    a, b = _rows(4, 3, seed=1), _rows(4, 3, seed=2)
    with pytest.raises(ValueError, match=r"z_a and z_b must have the same shape, got \(4, 3\)"):
        alignment_loss(a, b[:3])
    with pytest.raises(ValueError, match="z_a must have a batch size of at least 1, got 0"):
        alignment_loss(a[:0], b[:0])
    with pytest.raises(TypeError, match=r"z_b must have a floating-point dtype, got torch.int64"):
        alignment_loss(a, b.long())
    with pytest.raises(ValueError, match=r"z must be a 2-D tensor, got 1-D with shape \(4,\)"):
        uniformity_loss(a[:, 0])
    with pytest.raises(ValueError, match="z must have a batch size of at least 2, got 1"):
        uniformity_loss(a[:1])
    with pytest.raises(ValueError, match=r"z must have at least 1 feature\(s\)"):
        uniformity_loss(a[:, :0])
    with pytest.raises(TypeError, match=r"z must be a torch\.Tensor, got list"):
        UniformityLoss()([[1.0, 2.0], [3.0, 4.0]])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"alpha": 0.0}, ValueError, "alpha must be a finite number > 0, got 0.0"),
        ({"alpha": -2}, ValueError, "alpha must be a finite number > 0, got -2"),
        ({"alpha": math.inf}, ValueError, "alpha must be a finite number > 0, got inf"),
        ({"alpha": "2"}, TypeError, "alpha must be a float, got str"),
        ({"normalize": None}, TypeError, "normalize must be a bool, got NoneType"),
        ({"reduction": "avg"}, ValueError, "reduction must be one of 'none', 'mean', 'sum'"),
        ({"gather_distributed": 1}, TypeError, "gather_distributed must be a bool, got int"),
    ],
)
def test_alignment_rejects_bad_options(kwargs, error: type[Exception], message: str) -> None:
    a, b = _rows(4, 3, seed=1), _rows(4, 3, seed=2)
    with pytest.raises(error, match=message):
        alignment_loss(a, b, **kwargs)
    with pytest.raises(error, match=message):
        AlignmentLoss(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"t": 0.0}, ValueError, "t must be a finite number > 0, got 0.0"),
        ({"t": math.nan}, ValueError, "t must be a finite number > 0, got nan"),
        ({"t": True}, TypeError, "t must be a float, got bool"),
        ({"normalize": 0}, TypeError, "normalize must be a bool, got int"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be an int > 0, got 0"),
        ({"chunk_size": "big"}, ValueError, "chunk_size must be an int > 0, 'auto' or None"),
        ({"gather_distributed": "yes"}, TypeError, "gather_distributed must be a bool, got str"),
    ],
)
def test_uniformity_rejects_bad_options(kwargs, error: type[Exception], message: str) -> None:
    z = _rows(4, 3)
    with pytest.raises(error, match=message):
        uniformity_loss(z, **kwargs)
    with pytest.raises(error, match=message):
        UniformityLoss(**kwargs)


# ---------------------------------------------------------------- distributed (W = 2 and 3)
SIZES = {2: [3, 5], 3: [3, 1, 4]}  # unequal per-rank batch sizes, rank 0's rows first
ALIGN_OPTIONS = [("mean", 2.0), ("sum", 1.5), ("none", 2.0)]
UNIFORM_OPTIONS = [(None, True), (2, True), (3, False)]  # (chunk_size, normalize)


def _global_views(world: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = sum(SIZES[world])
    return _rows(n, 5, seed=123), _rows(n, 5, seed=124)


def _slice(rank: int, sizes: list[int]) -> slice:
    return slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))


def _weights(rows: slice) -> torch.Tensor:
    return torch.linspace(0.5, 1.5, 16, dtype=F64)[rows]  # by global row, for "none"


def _dist_case(rank: int, world: int) -> tuple[list[Any], list[Any]]:
    a_all, b_all = _global_views(world)
    rows = _slice(rank, SIZES[world])
    a, b = a_all[rows], b_all[rows]
    aligned = []
    for reduction, alpha in ALIGN_OPTIONS:
        fn = AlignmentLoss(alpha=alpha, reduction=reduction, gather_distributed=True)
        if reduction == "none":
            aligned.append(value_and_grads(lambda x, y, f=fn: f(x, y) * _weights(rows), a, b))
        else:
            aligned.append(value_and_grads(fn, a, b))
    uniform_results = []
    for chunk_size, normalize in UNIFORM_OPTIONS:
        module = UniformityLoss(
            t=1.5, normalize=normalize, chunk_size=chunk_size, gather_distributed=True
        )
        uniform_results.append(value_and_grads(module, a / 2))
    return aligned, uniform_results


def test_distributed_matches_single_process(dist_pool_w: Any) -> None:
    world = dist_pool_w.world_size
    sizes = SIZES[world]
    results = dist_pool_w.run(_dist_case)
    a, b = _global_views(world)
    everything = slice(0, sum(sizes))
    for i, (reduction, alpha) in enumerate(ALIGN_OPTIONS):
        if reduction == "none":
            expected = value_and_grads(
                lambda x, y, p=alpha: (
                    alignment_loss(x, y, alpha=p, reduction="none") * _weights(everything)
                ),
                a,
                b,
            )
            torch.testing.assert_close(torch.cat([r[0][i][0] for r in results]), expected[0])
            scale = 1
        else:
            expected = value_and_grads(
                lambda x, y, red=reduction, p=alpha: alignment_loss(x, y, alpha=p, reduction=red),
                a,
                b,
            )
            mean = torch.stack([r[0][i][0] for r in results]).mean()
            torch.testing.assert_close(mean, expected[0], **TOL, msg=reduction)
            scale = world
        for rank in range(world):
            for k in (1, 2):
                torch.testing.assert_close(
                    results[rank][0][i][k] / scale, expected[k][_slice(rank, sizes)], **TOL
                )
    for i, (chunk_size, normalize) in enumerate(UNIFORM_OPTIONS):
        value, grad = value_and_grads(
            lambda x, n=normalize: uniformity_loss(x, t=1.5, normalize=n), a / 2
        )
        for rank in range(world):  # every rank returns the global value
            torch.testing.assert_close(results[rank][1][i][0], value, **TOL)
            torch.testing.assert_close(
                results[rank][1][i][1] / world,
                grad[_slice(rank, sizes)],
                **TOL,
                msg=f"chunk_size={chunk_size}, normalize={normalize}, rank {rank}",
            )
