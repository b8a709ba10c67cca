"""Every ``gather_distributed`` loss, module and the queue at W = 2 and W = 3 (gloo, float64).

The contract (docs/guides/distributed.rst): the mean over ranks of a returned value equals the
single-process value on the concatenated global batch, and each rank's input gradient divided
by W equals its slice of the single-process gradient. W = 3 with unequal batch sizes (one rank
holding a single row) keeps a wrong factor W or a wrong offset from hiding behind W = 2. Each
test runs its checks for all options in one call into the pool of its W. Barlow Twins (every
algorithm and the module, three layouts, at W = 2 and W = 3): ``tests/test_barlow_twins.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import sslosses
from sslosses import _collectives, distributed
from sslosses.functional import info_nce, nt_xent, sinkhorn, swav_loss

F64 = torch.float64
SIZES = {2: [3, 5], 3: [3, 1, 4]}  # unequal per-rank batch sizes, rank 0's rows first
TOL = {"rtol": 1e-10, "atol": 1e-10}
CHUNKS = (None, 2)  # the plain path and the blockwise log-sum-exp
REDUCTIONS = ("mean", "sum", "none")


def _rows(rank: int, sizes: list[int]) -> slice:
    return slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, **TOL)


def _pair_data(world: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The global batch (a, b) and a queue u shared by every rank."""
    gen = torch.Generator().manual_seed(7)
    a = torch.randn(sum(SIZES[world]), 5, generator=gen, dtype=F64)
    b = a + 0.7 * torch.randn(a.shape, generator=gen, dtype=F64)
    u = torch.randn(6, 5, generator=gen, dtype=F64)
    return a, b, u


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


# --------------------------------------------------------------------- gather's own gradient
def _shared_gradient_case(rank: int, world: int) -> dict[str, torch.Tensor]:
    sizes = SIZES[world]
    n_global = sum(sizes)
    x = torch.randn(sizes[rank], 3, generator=torch.Generator().manual_seed(rank), dtype=F64)
    out: dict[str, torch.Tensor] = {}
    # the repro: autograd hands the same gradient tensor to gather and to 2 * w
    x0, w = _leaf(x), torch.ones(n_global, 3, dtype=F64, requires_grad=True)
    (distributed.gather(x0) + 2 * w).sum().backward()
    out["x0"], out["w"] = x0.grad, w.grad  # type: ignore[assignment]
    # two gathers handed one (contiguous) gradient tensor
    weights = torch.arange(n_global * 3, dtype=F64).reshape(n_global, 3)
    x1, x2 = _leaf(x), _leaf(x)
    (distributed.gather(x1) + distributed.gather(x2)).backward(weights)
    out["x1"], out["x2"] = x1.grad, x2.grad  # type: ignore[assignment]
    # a sibling branch whose gradient is a view of the one gather receives
    x3, v = _leaf(x), torch.zeros(n_global, 3, dtype=F64, requires_grad=True)
    (v.view(n_global, 3) + distributed.gather(x3)).backward(weights)
    out["x3"], out["v"] = x3.grad, v.grad  # type: ignore[assignment]
    # all_reduce_sum the same way
    y, s = _leaf(x[:1]), torch.ones(1, 3, dtype=F64, requires_grad=True)
    (distributed.all_reduce_sum(y) + 2 * s).sum().backward()
    out["y"], out["s"] = y.grad, s.grad  # type: ignore[assignment]
    return out


def test_backward_never_writes_into_a_shared_gradient(dist_pool_w: Any) -> None:
    world = dist_pool_w.world_size
    sizes = SIZES[world]
    results = dist_pool_w.run(_shared_gradient_case)
    n_global = sum(sizes)
    weights = torch.arange(n_global * 3, dtype=F64).reshape(n_global, 3)
    for rank, out in enumerate(results):
        ones = torch.ones(sizes[rank], 3, dtype=F64)
        # every rank's loss sums all gathered rows: each row's gradient sums over the W ranks
        assert torch.equal(out["x0"], world * ones)
        assert torch.equal(out["w"], torch.full((n_global, 3), 2.0, dtype=F64))
        assert torch.equal(out["x1"], world * weights[_rows(rank, sizes)])
        assert torch.equal(out["x2"], world * weights[_rows(rank, sizes)])
        assert torch.equal(out["x3"], world * weights[_rows(rank, sizes)])
        assert torch.equal(out["v"], weights)
        assert torch.equal(out["y"], torch.full((1, 3), float(world), dtype=F64))
        assert torch.equal(out["s"], torch.full((1, 3), 2.0, dtype=F64))


# ------------------------------------------------------------------------- double backward
def _contrastive(name: str, a: torch.Tensor, b: torch.Tensor, u: torch.Tensor, **kw: Any) -> Any:
    """The loss ``name`` on (a, b), the queue ``u`` where the variant uses one."""
    if name == "nt_xent":
        return nt_xent(a, b, temperature=0.3, **kw)
    if name == "NTXentLoss":
        return sslosses.NTXentLoss(temperature=0.3, **kw)(a, b)
    mode = name.split(":")[1]
    negatives = None if mode == "v3" else u
    in_batch = mode != "v2"
    if name.startswith("InfoNCELoss"):
        module = sslosses.InfoNCELoss(temperature=0.3, in_batch_negatives=in_batch, **kw)
        return module(a, b, negatives)
    return info_nce(a, b, negatives=negatives, temperature=0.3, in_batch_negatives=in_batch, **kw)


