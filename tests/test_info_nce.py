"""InfoNCE (MoCo v1/v2/v3): references, invariants, blockwise path, distributed, errors (the
in-batch check against MoCo v3, shared with NT-Xent: ``test_contrastive_pairs.py``)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from helpers import assert_all_close, assert_reductions, value_and_grads
from hypothesis import given
from hypothesis import strategies as st
from strategies import SEEDS, embeddings, positive_scales

from benchmarks.references import moco_v2
from sslosses.info_nce import InfoNCELoss, info_nce

F64 = torch.float64
TOL = {"atol": 1e-10, "rtol": 1e-9}
TEMPERATURES = st.floats(min_value=0.05, max_value=2.0)
CHUNKS = st.none() | st.integers(min_value=1, max_value=20)
MODES = {  # name -> (in_batch_negatives, uses queue negatives)
    "v3": (True, False),
    "v3+queue": (True, True),
    "v2": (False, True),
}


def _inputs(n: int, d: int, k: int = 7, *, seed: int = 0, dtype: torch.dtype = F64):
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(m, d, generator=gen, dtype=dtype) for m in (n, n, k))


def _oracle(q, k, negatives, temperature: float, in_batch: bool) -> torch.Tensor:
    """Per-sample MoCo cross-entropy written out (keys not detached), covering every mode."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    parts = [q @ k.T] if in_batch else [(q * k).sum(1, keepdim=True)]  # (N, N) or (N, 1)
    if negatives is not None:
        parts.append(q @ F.normalize(negatives, dim=1).T)  # (N, K)
    logits = torch.cat(parts, dim=1) / temperature
    labels = torch.arange(q.shape[0]) if in_batch else torch.zeros(q.shape[0], dtype=torch.long)
    return F.cross_entropy(logits, labels, reduction="none")


# ---------------------------------------------------------------- references and exactness
# In-batch negatives against MoCo v3: test_contrastive_pairs.py (shared with NT-Xent)
@given(embeddings(min_n=1, max_n=12, count=3), TEMPERATURES, CHUNKS)
def test_queue_only_matches_moco_v2(views, temperature: float, chunk_size: int | None) -> None:
    q, k, queue = views
    queue = F.normalize(queue, dim=1)  # MoCo's queue holds normalized keys
    ours = value_and_grads(
        lambda x, y: info_nce(
            x,
            y,
            negatives=queue,
            temperature=temperature,
            in_batch_negatives=False,
            chunk_size=chunk_size,
        ),
        q,
        k,
    )
    ref = value_and_grads(lambda x, y: moco_v2(x, y, queue.T, temperature), q, k)
    # moco_v2 detaches the key: compare the value and the gradient w.r.t. the query
    assert_all_close(ours[:2], ref[:2], **TOL)


