"""KoLeo (DINOv2): reference, invariants, blockwise search, ties, numerics, distributed, errors."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.distributed as dist
from helpers import assert_all_close, assert_ranks_match_single_process, value_and_grads
from hypothesis import given
from hypothesis import strategies as st
from strategies import SEEDS, embeddings, positive_scales

from benchmarks.references import koleo
from sslosses import KoLeoLoss
from sslosses.functional import koleo_loss
from sslosses.koleo import _nearest_neighbours

F64 = torch.float64
TOL = {"rtol": 1e-10, "atol": 1e-10}
CHUNKS = st.none() | st.integers(min_value=1, max_value=20)


def _rows(n: int, d: int, *, seed: int = 0, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------- reference and exactness
@given(embeddings(min_n=2, max_n=12, min_d=2, count=1), CHUNKS)
def test_matches_dinov2_reference(rows: tuple[torch.Tensor], chunk_size: int | None) -> None:
    (x,) = rows
    ours = value_and_grads(lambda t: koleo_loss(t, chunk_size=chunk_size), x)
    assert_all_close(ours, value_and_grads(koleo, x), **TOL)


@pytest.mark.parametrize("eps", [1e-3, 0.1])
def test_matches_reference_at_other_eps(eps: float) -> None:
    x = _rows(9, 4)
    x[4] = x[1]  # a duplicate: the distance is eps * sqrt(D), where eps matters most
    ours = value_and_grads(lambda t: koleo_loss(t, eps=eps), x)
    assert_all_close(ours, value_and_grads(lambda t: koleo(t, eps=eps, pairwise_eps=eps), x), **TOL)


def test_gradient_reaches_the_neighbour() -> None:
    # three rows on a circle: 0 and 1 are each other's neighbour, row 2's neighbour is 1
    angles = torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    x = torch.stack([angles.cos(), angles.sin()], dim=1).requires_grad_(True)
    per_row = koleo_loss(x, reduction="none")
    (grad,) = torch.autograd.grad(per_row[2], [x])
    assert grad[0].abs().max() == 0  # row 0 plays no part in row 2's term
    assert grad[1].abs().max() > 0.1 and grad[2].abs().max() > 0.1  # both ends of the distance


# ---------------------------------------------------------------- blockwise search
@pytest.mark.parametrize("chunk_size", [1, 2, 4, 5, 12, 13, 50])
def test_chunked_equals_plain(chunk_size: int) -> None:
    x = 2 * _rows(13, 6, seed=2)
    for reduction in ("mean", "sum", "none"):
        plain = value_and_grads(
            lambda t, r=reduction: koleo_loss(t, reduction=r, chunk_size=None), x
        )
        chunked = value_and_grads(
            lambda t, r=reduction: koleo_loss(t, reduction=r, chunk_size=chunk_size), x
        )
        assert_all_close(chunked, plain, rtol=0.0, atol=0.0)  # the same neighbours: the same bits


@given(embeddings(min_n=2, max_n=30, count=1), st.integers(1, 31), SEEDS)
def test_blockwise_search_finds_the_plain_neighbours(rows, chunk_size: int, seed: int) -> None:
    (x,) = rows
    n = x.shape[0]
    x = torch.cat([x, x[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:3]]])
    z = torch.nn.functional.normalize(x, dim=1)  # with duplicate rows: exact ties
    plain = _nearest_neighbours(z, z, 0, None)
    chunked = _nearest_neighbours(z, z, 0, chunk_size)
    dots = (z @ z.T).fill_diagonal_(-math.inf)
    best = dots.max(dim=1).values
    rows = torch.arange(len(z))
    for found in (plain, chunked):
        assert bool((found != rows).all())  # never itself
        # a maximum: to the last bits, since a matmul of another shape may round differently
        torch.testing.assert_close(dots[rows, found], best, rtol=0.0, atol=1e-12)
    # Where the two searches differ, they found two copies of one row (an exact tie, whose
    # inner products the two matmul shapes may round apart in the last bit).
    differ = plain != chunked
    assert torch.equal(z[plain[differ]], z[chunked[differ]])


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_duplicates_are_finite_and_take_the_lowest_index(chunk_size: int | None) -> None:
    x = _rows(6, 4, seed=3)
    x[5] = x[2]
    x[4] = 4 * x[2]  # the same direction: after normalization the same bits as row 2
    eps = 1e-8
    z = torch.nn.functional.normalize(x, dim=1)
    assert torch.equal(z[4], z[2]) and torch.equal(z[5], z[2])
    assert _nearest_neighbours(z, z, 0, chunk_size)[[2, 4, 5]].tolist() == [4, 2, 2]
    loss, grad = value_and_grads(
        lambda t: koleo_loss(t, reduction="none", chunk_size=chunk_size), x
    )
    bound = -math.log(eps * math.sqrt(4) + eps)  # distance eps * sqrt(D)
    torch.testing.assert_close(loss[[2, 4, 5]], torch.full((3,), bound, dtype=F64), **TOL)
    assert bool(torch.isfinite(grad).all())
    assert bool((loss <= -math.log(eps)).all())
    # the original takes the same (first) neighbour among the duplicates: same value, gradient
    ours = value_and_grads(lambda t: koleo_loss(t, chunk_size=chunk_size), x)
    assert_all_close(ours, value_and_grads(koleo, x), **TOL)


def test_all_rows_equal_give_minus_log_eps_sqrt_d() -> None:
    x = torch.full((5, 9), 0.3, dtype=F64)
    expected = -math.log(1e-8 * 3 + 1e-8)
    torch.testing.assert_close(koleo_loss(x), torch.tensor(expected, dtype=F64), **TOL)


def test_orthonormal_rows() -> None:
    x = torch.eye(6, dtype=F64)[:4]  # every pair at distance sqrt(2)
    expected = -math.log(math.sqrt(2 + 1e-16 * 6) + 1e-8)  # ||e_i - e_j + eps||: eps counts
    torch.testing.assert_close(koleo_loss(x, chunk_size=3), torch.tensor(expected, dtype=F64))


def test_antipodal_pair_differs_from_the_original_as_documented() -> None:
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=F64)  # inner product exactly -1
    ours = koleo_loss(x, reduction="none")
    # we exclude the row itself (-inf): each row pairs with the other, distance ~2
    torch.testing.assert_close(ours, -torch.log(torch.tensor([2.0, 2.0], dtype=F64) + 1e-8))
    # the original's diagonal of -1 ties with the other row and torch.max takes the first:
    # row 0 pairs with itself (distance eps * sqrt(2)), row 1 with row 0
    row0 = -math.log(1e-8 * math.sqrt(2) + 1e-8)
    row1 = -math.log(math.hypot(2.0 - 1e-8, 1e-8) + 1e-8)
    torch.testing.assert_close(koleo(x), torch.tensor((row0 + row1) / 2, dtype=F64))


# ---------------------------------------------------------------- invariants
@given(embeddings(min_n=2, max_n=12, min_d=2, count=1), SEEDS, CHUNKS)
def test_invariant_to_row_permutation(rows, seed: int, chunk_size: int | None) -> None:
    (x,) = rows
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    per_row = koleo_loss(x, reduction="none", chunk_size=chunk_size)
    permuted = koleo_loss(x[perm], reduction="none", chunk_size=chunk_size)
    torch.testing.assert_close(permuted, per_row[perm], **TOL)


@given(
    embeddings(min_n=2, max_n=12, min_d=2, count=1),
    st.lists(positive_scales(), min_size=12, max_size=12),
)
def test_invariant_to_positive_row_scaling(rows, scales: list[float]) -> None:
    (x,) = rows
    s = torch.tensor(scales[: x.shape[0]], dtype=F64)
    scaled = koleo_loss(x * s[:, None], reduction="none")
    torch.testing.assert_close(scaled, koleo_loss(x, reduction="none"), **TOL)


# ---------------------------------------------------------------- reductions, module
def test_reductions() -> None:
    x = _rows(7, 5)
    none = koleo_loss(x, reduction="none")
    assert none.shape == (7,)
    assert koleo_loss(x).shape == () and koleo_loss(x, reduction="sum").shape == ()
    torch.testing.assert_close(none.mean(), koleo_loss(x), rtol=0, atol=0)
    torch.testing.assert_close(none.sum(), koleo_loss(x, reduction="sum"), rtol=0, atol=0)


def test_gather_distributed_without_process_group_is_local() -> None:
    x = _rows(5, 3)
    assert not dist.is_initialized()
    for reduction in ("mean", "sum", "none"):
        torch.testing.assert_close(
            koleo_loss(x, gather_distributed=True, reduction=reduction),
            koleo_loss(x, reduction=reduction),
            rtol=0,
            atol=0,
        )


def test_auto_follows_resolve_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    import sslosses.koleo
    from sslosses.functional import resolve_chunk_size

    blocks: list[int | None] = []
    search = sslosses.koleo._nearest_neighbours

    def spy(z: torch.Tensor, rows: torch.Tensor, offset: int, block: int | None) -> torch.Tensor:
        blocks.append(block)
        return search(z, rows, offset, block)

    monkeypatch.setattr(sslosses.koleo, "_nearest_neighbours", spy)
    small, large = _rows(64, 3, dtype=torch.float32), _rows(4096, 3, dtype=torch.float32)
    koleo_loss(small)
    koleo_loss(large)
    koleo_loss(large, chunk_size=None)
    koleo_loss(large, chunk_size=100)
    assert resolve_chunk_size("auto", 4096, 4096, "cpu") == 256  # 2**20 / 4096 rows per block
    assert blocks == [None, 256, None, 100]


# ---------------------------------------------------------------- dtypes, autocast, compile
def test_double_backward_matches_reference() -> None:
    x = _rows(7, 4, seed=5).requires_grad_(True)
    penalties = []
    for fn in (lambda t: koleo_loss(t, chunk_size=3), koleo):
        (grad,) = torch.autograd.grad(fn(x), [x], create_graph=True)
        (second,) = torch.autograd.grad(grad.square().sum(), [x])
        penalties.append(second)
    torch.testing.assert_close(penalties[0], penalties[1], rtol=1e-8, atol=1e-8)


# ---------------------------------------------------------------- errors
def test_rejects_bad_inputs() -> None:
    x = _rows(4, 3)
    with pytest.raises(ValueError, match=r"x must be a 2-D tensor, got 1-D with shape \(4,\)"):
        koleo_loss(x[:, 0])
    with pytest.raises(ValueError, match=r"x must be a 2-D tensor, got 3-D with shape \(1, 4, 3\)"):
        koleo_loss(x[None])
    with pytest.raises(ValueError, match="x must have a batch size of at least 2, got 1"):
        koleo_loss(x[:1])
    with pytest.raises(ValueError, match="x must have a batch size of at least 2, got 0"):
        koleo_loss(x[:0])
    with pytest.raises(
        ValueError, match=r"x must have at least 1 feature\(s\) .*got shape \(4, 0\)"
    ):
        koleo_loss(x[:, :0])
    with pytest.raises(TypeError, match=r"x must have a floating-point dtype, got torch\.int64"):
        koleo_loss(x.long())
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor, got list"):
        koleo_loss([[1.0, 2.0], [3.0, 4.0]])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor, got NoneType"):
        KoLeoLoss()(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"eps": 0.0}, ValueError, "eps must be a finite number > 0, got 0.0"),
        ({"eps": -1e-8}, ValueError, "eps must be a finite number > 0, got -1e-08"),
        ({"eps": math.nan}, ValueError, "eps must be a finite number > 0, got nan"),
        ({"eps": "1e-8"}, TypeError, "eps must be a float, got str"),
        ({"eps": True}, TypeError, "eps must be a float, got bool"),
        ({"reduction": "avg"}, ValueError, "reduction must be one of 'none', 'mean', 'sum'"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be an int > 0, got 0"),
        ({"chunk_size": 2.0}, TypeError, "chunk_size must be an int, got float"),
        ({"chunk_size": "big"}, ValueError, "chunk_size must be an int > 0, 'auto' or None"),
        ({"gather_distributed": 1}, TypeError, "gather_distributed must be a bool, got int"),
    ],
)
def test_rejects_bad_options(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    x = _rows(4, 3)
    with pytest.raises(error, match=message):
        koleo_loss(x, **kwargs)
    with pytest.raises(error, match=message):
        KoLeoLoss(**kwargs)


# ---------------------------------------------------------------- distributed (W = 2 and 3)
SIZES = {2: [3, 5], 3: [3, 1, 4]}  # unequal per-rank batch sizes, rank 0's rows first
OPTIONS = [(r, c) for r in ("mean", "sum", "none") for c in (None, 2)]


def _global_rows(world: int) -> torch.Tensor:
    return _rows(sum(SIZES[world]), 5, seed=123)


def _slice(rank: int, sizes: list[int]) -> slice:
    return slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))


def _dist_case(rank: int, world: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x = _global_rows(world)[_slice(rank, SIZES[world])]
    out = []
    for reduction, chunk_size in OPTIONS:
        fn = KoLeoLoss(gather_distributed=True, reduction=reduction, chunk_size=chunk_size)
        if reduction == "none":  # weights by global row, so that each row's gradient counts
            weights = torch.linspace(0.5, 1.5, 16, dtype=F64)[_slice(rank, SIZES[world])]
            out.append(value_and_grads(lambda t, f=fn, w=weights: f(t) * w, x))
        else:
            out.append(value_and_grads(fn, x))
    return out


def test_distributed_matches_single_process(dist_pool_w: Any) -> None:
    world = dist_pool_w.world_size
    sizes = SIZES[world]
    results = dist_pool_w.run(_dist_case)
    x = _global_rows(world)
    weights = torch.linspace(0.5, 1.5, 16, dtype=F64)[: sum(sizes)]
    for i, (reduction, chunk_size) in enumerate(OPTIONS):
        if reduction == "none":  # weighted by global row, as in _dist_case
            single = value_and_grads(lambda t, r=reduction: koleo_loss(t, reduction=r) * weights, x)
        else:
            single = value_and_grads(lambda t, r=reduction: koleo_loss(t, reduction=r), x)
        assert_ranks_match_single_process(
            [r[i] for r in results],
            single,
            sizes,
            per_row=reduction == "none",
            msg=f"{reduction}, chunk_size={chunk_size}",
            **TOL,
        )