def _penalized(
    name: str, a: torch.Tensor, b: torch.Tensor, u: torch.Tensor, scale: float, **kw: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss and a gradient penalty ``|grad|^2 / scale`` with its graph (create_graph)."""
    loss = _contrastive(name, a, b, u, **kw)
    ga, gb = torch.autograd.grad(loss, (a, b), create_graph=True)
    penalty = (ga.square().sum() + gb.square().sum()) / scale
    (loss + penalty).backward()
    return loss.detach(), penalty.detach()


DOUBLE_BACKWARD = ("nt_xent", "info_nce:v3", "info_nce:v3+queue", "info_nce:v2")


def _double_backward_case(rank: int, world: int) -> dict[tuple[str, Any], tuple[Any, ...]]:
    a_all, b_all, u = _pair_data(world)
    rows = _rows(rank, SIZES[world])
    out = {}
    for name in DOUBLE_BACKWARD:
        for chunk in CHUNKS:
            a, b = _leaf(a_all[rows]), _leaf(b_all[rows])
            # g_r = W G_r, so |g_r|^2 / W summed over ranks... averaged is sum_r |G_r|^2 = P
            loss, penalty = _penalized(
                name, a, b, u, float(world), gather_distributed=True, chunk_size=chunk
            )
            out[name, chunk] = (loss, penalty, a.grad, b.grad)
    return out


def test_double_backward_matches_single_process_gradient_penalty(dist_pool_w: Any) -> None:
    """A gradient penalty through the gather: the cross-rank second-order terms are included."""
    world = dist_pool_w.world_size
    sizes = SIZES[world]
    results = dist_pool_w.run(_double_backward_case)
    a_all, b_all, u = _pair_data(world)
    for name in DOUBLE_BACKWARD:
        for chunk in CHUNKS:
            a, b = _leaf(a_all), _leaf(b_all)
            loss, penalty = _penalized(name, a, b, u, 1.0, chunk_size=chunk)
            per_rank = [r[name, chunk] for r in results]
            _close(sum(r[0] for r in per_rank) / world, loss)
            _close(sum(r[1] for r in per_rank) / world, penalty)
            for rank, (_, _, grad_a, grad_b) in enumerate(per_rank):
                _close(grad_a / world, a.grad[_rows(rank, sizes)])  # type: ignore[index]
                _close(grad_b / world, b.grad[_rows(rank, sizes)])  # type: ignore[index]


# ---------------------------------------------------------------- NT-Xent and InfoNCE values
CONTRASTIVE = (
    "nt_xent",
    "NTXentLoss",
    "info_nce:v3",
    "info_nce:v3+queue",
    "info_nce:v2",
    "InfoNCELoss:v3",
    "InfoNCELoss:v3+queue",
    "InfoNCELoss:v2",
)


def _contrastive_case(rank: int, world: int, name: str) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    a_all, b_all, u_all = _pair_data(world)
    rows = _rows(rank, SIZES[world])
    out = {}
    for reduction in REDUCTIONS:
        for chunk in CHUNKS:
            a, b, u = _leaf(a_all[rows]), _leaf(b_all[rows]), _leaf(u_all)
            loss = _contrastive(
                name, a, b, u, gather_distributed=True, reduction=reduction, chunk_size=chunk
            )
            (loss.sum() + 0 * u.sum()).backward()
            out[reduction, chunk] = (loss.detach(), a.grad, b.grad, u.grad)
    return out


@pytest.mark.parametrize("name", CONTRASTIVE)
def test_contrastive_losses_match_single_process(dist_pool_w: Any, name: str) -> None:
    world = dist_pool_w.world_size
    sizes = SIZES[world]
    results = dist_pool_w.run(_contrastive_case, name)
    a_all, b_all, u_all = _pair_data(world)
    for reduction in REDUCTIONS:
        a, b, u = _leaf(a_all), _leaf(b_all), _leaf(u_all)
        loss = _contrastive(name, a, b, u, reduction=reduction, chunk_size=None)
        (loss.sum() + 0 * u.sum()).backward()
        for chunk in CHUNKS:
            per_rank = [r[reduction, chunk] for r in results]
            if reduction == "none":  # this rank's rows of the global per-sample loss
                assert [r[0].shape[0] for r in per_rank] == sizes
                _close(torch.cat([r[0] for r in per_rank]), loss.detach())
                continue
            _close(sum(r[0] for r in per_rank) / world, loss.detach())
            _close(torch.cat([r[1] for r in per_rank]) / world, a.grad)  # type: ignore[arg-type]
            _close(torch.cat([r[2] for r in per_rank]) / world, b.grad)  # type: ignore[arg-type]
            # the queue is the same on every rank: DDP's average of its gradient is the global one
            _close(sum(r[3] for r in per_rank) / world, u.grad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------ SwAV and Sinkhorn
QUEUE_LENGTHS = {2: [[3, 0], [5, 2]], 3: [[3, 0], [1, 2], [0, 4]]}  # per rank, per assign crop


def _swav_data(world: int) -> tuple[list[list[torch.Tensor]], list[list[torch.Tensor]]]:
    """Per rank: 3 crops of scores (N_r, K) and the queue scores of assignment crops (1, 0)."""
    gen = torch.Generator().manual_seed(11)
    crops = [
        [2 * torch.randn(n, 4, generator=gen, dtype=F64) for _ in range(3)] for n in SIZES[world]
    ]
    queues = [
        [2 * torch.randn(q, 4, generator=gen, dtype=F64) for q in lengths]
        for lengths in QUEUE_LENGTHS[world]
    ]
    return crops, queues


def _swav(scores: list[torch.Tensor], queue: list[torch.Tensor], module: bool, **kw: Any) -> Any:
    if module:
        return sslosses.SwAVLoss(assign_crops=(1, 0), **kw)(scores, queue_scores=queue)
    return swav_loss(scores, assign_crops=(1, 0), queue_scores=queue, **kw)


def _swav_case(rank: int, world: int) -> dict[str, tuple[Any, ...]]:
    crops, queues = _swav_data(world)
    out: dict[str, tuple[Any, ...]] = {}
    for module in (False, True):
        mine = [_leaf(c) for c in crops[rank]]
        loss = _swav(mine, queues[rank], module, gather_distributed=True)
        loss.backward()
        out[f"swav{module}"] = (loss.detach(), [c.grad for c in mine])
    codes = sinkhorn(crops[rank][0], epsilon=0.05, iterations=4, gather_distributed=True)
    out["sinkhorn"] = (codes,)
    return out


def test_swav_and_sinkhorn_match_single_process(dist_pool_w: Any) -> None:
    world = dist_pool_w.world_size
    sizes = SIZES[world]
    results = dist_pool_w.run(_swav_case)
    crops, queues = _swav_data(world)
    global_crops = [torch.cat([c[v] for c in crops]) for v in range(3)]
    global_queue = [torch.cat([q[i] for q in queues]) for i in range(2)]  # all ranks' queues
    codes = sinkhorn(global_crops[0], epsilon=0.05, iterations=4)
    _close(torch.cat([r["sinkhorn"][0] for r in results]), codes)
    for module in (False, True):
        leaves = [_leaf(c) for c in global_crops]
        loss = _swav(leaves, global_queue, module)
        loss.backward()
        per_rank = [r[f"swav{module}"] for r in results]
        _close(sum(r[0] for r in per_rank) / world, loss.detach())
        for rank, (_, grads) in enumerate(per_rank):
            for v in range(3):
                _close(grads[v] / world, leaves[v].grad[_rows(rank, sizes)])  # type: ignore[index]


# ---------------------------------------------------------------------------------- MoCoQueue
def _queue_pushes(world: int) -> list[list[torch.Tensor]]:
    """Per step, per rank: batches of unequal sizes (an empty one too), more than the queue."""
    gen = torch.Generator().manual_seed(13)
    steps = [[2, 5, 1], [0, 3, 4], [6, 1, 2]]
    return [[torch.randn(n, 4, generator=gen, dtype=F64) for n in s[:world]] for s in steps]


def _queue_case(rank: int, world: int) -> tuple[torch.Tensor, int]:
    queue = sslosses.MoCoQueue(9, 4, gather_distributed=True, dtype=F64)
    for step in _queue_pushes(world):
        queue.push(step[rank])
    return queue.features(), len(queue)


def test_queue_gathers_like_one_process(dist_pool_w: Any) -> None:
    world = dist_pool_w.world_size
    results = dist_pool_w.run(_queue_case)
    single = sslosses.MoCoQueue(9, 4, dtype=F64)
    for step in _queue_pushes(world):
        single.push(torch.cat(step))  # rank 0's rows first
    for features, count in results:
        assert count == len(single)
        assert torch.equal(features, single.features())


# ------------------------------------------------------------------------------ layout plumbing
def _layout_case(rank: int, world: int) -> tuple[Any, ...]:
    layout = _collectives.batch_layout(SIZES[world][rank], torch.device("cpu"))
    off = _collectives.global_layout(False, 1, torch.device("cpu"), name="x")
    return layout.sizes, layout.rank, layout.offset, layout.total, off


def test_batch_layout_on_every_rank(dist_pool_w: Any) -> None:
    world = dist_pool_w.world_size
    sizes = SIZES[world]
    for rank, (got, r, offset, total, off) in enumerate(dist_pool_w.run(_layout_case)):
        assert got == tuple(sizes) and r == rank
        assert offset == sum(sizes[:rank]) and total == sum(sizes)
        assert off is None  # gather_distributed=False never communicates


def test_layout_without_process_group() -> None:
    layout = _collectives.batch_layout(5, torch.device("cpu"))
    assert (layout.sizes, layout.rank, layout.offset, layout.total) == ((5,), 0, 0, 5)
    assert _collectives.global_layout(True, 5, torch.device("cpu"), name="x") is None