@pytest.mark.parametrize("gap", [19.0, 21.0, 25.0, 40.0])
def test_queue_only_is_exact_where_the_negatives_dominate(gap: float) -> None:
    # loss = log(1 + e^gap) with gap = (s_neg - s_pos) / T: F.softplus returns gap itself past
    # 20, off by log1p(e^-gap) = 7.6e-10 at gap 21 (value) and as much in the gradient
    temperature = 0.05
    cos_pos = 1.0 - gap * temperature  # the negative equals the query (cosine 1)
    q = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    k = torch.tensor([[cos_pos, math.sqrt(1.0 - cos_pos**2)]], dtype=torch.float64)
    queue = q.clone()
    ours = value_and_grads(
        lambda x, y: info_nce(
            x, y, negatives=queue, temperature=temperature, in_batch_negatives=False
        ),
        q,
        k,
    )
    ref = value_and_grads(lambda x, y: moco_v2(x, y, queue.T, temperature), q, k)
    assert ref[0].item() == pytest.approx(math.log1p(math.exp(gap)), rel=1e-15)
    assert_all_close(ours[:2], ref[:2], rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("mode", list(MODES))
@given(views=embeddings(min_n=2, max_n=10, count=3), temperature=TEMPERATURES, chunk_size=CHUNKS)
def test_matches_oracle_in_every_mode(mode: str, views, temperature, chunk_size) -> None:
    in_batch, queue = MODES[mode]
    q, k, u = views

    def ours(x, y, z):
        return info_nce(
            x,
            y,
            negatives=z if queue else None,
            temperature=temperature,
            in_batch_negatives=in_batch,
            chunk_size=chunk_size,
            reduction="none",
        ).sum()

    def oracle(x, y, z):
        return _oracle(x, y, z if queue else None, temperature, in_batch).sum()

    # gradients w.r.t. query, key (not detached) and negatives
    assert_all_close(value_and_grads(ours, q, k, u), value_and_grads(oracle, q, k, u), **TOL)


@pytest.mark.parametrize("mode", list(MODES))
@given(views=embeddings(min_n=2, max_n=10, count=3, scale=5.0), chunk_size=st.integers(1, 20))
def test_blockwise_equals_plain_unnormalized(mode: str, views, chunk_size: int) -> None:
    in_batch, queue = MODES[mode]
    q, k, u = views

    def loss(chunk: int | None):
        return lambda x, y, z: info_nce(
            x,
            y,
            negatives=z if queue else None,
            temperature=0.7,
            in_batch_negatives=in_batch,
            normalize=False,
            chunk_size=chunk,
        )

    assert_all_close(
        value_and_grads(loss(chunk_size), q, k, u), value_and_grads(loss(None), q, k, u), **TOL
    )


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_gradcheck_with_the_queue_differentiated(mode: str, chunk_size: int | None) -> None:
    # beyond tests/contracts.py: its rows pass ``negatives`` as a keyword, not differentiated
    in_batch, queue = MODES[mode]
    inputs = [t.requires_grad_(True) for t in _inputs(5, 3, 4)]
    assert torch.autograd.gradcheck(
        lambda q, k, u: (
            info_nce(
                q,
                k,
                negatives=u if queue else None,
                temperature=0.3,
                in_batch_negatives=in_batch,
                chunk_size=chunk_size,
                reduction="none",
            )
            + 0 * u.sum()
        ),
        inputs,
    )


def test_key_gradient_is_not_detached() -> None:
    q, k, _ = _inputs(4, 3)
    k.requires_grad_(True)
    info_nce(q, k).backward()
    assert k.grad is not None and k.grad.abs().sum() > 0


# ---------------------------------------------------------------- invariants
@pytest.mark.parametrize("mode", list(MODES))
@given(views=embeddings(min_n=2, max_n=10, count=3), seed=SEEDS, chunk_size=CHUNKS)
def test_invariant_to_consistent_permutation(mode: str, views, seed: int, chunk_size) -> None:
    in_batch, queue = MODES[mode]
    q, k, u = views
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(q.shape[0], generator=gen)
    perm_u = torch.randperm(u.shape[0], generator=gen)

    def loss(q, k, u):
        return info_nce(
            q,
            k,
            negatives=u if queue else None,
            in_batch_negatives=in_batch,
            chunk_size=chunk_size,
            reduction="none",
        )

    torch.testing.assert_close(
        loss(q[perm], k[perm], u[perm_u]), loss(q, k, u)[perm], atol=1e-12, rtol=1e-10
    )


@pytest.mark.parametrize("mode", list(MODES))
@given(
    views=embeddings(min_n=2, max_n=10, count=3),
    scales=st.lists(positive_scales(), min_size=30, max_size=30),
)
def test_invariant_to_positive_rescaling_when_normalized(mode: str, views, scales) -> None:
    in_batch, queue = MODES[mode]
    q, k, u = views
    n, m = q.shape[0], u.shape[0]
    s = torch.tensor(scales, dtype=F64)

    def loss(q, k, u):
        return info_nce(
            q, k, negatives=u if queue else None, in_batch_negatives=in_batch, reduction="none"
        )

    scaled = loss(q * s[:n, None], k * s[10 : 10 + n, None], u * s[20 : 20 + m, None])
    torch.testing.assert_close(scaled, loss(q, k, u), atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("chunk_size", [None, 2])
@pytest.mark.parametrize("normalize", [True, False])
def test_finite_at_small_temperature_with_large_logits(chunk_size, normalize: bool) -> None:
    q, noise, u = _inputs(6, 8, 9, dtype=torch.float32)
    k = q + 0.05 * noise  # aligned positives, as late in training
    # logits reach 1 / 0.01 = 100 (normalized) or hundreds (raw): exp overflows float32
    scale = (lambda x: F.normalize(x, dim=1)) if normalize else (lambda x: x)
    logits = scale(q) @ torch.cat([scale(k), scale(u)]).T / 0.01
    assert logits.max() > 89 and torch.exp(logits).isinf().any()
    for in_batch in (True, False):
        kwargs = {"temperature": 0.01, "normalize": normalize, "in_batch_negatives": in_batch}
        ours = info_nce(q, k, negatives=u, chunk_size=chunk_size, **kwargs)
        ref = info_nce(q.double(), k.double(), negatives=u.double(), **kwargs)
        assert torch.isfinite(ours)
        torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-4)


def test_uniform_logits_give_log_of_candidate_count() -> None:
    z = torch.ones(5, 3, dtype=F64)
    u = torch.ones(7, 3, dtype=F64)
    torch.testing.assert_close(info_nce(z, z), torch.tensor(math.log(5), dtype=F64))
    torch.testing.assert_close(info_nce(z, z, negatives=u), torch.tensor(math.log(12), dtype=F64))
    torch.testing.assert_close(
        info_nce(z, z, negatives=u, in_batch_negatives=False, chunk_size=2),
        torch.tensor(math.log(8), dtype=F64),
    )


# ---------------------------------------------------------------- reductions, module
@pytest.mark.parametrize("mode", list(MODES))
def test_reductions(mode: str) -> None:
    in_batch, queue = MODES[mode]
    q, k, u = _inputs(6, 4)
    kwargs = {"negatives": u if queue else None, "in_batch_negatives": in_batch}
    none = assert_reductions(lambda r: info_nce(q, k, reduction=r, **kwargs), 6)
    assert bool((none > 0).all())


def test_single_query_is_allowed_with_queue_negatives() -> None:
    q, k, u = _inputs(1, 4)
    loss = info_nce(q, k, negatives=u)
    torch.testing.assert_close(loss, _oracle(q, k, u, 0.2, True)[0])


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_empty_queue_adds_no_negatives(chunk_size: int | None) -> None:
    q, k, u = _inputs(5, 3)
    empty = u[:0].requires_grad_(True)  # MoCoQueue.features() before the first push
    torch.testing.assert_close(
        info_nce(q, k, negatives=empty, chunk_size=chunk_size), info_nce(q, k), rtol=0, atol=0
    )
    q.requires_grad_(True)
    loss = info_nce(q, k, negatives=empty, in_batch_negatives=False, chunk_size=chunk_size)
    loss.backward()
    # a single logit per query: the loss is 0 and so is its gradient (no NaN)
    assert loss.item() == 0.0
    assert q.grad is not None and torch.equal(q.grad, torch.zeros_like(q))


def test_gather_distributed_without_process_group_is_local() -> None:
    q, k, u = _inputs(5, 3)
    assert not dist.is_initialized()
    for in_batch in (True, False):
        for reduction in ("mean", "sum", "none"):
            kwargs = {"negatives": u, "in_batch_negatives": in_batch, "reduction": reduction}
            torch.testing.assert_close(
                info_nce(q, k, gather_distributed=True, **kwargs),
                info_nce(q, k, **kwargs),
                rtol=0,
                atol=0,
            )


# ---------------------------------------------------------------- dtypes, autocast, compile
def test_float64_negatives_promote() -> None:
    q, k, u = _inputs(4, 3)
    out = info_nce(q.float(), k.float(), negatives=u)
    assert out.dtype == F64
    torch.testing.assert_close(
        out, info_nce(q.float().double(), k.float().double(), negatives=u), rtol=0, atol=0
    )


# ---------------------------------------------------------------- errors
def test_rejects_bad_inputs() -> None:
    q, k, u = _inputs(4, 3)
    with pytest.raises(ValueError, match=r"query must be a 2-D tensor, got 1-D with shape \(4,\)"):
        info_nce(q[:, 0], k)
    with pytest.raises(ValueError, match=r"key must be a 2-D tensor, got 3-D"):
        info_nce(q, k[None])
    with pytest.raises(ValueError, match=r"query and key must have the same shape, got \(4, 3\)"):
        info_nce(q, k[:3])
    with pytest.raises(ValueError, match=r"negatives must be a 2-D tensor, got 1-D"):
        info_nce(q, k, negatives=u[0])
    with pytest.raises(
        ValueError, match=r"negatives must have shape \(K, 3\) to match .* got \(7, 2\)"
    ):
        info_nce(q, k, negatives=u[:, :2])
    with pytest.raises(ValueError, match="query must have a batch size of at least 1, got 0"):
        info_nce(q[:0], k[:0], negatives=u)
    for empty in (None, u[:0]):
        with pytest.raises(
            ValueError, match=r"query must have a batch size of at least 2 when .* got 1"
        ):
            info_nce(q[:1], k[:1], negatives=empty)
    with pytest.raises(ValueError, match=r"in_batch_negatives=False needs queue negatives"):
        info_nce(q, k, in_batch_negatives=False)
    with pytest.raises(ValueError, match=r"in_batch_negatives=False needs queue negatives"):
        InfoNCELoss(in_batch_negatives=False)(q, k)
    with pytest.raises(TypeError, match=r"query must have a floating-point dtype, got torch.int64"):
        info_nce(q.long(), k)
    with pytest.raises(TypeError, match=r"key must have a floating-point dtype, got torch.int32"):
        info_nce(q, k.int())
    with pytest.raises(
        TypeError, match=r"negatives must have a floating-point dtype, got torch.bool"
    ):
        info_nce(q, k, negatives=u > 0)
    with pytest.raises(TypeError, match=r"negatives must be a torch.Tensor, got list"):
        info_nce(q, k, negatives=[[0.0, 1.0, 2.0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="query and key must be on the same device"):
        info_nce(q, k.to("meta"))
    with pytest.raises(ValueError, match="query and negatives must be on the same device"):
        info_nce(q, k, negatives=u.to("meta"))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"temperature": 0.0}, ValueError, "temperature must be a finite number > 0, got 0.0"),
        ({"temperature": -1}, ValueError, "temperature must be a finite number > 0, got -1"),
        ({"temperature": math.nan}, ValueError, "temperature must be a finite number > 0"),
        ({"temperature": None}, TypeError, "temperature must be a float, got NoneType"),
        ({"reduction": "batchmean"}, ValueError, "reduction must be one of 'none', 'mean'"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be an int > 0, got 0"),
        ({"chunk_size": True}, TypeError, "chunk_size must be an int, got bool"),
        ({"in_batch_negatives": "no"}, TypeError, "in_batch_negatives must be a bool, got str"),
        ({"normalize": None}, TypeError, "normalize must be a bool, got NoneType"),
        ({"gather_distributed": 1}, TypeError, "gather_distributed must be a bool, got int"),
    ],
)
def test_rejects_bad_options(kwargs, error: type[Exception], message: str) -> None:
    q, k, u = _inputs(4, 3)
    with pytest.raises(error, match=message):
        info_nce(q, k, negatives=u, **kwargs)
    with pytest.raises(error, match=message):
        InfoNCELoss(**kwargs)


