"""NNCLR: neighbour search, the paper's loss, invariants, no side effects, resume, distributed."""

from __future__ import annotations

import io
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
from torch import nn

import sslosses.nnclr
from benchmarks.references import nnclr, nnclr_nn
from sslosses import MoCoQueue, NNCLRLoss
from sslosses.functional import nearest_neighbours, nnclr_loss, resolve_chunk_size

F64 = torch.float64
TOL = {"rtol": 1e-10, "atol": 1e-10}
P_AB = (2, 3)  # the predictions p_a, p_b among (z_a, z_b, p_a, p_b): the gradients compared
CHUNKS = st.none() | st.integers(min_value=1, max_value=20)


def _rows(n: int, d: int, *, seed: int = 0, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _views(
    n: int = 7, d: int = 5, *, seed: int = 0, dtype: torch.dtype = F64
) -> list[torch.Tensor]:
    """``z_a, z_b, p_a, p_b``: projections and predictions of two views."""
    return [_rows(n, d, seed=seed + i, dtype=dtype) for i in range(4)]


# ---------------------------------------------------------------- reference and exactness
@given(
    embeddings(min_n=2, max_n=10, min_d=2, max_d=8, count=4),
    st.integers(1, 30),
    SEEDS,
    st.booleans(),
    CHUNKS,
)
def test_matches_paper_reference(
    views: tuple[torch.Tensor, ...], k: int, seed: int, symmetric: bool, chunk_size: int | None
) -> None:
    support = _rows(k, views[0].shape[1], seed=seed)
    ours = value_and_grads(
        lambda *v: nnclr_loss(*v, support, symmetric=symmetric, chunk_size=chunk_size),
        *views,
        grad_of=P_AB,
    )
    theirs = value_and_grads(
        lambda *v: nnclr(*v, support, symmetric=symmetric), *views, grad_of=P_AB
    )
    assert_all_close(ours, theirs, **TOL)


@pytest.mark.parametrize("temperature", [0.05, 0.5, 2.0])
def test_matches_reference_at_other_temperatures(temperature: float) -> None:
    views, support = _views(), _rows(12, 5, seed=9)
    for symmetric in (True, False):
        ours = value_and_grads(
            lambda *v, s=symmetric: nnclr_loss(*v, support, temperature=temperature, symmetric=s),
            *views,
            grad_of=P_AB,
        )
        theirs = value_and_grads(
            lambda *v, s=symmetric: nnclr(*v, support, temperature=temperature, symmetric=s),
            *views,
            grad_of=P_AB,
        )
        assert_all_close(ours, theirs, **TOL)


def test_symmetric_averages_the_column_term() -> None:
    views, support = _views(), _rows(12, 5, seed=9)
    z_a, z_b, p_a, p_b = views
    nn_a, nn_b = nnclr_nn(z_a, support), nnclr_nn(z_b, support)
    labels = torch.arange(7)

    def columns(nn_rows: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        logits = F.normalize(nn_rows, dim=1) @ F.normalize(p, dim=1).T / 0.1
        return F.cross_entropy(logits.T, labels)  # each prediction over the neighbours

    rows_only = nnclr_loss(*views, support, symmetric=False)
    expected = (rows_only + (columns(nn_a, p_b) + columns(nn_b, p_a)) / 2) / 2
    torch.testing.assert_close(nnclr_loss(*views, support), expected, **TOL)


@pytest.mark.parametrize("chunk_size", [None, 1, 3])
@pytest.mark.parametrize("symmetric", [True, False])
def test_gradcheck(chunk_size: int | None, symmetric: bool) -> None:
    z_a, z_b, p_a, p_b = _views(5, 3, seed=1)
    support = _rows(9, 3, seed=2)
    p_a.requires_grad_(True)
    p_b.requires_grad_(True)

    def fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return nnclr_loss(
            z_a, z_b, a, b, support, symmetric=symmetric, reduction="none", chunk_size=chunk_size
        )

    assert torch.autograd.gradcheck(fn, (p_a, p_b))


def test_no_gradient_reaches_projections_or_support() -> None:
    z_a, z_b, p_a, p_b = (x.requires_grad_(True) for x in _views())
    support = _rows(12, 5, seed=9).requires_grad_(True)
    loss = nnclr_loss(z_a, z_b, p_a, p_b, support)
    grads = torch.autograd.grad(loss, [z_a, z_b, support, p_a, p_b], allow_unused=True)
    assert grads[0] is None and grads[1] is None and grads[2] is None
    assert all(g is not None and bool(g.abs().sum() > 0) for g in grads[3:])


def test_uniform_similarities_give_log_n() -> None:
    z_a, z_b, _, _ = _views(6)
    flat = torch.ones(6, 5, dtype=F64)
    one = _rows(1, 5, seed=4)  # one support row: every neighbour is that row
    for symmetric in (True, False):
        value = nnclr_loss(z_a, z_b, flat, flat, one, symmetric=symmetric)
        torch.testing.assert_close(value, torch.tensor(math.log(6), dtype=F64), **TOL)


def test_small_temperature_stays_finite() -> None:
    z_a, z_b, p_a, p_b = (100 * x for x in _views(dtype=torch.float32))
    support = torch.cat([z_a, z_b])  # neighbours aligned with the predictions: large logits
    for chunk_size in (None, 2):
        leaves = [p_a.clone().requires_grad_(True), p_b.clone().requires_grad_(True)]
        loss = nnclr_loss(z_a, z_b, *leaves, support, temperature=1e-3, chunk_size=chunk_size)
        grads = torch.autograd.grad(loss, leaves)
        assert bool(torch.isfinite(loss)) and all(bool(torch.isfinite(g).all()) for g in grads)


@pytest.mark.parametrize("chunk_size", [1, 2, 4, 7, 50])
def test_chunked_loss_equals_plain(chunk_size: int) -> None:
    views, support = _views(7, 5, seed=3), _rows(23, 5, seed=4)
    for reduction in ("mean", "sum", "none"):
        plain = value_and_grads(
            lambda *v, r=reduction: nnclr_loss(*v, support, reduction=r, chunk_size=None),
            *views,
            grad_of=P_AB,
        )
        chunked = value_and_grads(
            lambda *v, r=reduction: nnclr_loss(*v, support, reduction=r, chunk_size=chunk_size),
            *views,
            grad_of=P_AB,
        )
        assert_all_close(chunked, plain, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- the neighbour search
def test_nearest_neighbours_match_the_papers_l2_form() -> None:
    queries, support = _rows(11, 6, seed=5), 3 * _rows(40, 6, seed=6)
    expected = nnclr_nn(queries, support)
    for chunk_size in (None, 1, 3, 40, "auto"):
        got = nearest_neighbours(queries, support, chunk_size=chunk_size)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


@given(embeddings(min_n=0, max_n=12, count=1), st.integers(1, 40), SEEDS, st.integers(1, 45))
def test_chunked_search_finds_the_plain_neighbours(rows, k: int, seed: int, chunk: int) -> None:
    (queries,) = rows
    support = _rows(k, queries.shape[1], seed=seed)
    gen = torch.Generator().manual_seed(seed)
    support = torch.cat([support, support[torch.randint(0, k, (3,), generator=gen)]])  # copies
    plain, i_plain = nearest_neighbours(queries, support, chunk_size=None, return_indices=True)
    chunked, i_chunk = nearest_neighbours(queries, support, chunk_size=chunk, return_indices=True)
    sims = F.normalize(queries, dim=1) @ F.normalize(support, dim=1).T  # (N, K)
    best = sims.max(dim=1).values if len(queries) else torch.empty(0, dtype=F64)
    picked = torch.arange(len(queries))
    for index in (i_plain, i_chunk):
        torch.testing.assert_close(sims[picked, index], best, rtol=0.0, atol=1e-12)
    # where the two differ they found copies of one row (an exact tie rounded apart)
    torch.testing.assert_close(plain, chunked, rtol=0, atol=0)


@given(embeddings(min_n=1, max_n=20, min_d=2, count=1), SEEDS, CHUNKS)
def test_a_row_of_the_support_set_is_its_own_neighbour(rows, seed: int, chunk) -> None:
    (support,) = rows
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, len(support), (5,), generator=gen)
    found, index = nearest_neighbours(support[pick], support, chunk_size=chunk, return_indices=True)
    assert torch.equal(found, support[pick])
    assert torch.equal(index, pick)  # random rows have distinct directions


@given(embeddings(min_n=1, max_n=10, min_d=2, count=1), st.integers(1, 30), SEEDS, CHUNKS)
def test_invariant_to_support_permutation(rows, k: int, seed: int, chunk) -> None:
    (queries,) = rows
    support = _rows(k, queries.shape[1], seed=seed)
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(seed))
    found, index = nearest_neighbours(queries, support, chunk_size=chunk, return_indices=True)
    permuted, p_index = nearest_neighbours(
        queries, support[perm], chunk_size=chunk, return_indices=True
    )
    assert torch.equal(permuted, found)  # the same rows (no ties among random rows)
    assert torch.equal(perm[p_index], index)


@given(
    embeddings(min_n=1, max_n=10, min_d=2, count=1),
    st.integers(1, 30),
    SEEDS,
    st.lists(positive_scales(), min_size=40, max_size=40),
)
def test_invariant_to_positive_row_scaling(rows, k: int, seed: int, scales: list[float]) -> None:
    (queries,) = rows
    support = _rows(k, queries.shape[1], seed=seed)
    s = torch.tensor(scales, dtype=F64)
    _, index = nearest_neighbours(queries, support, return_indices=True)
    _, scaled = nearest_neighbours(
        queries * s[: len(queries), None], support * s[-k:, None], return_indices=True
    )
    assert torch.equal(scaled, index)


@pytest.mark.parametrize("chunk_size", [None, 1, 2, 3])
def test_ties_take_the_lowest_index(chunk_size: int | None) -> None:
    support = torch.tensor(
        [[0.0, 1.0], [1.0, 0.0], [2.0, 0.0], [1.0, 0.0], [0.0, -1.0]], dtype=F64
    )  # rows 1, 2 and 3 share a direction
    queries = torch.tensor([[1.0, 0.1], [5.0, -0.1], [0.0, 0.0], [-1.0, 0.0]], dtype=F64)
    _, index = nearest_neighbours(queries, support, chunk_size=chunk_size, return_indices=True)
    # a zero query ties everywhere (similarity 0): row 0; (-1, 0) ties rows 0 and 4 at 0
    assert index.tolist() == [1, 1, 0, 0]


def test_neighbours_are_detached_copies_in_the_support_dtype() -> None:
    support = _rows(10, 4, seed=1, dtype=torch.float32).requires_grad_(True)
    queries = _rows(3, 4, seed=2, dtype=torch.float16)
    rows, index = nearest_neighbours(queries, support, return_indices=True)
    assert rows.dtype == torch.float32 and index.dtype == torch.int64 and not rows.requires_grad
    assert torch.equal(rows, support.detach()[index])
    rows.add_(1.0)  # a copy: the support set is untouched
    assert not torch.equal(rows, support.detach()[index])
    assert nearest_neighbours(queries[:0], support).shape == (0, 4)


def test_search_computes_in_float32_under_autocast() -> None:
    queries, support = _rows(6, 8, seed=3, dtype=torch.float32), _rows(50, 8, seed=4)
    support = support.float()
    expected = nearest_neighbours(queries, support, return_indices=True)[1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = nearest_neighbours(queries, support, return_indices=True)[1]
    assert torch.equal(got, expected)
    halves = nearest_neighbours(queries.half(), support.half(), return_indices=True)[1]
    floats = nearest_neighbours(queries.half().float(), support.half().float(), return_indices=True)
    assert torch.equal(halves, floats[1])


def test_nearest_neighbours_compile_fullgraph() -> None:
    queries, support = _rows(5, 4, seed=1, dtype=torch.float32), _rows(30, 4, seed=2).float()
    compiled = torch.compile(nearest_neighbours, fullgraph=True)
    for chunk_size in ("auto", 7):
        got = compiled(queries, support, chunk_size=chunk_size)
        assert torch.equal(got, nearest_neighbours(queries, support, chunk_size=None))


def test_auto_follows_resolve_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    blocks: list[int | None] = []
    search = sslosses.nnclr._search

    def spy(q: torch.Tensor, s: torch.Tensor, block: int | None) -> torch.Tensor:
        blocks.append(block)
        return search(q, s, block)

    monkeypatch.setattr(sslosses.nnclr, "_search", spy)
    queries = _rows(64, 3, dtype=torch.float32)
    small, large = _rows(100, 3).float(), _rows(40000, 3).float()
    nearest_neighbours(queries, small)
    nearest_neighbours(queries, large)
    nearest_neighbours(queries, large, chunk_size=None)
    nearest_neighbours(queries, large, chunk_size=100)
    nnclr_loss(queries, queries, queries, queries, large)  # both views: 128 queries
    assert resolve_chunk_size("auto", 40000, 64, "cpu") == 2**14  # 2**20 / 64 support rows
    assert resolve_chunk_size("auto", 40000, 128, "cpu") == 2**13
    assert blocks == [None, 2**14, None, 100, 2**13]


# ---------------------------------------------------------------- no side effects, resume
def test_the_loss_leaves_the_queue_alone() -> None:
    queue = MoCoQueue(16, 5, dtype=F64)
    queue.push(_rows(6, 5, seed=8))
    before = {
        k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in queue.state_dict().items()
    }
    views = _views()
    NNCLRLoss()(*views, queue.features())
    nnclr_loss(*views, queue.features(), symmetric=False, chunk_size=2)
    after = queue.state_dict()
    assert len(queue) == 6 and after["_extra_state"] == before["_extra_state"]
    assert torch.equal(after["queue"], before["queue"])


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.projector = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
        self.predictor = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))


