"""NT-Xent (SimCLR): invariants, blockwise path, numerics, distributed, errors (the check against
SimCLR's formula, shared with InfoNCE: ``test_contrastive_pairs.py``)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from helpers import assert_all_close, assert_reductions, gaussian_pair, value_and_grads
from hypothesis import given
from hypothesis import strategies as st
from strategies import SEEDS, embeddings, positive_scales

from benchmarks.references import simclr_nt_xent
from sslosses.nt_xent import NTXentLoss, nt_xent

F64 = torch.float64
TOL = {"atol": 1e-10, "rtol": 1e-9}
TEMPERATURES = st.floats(min_value=0.05, max_value=2.0)
CHUNKS = st.none() | st.integers(min_value=1, max_value=20)


# ---------------------------------------------------------------- reference and exactness
# Against SimCLR's formula: test_contrastive_pairs.py (shared with InfoNCE)
@given(embeddings(min_n=2, max_n=12, scale=5.0), TEMPERATURES, st.integers(1, 20), st.booleans())
def test_blockwise_equals_plain(views, temperature: float, chunk_size: int, normalize: bool):
    a, b = views

    def loss(chunk: int | None):
        return lambda x, y: nt_xent(
            x, y, temperature=temperature, normalize=normalize, chunk_size=chunk
        )

    assert_all_close(
        value_and_grads(loss(chunk_size), a, b), value_and_grads(loss(None), a, b), **TOL
    )


def test_blockwise_gradient_only_where_needed() -> None:
    a, b = gaussian_pair(6, 4)
    a.requires_grad_(True)
    loss = nt_xent(a, b, chunk_size=4)
    (ga,) = torch.autograd.grad(loss, [a])
    (ref,) = torch.autograd.grad(nt_xent(a, b), [a])
    torch.testing.assert_close(ga, ref, atol=1e-12, rtol=1e-10)


# ---------------------------------------------------------------- invariants
@given(embeddings(min_n=2, max_n=12), SEEDS, CHUNKS)
def test_invariant_to_consistent_permutation(views, seed: int, chunk_size: int | None) -> None:
    a, b = views
    perm = torch.randperm(a.shape[0], generator=torch.Generator().manual_seed(seed))
    per_pair = nt_xent(a, b, reduction="none", chunk_size=chunk_size)
    permuted = nt_xent(a[perm], b[perm], reduction="none", chunk_size=chunk_size)
    torch.testing.assert_close(permuted, per_pair[perm], atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("n", [2, 3, 10])
@pytest.mark.parametrize("chunk_size", [None, 3])
def test_coinciding_embeddings_give_log_2n_minus_1(n: int, chunk_size: int | None) -> None:
    z = torch.full((n, 4), 0.7, dtype=F64)
    loss = nt_xent(z, 2 * z, temperature=0.05, reduction="none", chunk_size=chunk_size)
    torch.testing.assert_close(loss, torch.full((n,), math.log(2 * n - 1), dtype=F64))


@given(
    embeddings(min_n=2, max_n=10, count=2), st.lists(positive_scales(), min_size=20, max_size=20)
)
def test_invariant_to_positive_rescaling_when_normalized(views, scales: list[float]) -> None:
    a, b = views
    n = a.shape[0]
    s = torch.tensor(scales, dtype=F64)
    scaled = nt_xent(a * s[:n, None], b * s[10 : 10 + n, None], reduction="none")
    torch.testing.assert_close(scaled, nt_xent(a, b, reduction="none"), atol=1e-10, rtol=1e-9)


def test_rescaling_changes_the_loss_without_normalization() -> None:
    a, b = gaussian_pair(4, 3)
    plain = nt_xent(a, b, normalize=False)
    assert not torch.allclose(nt_xent(3 * a, b, normalize=False), plain)
    # with normalize=False the logits are raw dot products: equals the reference on unit rows
    torch.testing.assert_close(
        nt_xent(F.normalize(a, dim=1), F.normalize(b, dim=1), normalize=False),
        simclr_nt_xent(a, b, 0.1),
    )


@pytest.mark.parametrize("chunk_size", [None, 2])
@pytest.mark.parametrize("normalize", [True, False])
def test_finite_at_small_temperature_with_large_logits(chunk_size, normalize: bool) -> None:
    a, noise = gaussian_pair(6, 8, dtype=torch.float32)
    b = a + 0.05 * noise  # aligned views, as late in training
    # logits reach 1 / 0.01 = 100 (normalized) or a few hundred (raw): exp overflows float32
    u = F.normalize(torch.cat([a, b]), dim=1) if normalize else torch.cat([a, b])
    logits = (u @ u.T).fill_diagonal_(0) / 0.01
    assert logits.max() > 89 and torch.exp(logits).isinf().any()
    ours = nt_xent(a, b, temperature=0.01, normalize=normalize, chunk_size=chunk_size)
    ref = nt_xent(a.double(), b.double(), temperature=0.01, normalize=normalize)
    assert torch.isfinite(ours)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------- reductions, module
def test_reductions() -> None:
    a, b = gaussian_pair(7, 5)
    none = assert_reductions(lambda r: nt_xent(a, b, reduction=r), 7)
    assert bool((none > 0).all())


def test_none_is_the_average_of_both_directions() -> None:
    a, b = gaussian_pair(5, 3)
    tau = 0.4
    u = F.normalize(torch.cat([a, b]), dim=1)
    logits = (u @ u.T / tau).fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(5, 10), torch.arange(5)])
    per_anchor = F.cross_entropy(logits, targets, reduction="none")
    expected = (per_anchor[:5] + per_anchor[5:]) / 2
    torch.testing.assert_close(nt_xent(a, b, temperature=tau, reduction="none"), expected)


def test_gather_distributed_without_process_group_is_local() -> None:
    a, b = gaussian_pair(5, 3)
    assert not dist.is_initialized()
    for reduction in ("mean", "sum", "none"):
        torch.testing.assert_close(
            nt_xent(a, b, gather_distributed=True, reduction=reduction),
            nt_xent(a, b, reduction=reduction),
            rtol=0,
            atol=0,
        )


# ---------------------------------------------------------------- dtypes, autocast, compile
def test_mixed_precision_inputs_promote_to_float64() -> None:
    a, b = gaussian_pair(4, 3)
    out = nt_xent(a.float(), b)
    assert out.dtype == F64
    torch.testing.assert_close(out, nt_xent(a.float().double(), b), rtol=0, atol=0)


# ---------------------------------------------------------------- errors
def test_rejects_bad_inputs() -> None:
    a, b = gaussian_pair(4, 3)
    with pytest.raises(ValueError, match=r"z_a must be a 2-D tensor, got 1-D with shape \(4,\)"):
        nt_xent(a[:, 0], b)
    with pytest.raises(ValueError, match=r"z_b must be a 2-D tensor, got 3-D"):
        nt_xent(a, b[None])
    with pytest.raises(ValueError, match=r"same shape, got \(4, 3\) and \(4, 2\)"):
        nt_xent(a, b[:, :2])
    with pytest.raises(ValueError, match=r"same shape, got \(4, 3\) and \(3, 3\)"):
        nt_xent(a, b[:3])
    with pytest.raises(ValueError, match="z_a must have a batch size of at least 2, got 1"):
        nt_xent(a[:1], b[:1])
    with pytest.raises(TypeError, match=r"z_a must have a floating-point dtype, got torch.int64"):
        nt_xent(a.long(), b)
    with pytest.raises(TypeError, match=r"z_b must have a floating-point dtype, got torch.bool"):
        nt_xent(a, b > 0)
    with pytest.raises(TypeError, match=r"z_a must be a torch.Tensor, got list"):
        nt_xent([[1.0, 2.0]], b)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same device, got cpu and meta"):
        nt_xent(a, b.to("meta"))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"temperature": 0.0}, ValueError, "temperature must be a finite number > 0, got 0.0"),
        ({"temperature": -0.1}, ValueError, "temperature must be a finite number > 0, got -0.1"),
        ({"temperature": math.inf}, ValueError, "temperature must be a finite number > 0"),
        ({"temperature": "0.1"}, TypeError, "temperature must be a float, got str"),
        ({"reduction": "avg"}, ValueError, "reduction must be one of 'none', 'mean', 'sum'"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be an int > 0, got 0"),
        ({"chunk_size": -4}, ValueError, "chunk_size must be an int > 0, got -4"),
        ({"chunk_size": 2.0}, TypeError, "chunk_size must be an int, got float"),
        ({"normalize": 1}, TypeError, "normalize must be a bool, got int"),
        ({"gather_distributed": "yes"}, TypeError, "gather_distributed must be a bool, got str"),
    ],
)
def test_rejects_bad_options(kwargs, error: type[Exception], message: str) -> None:
    a, b = gaussian_pair(4, 3)
    with pytest.raises(error, match=message):
        nt_xent(a, b, **kwargs)
    with pytest.raises(error, match=message):
        NTXentLoss(**kwargs)


# ---------------------------------------------------------------- distributed (2 processes)
def _global_pair(sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return gaussian_pair(sum(sizes), 5, seed=123)


def _rank_slice(rank: int, sizes: list[int]) -> slice:
    return slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))


def _dist_case(
    rank: int, world: int, sizes: list[int], reduction: str, chunk_size: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    a_all, b_all = _global_pair(sizes)
    rows = _rank_slice(rank, sizes)
    a = a_all[rows].clone().requires_grad_(True)
    b = b_all[rows].clone().requires_grad_(True)
    loss = nt_xent(
        a, b, temperature=0.3, gather_distributed=True, reduction=reduction, chunk_size=chunk_size
    )
    loss.sum().backward()
    assert a.grad is not None and b.grad is not None
    return loss.detach(), a.grad, b.grad


@pytest.mark.parametrize(
    ("sizes", "chunk_size"), [([4, 4], None), ([3, 5], None), ([3, 5], 2), ([1, 6], 4)]
)
def test_distributed_mean_matches_single_process(dist_pool, sizes, chunk_size) -> None:
    results = dist_pool.run(_dist_case, sizes, "mean", chunk_size)
    a, b = _global_pair(sizes)
    loss, ga, gb = value_and_grads(lambda x, y: nt_xent(x, y, temperature=0.3), a, b)
    world = len(sizes)
    torch.testing.assert_close(sum(r[0] for r in results) / world, loss, atol=1e-8, rtol=0)
    for rank, (_, ga_r, gb_r) in enumerate(results):
        rows = _rank_slice(rank, sizes)
        torch.testing.assert_close(ga_r / world, ga[rows], atol=1e-8, rtol=0)
        torch.testing.assert_close(gb_r / world, gb[rows], atol=1e-8, rtol=0)


def test_distributed_sum_and_none_match_single_process(dist_pool) -> None:
    sizes = [3, 5]
    a, b = _global_pair(sizes)
    world = len(sizes)
    summed = dist_pool.run(_dist_case, sizes, "sum", None)
    loss, ga, gb = value_and_grads(
        lambda x, y: nt_xent(x, y, temperature=0.3, reduction="sum"), a, b
    )
    torch.testing.assert_close(sum(r[0] for r in summed) / world, loss, atol=1e-8, rtol=0)
    torch.testing.assert_close(torch.cat([r[1] for r in summed]) / world, ga, atol=1e-8, rtol=0)
    torch.testing.assert_close(torch.cat([r[2] for r in summed]) / world, gb, atol=1e-8, rtol=0)

    per_pair = dist_pool.run(_dist_case, sizes, "none", 3)
    expected = nt_xent(a, b, temperature=0.3, reduction="none")
    assert [r[0].shape for r in per_pair] == [(3,), (5,)]
    torch.testing.assert_close(torch.cat([r[0] for r in per_pair]), expected, atol=1e-8, rtol=0)


def _naive_gather(x: torch.Tensor) -> torch.Tensor:
    """What many repositories do: all_gather (no autograd), then put the local rows back."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts)