# ---------------------------------------------------------------- distributed (2 processes)
def _global_inputs(sizes: list[int]):
    return _inputs(sum(sizes), 5, 7, seed=321)


def _rank_slice(rank: int, sizes: list[int]) -> slice:
    return slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))


def _kwargs(mode: str, reduction: str, chunk_size: int | None) -> dict[str, object]:
    in_batch, _ = MODES[mode]
    return {
        "temperature": 0.3,
        "in_batch_negatives": in_batch,
        "reduction": reduction,
        "chunk_size": chunk_size,
    }


def _dist_case(
    rank: int, world: int, sizes: list[int], mode: str, reduction: str, chunk_size: int | None
) -> tuple[torch.Tensor, ...]:
    q_all, k_all, u = _global_inputs(sizes)  # the same queue on every rank
    rows = _rank_slice(rank, sizes)
    q = q_all[rows].clone().requires_grad_(True)
    k = k_all[rows].clone().requires_grad_(True)
    u = u.clone().requires_grad_(True)
    negatives = u if MODES[mode][1] else None
    loss = info_nce(
        q, k, negatives=negatives, gather_distributed=True, **_kwargs(mode, reduction, chunk_size)
    )
    (loss.sum() + 0 * u.sum()).backward()
    assert q.grad is not None and k.grad is not None and u.grad is not None
    return loss.detach(), q.grad, k.grad, u.grad