def _train(model: _Model, opt: torch.optim.Optimizer, queue: MoCoQueue, steps: range) -> list:
    losses = []
    for step in steps:
        x = _rows(4, 6, seed=100 + step, dtype=torch.float32)
        z_a, z_b = model.projector(x), model.projector(x.flip(1))
        p_a, p_b = model.predictor(z_a), model.predictor(z_b)
        support = queue.features() if len(queue) else z_a.detach()  # the queue starts empty
        loss = nnclr_loss(z_a, z_b, p_a, p_b, support, chunk_size=3)
        opt.zero_grad()
        loss.backward()
        opt.step()
        queue.push(z_a.detach())  # after the loss, as the paper
        losses.append(loss.detach())
    return losses


def _fresh() -> tuple[_Model, torch.optim.Optimizer, MoCoQueue]:
    model = _Model()
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), MoCoQueue(10, 4)


def test_a_resumed_run_continues_identically() -> None:
    torch.manual_seed(0)
    model, opt, queue = _fresh()
    _train(model, opt, queue, range(3))  # the queue (10 rows, batches of 4) wraps around
    buffer = io.BytesIO()
    torch.save(
        {"model": model.state_dict(), "opt": opt.state_dict(), "queue": queue.state_dict()},
        buffer,
    )
    expected = _train(model, opt, queue, range(3, 6))

    resumed, resumed_opt, resumed_queue = _fresh()  # other random weights until loaded
    buffer.seek(0)
    state = torch.load(buffer)
    resumed.load_state_dict(state["model"])
    resumed_opt.load_state_dict(state["opt"])
    resumed_queue.load_state_dict(state["queue"])
    got = _train(resumed, resumed_opt, resumed_queue, range(3, 6))
    assert [x.item() for x in got] == [x.item() for x in expected]
    for a, b in zip(resumed.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(resumed_queue.features(), queue.features())


# ---------------------------------------------------------------- reductions, module
def test_reductions() -> None:
    views, support = _views(), _rows(12, 5, seed=9)
    none = nnclr_loss(*views, support, reduction="none")
    assert none.shape == (7,)
    torch.testing.assert_close(none.mean(), nnclr_loss(*views, support), rtol=0, atol=0)
    torch.testing.assert_close(
        none.sum(), nnclr_loss(*views, support, reduction="sum"), rtol=1e-15, atol=1e-15
    )


def test_module_matches_functional() -> None:
    views, support = _views(), _rows(12, 5, seed=9)
    for kwargs in (
        {},
        {"temperature": 0.5, "symmetric": False, "reduction": "none", "chunk_size": 3},
        {"reduction": "sum", "gather_distributed": True, "chunk_size": None},
    ):
        module = NNCLRLoss(**kwargs)
        torch.testing.assert_close(
            module(*views, support), nnclr_loss(*views, support, **kwargs), rtol=0, atol=0
        )
    assert repr(NNCLRLoss(temperature=0.2, symmetric=False, chunk_size=64)) == (
        "NNCLRLoss(temperature=0.2, symmetric=False, gather_distributed=False, "
        "reduction='mean', chunk_size=64)"
    )


def test_gather_distributed_without_process_group_is_local() -> None:
    views, support = _views(), _rows(12, 5, seed=9)
    assert not dist.is_initialized()
    for reduction in ("mean", "none"):
        torch.testing.assert_close(
            nnclr_loss(*views, support, gather_distributed=True, reduction=reduction),
            nnclr_loss(*views, support, reduction=reduction),
            rtol=0,
            atol=0,
        )


# ---------------------------------------------------------------- errors
def test_nearest_neighbours_rejects_bad_inputs() -> None:
    q, s = _rows(4, 3), _rows(6, 3)
    with pytest.raises(ValueError, match=r"queries must be a 2-D tensor, got 1-D"):
        nearest_neighbours(q[0], s)
    with pytest.raises(ValueError, match=r"support must be a 2-D tensor, got 3-D"):
        nearest_neighbours(q, s[None])
    with pytest.raises(
        ValueError, match=r"support must have shape \(K, 3\) to match the embedding dim D of "
    ):
        nearest_neighbours(q, _rows(6, 2))
    with pytest.raises(ValueError, match=r"support must hold at least 1 row, got shape \(0, 3\)"):
        nearest_neighbours(q, s[:0])
    with pytest.raises(ValueError, match=r"queries must have at least 1 feature"):
        nearest_neighbours(q[:, :0], s[:, :0])
    with pytest.raises(
        TypeError, match=r"queries must have a floating-point dtype, got torch\.int64"
    ):
        nearest_neighbours(q.long(), s)
    with pytest.raises(TypeError, match=r"support must be a torch\.Tensor, got list"):
        nearest_neighbours(q, [[1.0, 2.0, 3.0]])  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="chunk_size must be an int > 0, got 0"):
        nearest_neighbours(q, s, chunk_size=0)
    with pytest.raises(TypeError, match="return_indices must be a bool, got int"):
        nearest_neighbours(q, s, return_indices=1)  # type: ignore[call-overload]


