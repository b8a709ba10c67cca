"""TiCo: reference over several steps, the covariance as state, invariants, distributed, errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from helpers import assert_all_close, value_and_grads
from hypothesis import given
from hypothesis import strategies as st
from strategies import SEEDS, embeddings, positive_scales

import sslosses
from benchmarks.references import tico
from sslosses import TiCoCovariance, TiCoLoss
from sslosses.functional import tico_loss

F64 = torch.float64
TOL = {"rtol": 1e-10, "atol": 1e-10}


def _rows(n: int, d: int, *, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ---------------------------------------------------------------- reference and exactness
@given(
    embeddings(min_n=1, max_n=10, min_d=1, max_d=8, count=6),
    st.sampled_from([0.0, 0.5, 0.9, 1.0]),
    st.sampled_from([0.0, 1.0, 8.0]),
)
def test_three_steps_match_lightly(
    views: tuple[torch.Tensor, ...], beta: float, rho: float
) -> None:
    # lightly updates C inside forward; here: update, then the loss of the new C
    d = views[0].shape[1]
    covariance = TiCoCovariance(d, beta=beta, dtype=F64)
    running = torch.zeros(d, d, dtype=F64)
    for step in range(3):
        z_a, z_b = views[2 * step], views[2 * step + 1]
        covariance.update(z_a)
        ours = value_and_grads(
            lambda a, b: tico_loss(a, b, covariance.covariance, rho=rho), z_a, z_b
        )
        theirs = value_and_grads(lambda a, b, r=running: tico(a, b, r, beta, rho)[0], z_a, z_b)
        assert_all_close(ours, theirs, **TOL)
        running = tico(z_a, z_b, running, beta, rho)[1]
        torch.testing.assert_close(covariance.covariance, running, **TOL)


def test_gradcheck_and_the_covariance_is_not_differentiated() -> None:
    a, b = (_rows(5, 4, seed=s).requires_grad_(True) for s in (1, 2))
    c = (_rows(4, 4, seed=3) @ _rows(4, 4, seed=3).T).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, y: tico_loss(x, y, c, rho=2.0), (a, b))
    loss = tico_loss(a, b, c)
    assert not torch.autograd.grad(loss, [a, b, c], allow_unused=True)[2]  # None: no gradient


def test_per_sample_terms_and_reductions() -> None:
    a, b = _rows(6, 3, seed=4), _rows(6, 3, seed=5)
    c = torch.diag(torch.tensor([1.0, 2.0, 0.5], dtype=F64))
    na, nb = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    terms = 1 - (na * nb).sum(1) + 3.0 * (na.pow(2) * torch.tensor([1.0, 2.0, 0.5])).sum(1)
    none = tico_loss(a, b, c, rho=3.0, reduction="none")
    torch.testing.assert_close(none, terms, **TOL)
    torch.testing.assert_close(tico_loss(a, b, c, rho=3.0), terms.mean(), **TOL)
    torch.testing.assert_close(tico_loss(a, b, c, rho=3.0, reduction="sum"), terms.sum(), **TOL)


# ---------------------------------------------------------------- invariants
@given(embeddings(min_n=2, max_n=10, min_d=2, max_d=8, count=2), SEEDS)
def test_invariant_to_sample_order(views: tuple[torch.Tensor, ...], seed: int) -> None:
    a, b = views
    n, d = a.shape
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    first, second = TiCoCovariance(d, dtype=F64), TiCoCovariance(d, dtype=F64)
    first.update(a)
    second.update(a[perm])
    torch.testing.assert_close(second.covariance, first.covariance, **TOL)
    torch.testing.assert_close(
        tico_loss(a[perm], b[perm], second.covariance), tico_loss(a, b, first.covariance), **TOL
    )


@given(embeddings(min_n=2, max_n=10, min_d=2, max_d=8, count=2), positive_scales())
def test_invariant_to_row_scale_when_normalized(
    views: tuple[torch.Tensor, ...], scale: float
) -> None:
    a, b = views
    weights = scale * torch.linspace(0.5, 2.0, a.shape[0], dtype=F64)[:, None]
    first, second = TiCoCovariance(a.shape[1], dtype=F64), TiCoCovariance(a.shape[1], dtype=F64)
    first.update(a)
    second.update(a * weights)
    torch.testing.assert_close(second.covariance, first.covariance, **TOL)
    torch.testing.assert_close(
        tico_loss(a * weights, b / weights, second.covariance),
        tico_loss(a, b, first.covariance),
        **TOL,
    )


def test_equal_views_and_zero_covariance_give_zero() -> None:
    a = _rows(5, 4, seed=6)
    loss = tico_loss(a, 3 * a, torch.zeros(4, 4, dtype=F64))
    torch.testing.assert_close(loss, torch.zeros((), dtype=F64), **TOL)


def test_covariance_is_psd_with_unit_trace_after_updates() -> None:
    # Normalized rows: every batch term has trace 1, so from zero the trace is 1 - beta^t.
    covariance = TiCoCovariance(6, beta=0.8, dtype=F64)
    for step in range(1, 5):
        covariance.update(_rows(7, 6, seed=step))
        trace = torch.trace(covariance.covariance)
        torch.testing.assert_close(trace, torch.tensor(1 - 0.8**step, dtype=F64), **TOL)
        assert float(torch.linalg.eigvalsh(covariance.covariance).min()) > -1e-12


def test_covariance_state_round_trips_and_continues_identically() -> None:
    covariance = TiCoCovariance(4, beta=0.7)
    covariance.update(torch.randn(8, 4))
    restored = TiCoCovariance(4, beta=0.7)
    restored.load_state_dict(covariance.state_dict())
    batch = torch.randn(8, 4)
    covariance.update(batch)
    restored.update(batch)
    assert torch.equal(restored.covariance, covariance.covariance)
    assert list(covariance.state_dict()) == ["covariance"]


def test_half_inputs_update_a_float32_covariance() -> None:
    covariance = TiCoCovariance(4)
    covariance.update(torch.randn(8, 4).half())
    assert covariance.covariance.dtype == torch.float32
    full = TiCoCovariance(4)
    full.update(covariance.covariance.new_ones(8, 4))
    torch.testing.assert_close(torch.trace(full.covariance), torch.tensor(0.1))


def test_module_repr_and_delegation() -> None:
    a, b = _rows(5, 3, seed=1), _rows(5, 3, seed=2)
    c = torch.eye(3, dtype=F64)
    module = TiCoLoss(rho=2.0, reduction="sum")
    assert repr(module) == (
        "TiCoLoss(rho=2.0, normalize=True, gather_distributed=False, reduction='sum')"
    )
    assert torch.equal(module(a, b, c), tico_loss(a, b, c, rho=2.0, reduction="sum"))


# ---------------------------------------------------------------- distributed (W = 2 and 3)
SIZES = {2: [3, 5], 3: [3, 1, 4]}  # unequal per-rank batch sizes, rank 0's rows first


def _slice(rank: int, sizes: list[int]) -> slice:
    return slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))


def _global(world: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = sum(SIZES[world])
    return _rows(n, 4, seed=8), _rows(n, 4, seed=9)


def _dist_case(rank: int, world: int) -> list[list[torch.Tensor]]:
    a, b = (x[_slice(rank, SIZES[world])] for x in _global(world))
    covariance = TiCoCovariance(4, beta=0.5, gather_distributed=True, dtype=F64)
    out = []
    for reduction in ("mean", "sum"):
        covariance.update(a)
        c = covariance.covariance.clone()
        out.append(
            [
                c,
                *value_and_grads(
                    lambda x, y, r=reduction, c=c: tico_loss(
                        x, y, c, reduction=r, gather_distributed=True
                    ),
                    a,
                    b,
                ),
            ]
        )
    return out


def test_distributed_matches_single_process(dist_pool_w: Any) -> None:
    world = dist_pool_w.world_size
    sizes = SIZES[world]
    results = dist_pool_w.run(_dist_case)
    a, b = _global(world)
    covariance = TiCoCovariance(4, beta=0.5, dtype=F64)
    for i, reduction in enumerate(("mean", "sum")):
        covariance.update(a)
        c = covariance.covariance
        value, grad_a, grad_b = value_and_grads(
            lambda x, y, r=reduction, c=c: tico_loss(x, y, c, reduction=r), a, b
        )
        for rank in range(world):
            torch.testing.assert_close(results[rank][i][0], c, **TOL)  # the same state
        mean = torch.stack([r[i][1] for r in results]).mean()
        torch.testing.assert_close(mean, value, **TOL)
        for rank in range(world):
            rows = _slice(rank, sizes)
            torch.testing.assert_close(results[rank][i][2] / world, grad_a[rows], **TOL)
            torch.testing.assert_close(results[rank][i][3] / world, grad_b[rows], **TOL)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda a, c: tico_loss(a, a[:, :2], c), ValueError, "same shape"),
        (lambda a, c: tico_loss(a, a, c[:2]), ValueError, r"covariance must have shape \(D, D\)"),
        (lambda a, c: tico_loss(a, a, c[0]), ValueError, "covariance must be a 2-D tensor"),
        (lambda a, c: tico_loss(a, a, "c"), TypeError, "covariance must be a"),
        (lambda a, c: tico_loss(a, a, c, rho=-1.0), ValueError, "rho must be a finite number >= 0"),
        (lambda a, c: tico_loss(a, a, c, reduction="avg"), ValueError, "reduction"),
        (lambda a, c: tico_loss(a[:0], a[:0], c), ValueError, "batch size of at least 1"),
        (lambda a, c: TiCoLoss(rho=float("inf")), ValueError, "rho must be a finite number"),
        (lambda a, c: TiCoCovariance(0), ValueError, "dim"),
        (lambda a, c: TiCoCovariance(3, beta=1.5), ValueError, "beta"),
        (lambda a, c: TiCoCovariance(3, dtype=torch.long), TypeError, "dtype"),
        (lambda a, c: TiCoCovariance(2).update(a), ValueError, "D=2 columns"),
        (lambda a, c: TiCoCovariance(3).update(a[:0]), ValueError, "at least 1 row"),
        (lambda a, c: TiCoCovariance(3).update(a[0]), ValueError, "z must be a 2-D tensor"),
    ],
)
def test_bad_input_is_named(call: Any, error: type[Exception], match: str) -> None:
    a = _rows(4, 3)
    with pytest.raises(error, match=match):
        call(a, torch.eye(3, dtype=F64))


def test_public_names() -> None:
    assert {"TiCoLoss", "TiCoCovariance"} <= set(sslosses.__all__)
    assert "tico_loss" in sslosses.functional.__all__