def _single(sizes: list[int], mode: str, reduction: str):
    q, k, u = _global_inputs(sizes)
    queue = MODES[mode][1]

    def fn(q, k, u):
        return info_nce(q, k, negatives=u if queue else None, **_kwargs(mode, reduction, None))

    return value_and_grads(fn, q, k, u)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize(("sizes", "chunk_size"), [([3, 5], None), ([3, 5], 2), ([4, 4], 3)])
def test_distributed_mean_matches_single_process(dist_pool, mode, sizes, chunk_size) -> None:
    results = dist_pool.run(_dist_case, sizes, mode, "mean", chunk_size)
    loss, gq, gk, gu = _single(sizes, mode, "mean")
    world = len(sizes)
    torch.testing.assert_close(sum(r[0] for r in results) / world, loss, atol=1e-8, rtol=0)
    torch.testing.assert_close(torch.cat([r[1] for r in results]) / world, gq, atol=1e-8, rtol=0)
    torch.testing.assert_close(torch.cat([r[2] for r in results]) / world, gk, atol=1e-8, rtol=0)
    # the queue is shared: its gradient, averaged over ranks as DDP would, is the global one
    torch.testing.assert_close(sum(r[3] for r in results) / world, gu, atol=1e-8, rtol=0)


@pytest.mark.parametrize("mode", ["v3+queue", "v2"])
def test_distributed_sum_and_none_match_single_process(dist_pool, mode: str) -> None:
    sizes = [3, 5]
    world = len(sizes)
    summed = dist_pool.run(_dist_case, sizes, mode, "sum", None)
    loss, gq, gk, _ = _single(sizes, mode, "sum")
    torch.testing.assert_close(sum(r[0] for r in summed) / world, loss, atol=1e-8, rtol=0)
    torch.testing.assert_close(torch.cat([r[1] for r in summed]) / world, gq, atol=1e-8, rtol=0)
    torch.testing.assert_close(torch.cat([r[2] for r in summed]) / world, gk, atol=1e-8, rtol=0)

    per_sample = dist_pool.run(_dist_case, sizes, mode, "none", 2)
    q, k, u = _global_inputs(sizes)
    expected = info_nce(q, k, negatives=u, **_kwargs(mode, "none", None))
    assert [r[0].shape for r in per_sample] == [(3,), (5,)]
    torch.testing.assert_close(torch.cat([r[0] for r in per_sample]), expected, atol=1e-8, rtol=0)


def _single_row_case(rank: int, world: int) -> torch.Tensor:
    q_all, k_all, _ = _inputs(2, 4, seed=5)
    return info_nce(q_all[rank : rank + 1], k_all[rank : rank + 1], gather_distributed=True)


def test_distributed_one_row_per_rank_has_in_batch_negatives(dist_pool) -> None:
    results = dist_pool.run(_single_row_case)
    q, k, _ = _inputs(2, 4, seed=5)
    torch.testing.assert_close(sum(results) / 2, info_nce(q, k), atol=1e-8, rtol=0)