def test_loss_rejects_bad_inputs() -> None:
    z_a, z_b, p_a, p_b = _views(4, 3)
    s = _rows(6, 3)
    with pytest.raises(ValueError, match=r"z_a and z_b must have the same shape"):
        nnclr_loss(z_a, z_b[:3], p_a, p_b, s)
    with pytest.raises(ValueError, match=r"p_a and p_b must have the same shape"):
        nnclr_loss(z_a, z_b, p_a, p_b[:, :2], s)
    with pytest.raises(ValueError, match=r"z_a and p_a must have the same shape, got \(4, 3\) and"):
        nnclr_loss(z_a, z_b, p_a[:3], p_b[:3], s)
    with pytest.raises(
        ValueError, match=r"support must have shape \(K, 3\) .* of z_a, got \(6, 2\)"
    ):
        nnclr_loss(z_a, z_b, p_a, p_b, s[:, :2])
    with pytest.raises(
        ValueError, match=r"support must hold at least 1 row, got shape \(0, 3\) .*push a batch"
    ):
        nnclr_loss(z_a, z_b, p_a, p_b, MoCoQueue(8, 3, dtype=F64).features())
    with pytest.raises(ValueError, match="z_a must have a batch size of at least 2, got 1"):
        nnclr_loss(z_a[:1], z_b[:1], p_a[:1], p_b[:1], s)
    with pytest.raises(TypeError, match=r"p_b must be a torch\.Tensor, got NoneType"):
        NNCLRLoss()(z_a, z_b, p_a, None, s)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"temperature": 0.0}, ValueError, "temperature must be a finite number > 0, got 0.0"),
        ({"temperature": math.inf}, ValueError, "temperature must be a finite number > 0"),
        ({"temperature": "0.1"}, TypeError, "temperature must be a float, got str"),
        ({"symmetric": 1}, TypeError, "symmetric must be a bool, got int"),
        ({"reduction": "avg"}, ValueError, "reduction must be one of 'none', 'mean', 'sum'"),
        ({"chunk_size": -1}, ValueError, "chunk_size must be an int > 0, got -1"),
        ({"chunk_size": "big"}, ValueError, "chunk_size must be an int > 0, 'auto' or None"),
        ({"gather_distributed": None}, TypeError, "gather_distributed must be a bool"),
    ],
)
def test_rejects_bad_options(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    views, support = _views(4, 3), _rows(6, 3)
    with pytest.raises(error, match=message):
        nnclr_loss(*views, support, **kwargs)
    with pytest.raises(error, match=message):
        NNCLRLoss(**kwargs)


# ---------------------------------------------------------------- distributed (W = 2 and 3)
SIZES = {2: [3, 5], 3: [3, 1, 4]}  # unequal per-rank batch sizes, rank 0's rows first
OPTIONS = [(r, c, s) for r in ("mean", "sum", "none") for c in (None, 2) for s in (True, False)]


def _global_views(world: int) -> list[torch.Tensor]:
    return _views(sum(SIZES[world]), 5, seed=123)


def _support() -> torch.Tensor:
    return _rows(11, 5, seed=77)  # the same support set on every rank


def _slice(rank: int, sizes: list[int]) -> slice:
    return slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))