def _naive_case(
    rank: int, world: int, sizes: list[int]
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    a_all, b_all = _global_pair(sizes)
    rows = _rank_slice(rank, sizes)
    out = []
    for naive in (True, False):
        a = a_all[rows].clone().requires_grad_(True)
        b = b_all[rows].clone().requires_grad_(True)
        if naive:
            # local anchors against all gathered candidates, self-similarity masked
            u = F.normalize(torch.cat([a, b]), dim=1)  # (2N, D)
            cand = F.normalize(torch.cat([_naive_gather(a), _naive_gather(b)]), dim=1)
            n, n_g = a.shape[0], sum(sizes)
            own = torch.arange(rows.start, rows.stop)
            logits = u @ cand.T / 0.3  # (2N, 2N_g)
            logits[torch.arange(2 * n), torch.cat([own, own + n_g])] = float("-inf")
            loss = F.cross_entropy(logits, torch.cat([own + n_g, own]))
        else:
            loss = nt_xent(a, b, temperature=0.3, gather_distributed=True)
        loss.backward()
        assert a.grad is not None and b.grad is not None
        out.append((loss.detach(), a.grad, b.grad))
    return out[0], out[1]


def test_naive_gather_breaks_the_gradient_invariant(dist_pool) -> None:
    sizes = [4, 4]
    world = len(sizes)
    results = dist_pool.run(_naive_case, sizes)
    a, b = _global_pair(sizes)
    loss, ga, gb = value_and_grads(lambda x, y: nt_xent(x, y, temperature=0.3), a, b)
    for which, holds in ((0, False), (1, True)):
        # the loss value is right either way (equal batch sizes) ...
        mean = sum(r[which][0] for r in results) / world
        torch.testing.assert_close(mean, loss, atol=1e-8, rtol=0)
        # ... but only the autograd-aware gather gets the gradients right
        grads = torch.cat([torch.cat([r[which][1], r[which][2]], dim=1) for r in results])
        error = (grads / world - torch.cat([ga, gb], dim=1)).abs().max().item()
        assert (error < 1e-8) if holds else (error > 1e-3), (which, error)