def _weighted(fn: Any, rows: slice, reduction: str) -> Any:
    if reduction != "none":
        return fn
    weights = torch.linspace(0.5, 1.5, 16, dtype=F64)[rows]  # by global row
    return lambda *v: fn(*v) * weights


def _dist_case(rank: int, world: int) -> list[tuple[torch.Tensor, ...]]:
    rows = _slice(rank, SIZES[world])
    views = [x[rows] for x in _global_views(world)]
    out = []
    for reduction, chunk_size, symmetric in OPTIONS:
        fn = NNCLRLoss(
            gather_distributed=True, reduction=reduction, chunk_size=chunk_size, symmetric=symmetric
        )
        out.append(
            value_and_grads(
                _weighted(lambda *v, f=fn: f(*v, _support()), rows, reduction),
                *views,
                grad_of=P_AB,
            )
        )
    return out


def test_distributed_matches_single_process(dist_pool_w: Any) -> None:
    world = dist_pool_w.world_size
    sizes = SIZES[world]
    results = dist_pool_w.run(_dist_case)
    views = _global_views(world)
    for i, (reduction, chunk_size, symmetric) in enumerate(OPTIONS):
        label = f"{reduction}, chunk_size={chunk_size}, symmetric={symmetric}"

        def single(*v: torch.Tensor, r: str = reduction, s: bool = symmetric) -> torch.Tensor:
            return nnclr_loss(*v, _support(), reduction=r, symmetric=s)

        value, *grads = value_and_grads(
            _weighted(single, slice(0, sum(sizes)), reduction), *views, grad_of=P_AB
        )
        if reduction == "none":
            got = torch.cat([r[i][0] for r in results])
            scale = 1  # per-row values: each rank's gradient is its slice as it is
        else:
            got = torch.stack([r[i][0] for r in results]).mean()
            scale = world
        torch.testing.assert_close(got, value, **TOL, msg=label)
        for rank in range(world):
            for j, grad in enumerate(grads):
                torch.testing.assert_close(
                    results[rank][i][1 + j] / scale,
                    grad[_slice(rank, sizes)],
                    **TOL,
                    msg=f"{label}, rank {rank}, p_{'ab'[j]}",
                )


def test_double_backward_matches_reference() -> None:
    views, support = _views(6, 4, seed=5), _rows(15, 4, seed=6)
    penalties = []
    for fn in (
        lambda *v: nnclr_loss(*v, support, chunk_size=3),
        lambda *v: nnclr(*v, support),
    ):
        leaves = [x.clone().requires_grad_(True) for x in views]
        grads = torch.autograd.grad(fn(*leaves), leaves[2:], create_graph=True)
        penalty = sum(g.square().sum() for g in grads)
        penalties.append(torch.autograd.grad(penalty, leaves[2:]))
    for ours, theirs in zip(*penalties, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-8, atol=1e-8)
