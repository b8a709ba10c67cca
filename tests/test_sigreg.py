"""LeJEPA's SIGReg and loss: references, the paper's form, randomness, distributed, errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from helpers import assert_all_close, value_and_grads
from hypothesis import given
from hypothesis import strategies as st
from strategies import SEEDS

from benchmarks.references import lightly_lejepa, lightly_sigreg, paper_sigreg
from sslosses import LeJEPALoss, SIGRegLoss
from sslosses.functional import lejepa_loss, sigreg_loss

F64 = torch.float64
TOL = {"rtol": 1e-10, "atol": 1e-10}


def _rows(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _directions(d: int, s: int, seed: int = 1) -> torch.Tensor:
    a = _rows(d, s, seed=seed)
    return a / a.norm(dim=0)


# ---------------------------------------------------------------- references
@given(
    st.integers(1, 12),
    st.integers(1, 6),
    st.integers(1, 9),
    st.sampled_from([2, 5, 17]),
    st.sampled_from([1.0, 3.0, 5.0]),
    st.sampled_from([None, 3]),
    SEEDS,
)
def test_sigreg_matches_lightly_and_the_paper(
    n: int, d: int, s: int, knots: int, t_max: float, views: int | None, seed: int
) -> None:
    x = _rows(n, d, seed=seed) if views is None else _rows(views, n, d, seed=seed)
    a = _directions(d, s, seed=seed + 1)

    def ours(t: torch.Tensor) -> torch.Tensor:
        return sigreg_loss(t, projections=a, knots=knots, t_max=t_max)

    got = value_and_grads(ours, x)
    assert_all_close(got, value_and_grads(lambda t: lightly_sigreg(t, a, knots, t_max), x), **TOL)
    # The paper's complex form on the symmetric grid: the same integral
    assert_all_close(got, value_and_grads(lambda t: paper_sigreg(t, a, knots, t_max), x), **TOL)


@given(st.integers(1, 8), st.integers(1, 5), st.integers(0, 3), st.sampled_from([0.0, 0.05, 1.0]))
def test_lejepa_matches_lightly(n: int, d: int, n_local: int, lambd: float) -> None:
    views = [_rows(n, d, seed=v) for v in range(2 + n_local)]
    a = _directions(d, 7)

    def ours(t: list[torch.Tensor]) -> torch.Tensor:
        return lejepa_loss(t[:2], t[2:], lambd=lambd, projections=a)

    def theirs(t: list[torch.Tensor]) -> torch.Tensor:
        local = torch.stack(t[2:]) if n_local else torch.empty(0, n, d, dtype=F64)
        return lightly_lejepa(local, torch.stack(t[:2]), a, lambd)

    assert_all_close(
        value_and_grads(lambda *t: ours(list(t)), *views),
        value_and_grads(lambda *t: theirs(list(t)), *views),
        **TOL,
    )


def test_gradcheck() -> None:
    x = _rows(6, 3, seed=2).requires_grad_(True)
    a = _directions(3, 4)
    assert torch.autograd.gradcheck(lambda t: sigreg_loss(t, projections=a, knots=5), (x,))
    views = [_rows(5, 3, seed=s).requires_grad_(True) for s in (3, 4, 5)]
    assert torch.autograd.gradcheck(
        lambda *v: lejepa_loss(v[:2], v[2:], lambd=0.3, projections=a, knots=5), views
    )


# ---------------------------------------------------------------- properties
def test_a_gaussian_scores_low_and_a_collapse_high() -> None:
    gen = torch.Generator().manual_seed(0)
    gaussian = torch.randn(4096, 8, generator=gen, dtype=F64)
    a = _directions(8, 64)
    low = float(sigreg_loss(gaussian, projections=a))
    # E[T] for a true Gaussian is a constant of order 1 (here about 1), whatever N
    assert 0.2 < low < 3.0
    assert float(sigreg_loss(torch.zeros(4096, 8, dtype=F64), projections=a)) > 100 * low
    assert float(sigreg_loss(0.1 * gaussian, projections=a)) > 100 * low  # too narrow


@given(st.integers(2, 10), st.integers(1, 5), SEEDS)
def test_invariant_to_row_order_and_to_a_rotation_with_its_directions(
    n: int, d: int, seed: int
) -> None:
    x = _rows(n, d, seed=seed)
    a = _directions(d, 6, seed=seed + 1)
    base = sigreg_loss(x, projections=a)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(sigreg_loss(x[perm], projections=a), base, **TOL)
    q = torch.linalg.qr(_rows(d, d, seed=seed + 2))[0]
    torch.testing.assert_close(sigreg_loss(x @ q, projections=q.T @ a), base, **TOL)


def test_views_are_averaged() -> None:
    x = _rows(3, 10, 4, seed=6)
    a = _directions(4, 5)
    each = torch.stack([sigreg_loss(v, projections=a) for v in x]).mean()
    torch.testing.assert_close(sigreg_loss(x, projections=a), each, **TOL)


def test_prediction_term_alone() -> None:
    g = [_rows(4, 3, seed=s) for s in (1, 2)]
    local = [_rows(4, 3, seed=3)]
    center = (g[0] + g[1]) / 2
    expected = sum((v - center).square().sum() for v in (*g, *local)) / (3 * 4 * 3)
    torch.testing.assert_close(lejepa_loss(g, local, lambd=0.0), expected, **TOL)
    torch.testing.assert_close(lejepa_loss([g[0], g[0]], lambd=0.0), torch.tensor(0.0, dtype=F64))


def test_a_seeded_generator_reproduces_and_draws_unit_directions() -> None:
    x = _rows(32, 5, seed=7)
    a, b, c = (sigreg_loss(x, generator=torch.Generator().manual_seed(s)) for s in (3, 3, 4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    gen = torch.Generator().manual_seed(3)
    drawn = torch.randn(5, 1024, generator=gen, dtype=F64)
    drawn = drawn / drawn.norm(dim=0)
    torch.testing.assert_close(sigreg_loss(x, projections=drawn), a, **TOL)


def test_half_inputs_and_autocast_compute_in_float32() -> None:
    x = _rows(16, 4, seed=8)
    a = _directions(4, 8).float()
    for dtype in (torch.float16, torch.bfloat16):
        low = x.to(dtype)
        got = sigreg_loss(low, projections=a)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, sigreg_loss(low.float(), projections=a), rtol=0, atol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = sigreg_loss(x.float(), projections=a)
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, sigreg_loss(x.float(), projections=a), rtol=0, atol=0)


def test_modules_delegate() -> None:
    x = [_rows(6, 3, seed=s) for s in (1, 2, 3)]
    a = _directions(3, 4)
    sig = SIGRegLoss(num_slices=4, knots=5, t_max=2.0)
    assert repr(sig) == "SIGRegLoss(num_slices=4, knots=5, t_max=2.0, gather_distributed=False)"
    assert torch.equal(sig(x[0], a), sigreg_loss(x[0], projections=a, knots=5, t_max=2.0))
    lej = LeJEPALoss(lambd=0.2, knots=5)
    assert repr(lej) == (
        "LeJEPALoss(lambd=0.2, num_slices=1024, knots=5, t_max=3.0, gather_distributed=False)"
    )
    assert torch.equal(
        lej(x[:2], x[2:], a), lejepa_loss(x[:2], x[2:], lambd=0.2, knots=5, projections=a)
    )


# ---------------------------------------------------------------- distributed (W = 2 and 3)
SIZES = {2: [3, 5], 3: [3, 0, 4]}  # unequal, and an empty rank at W = 3


def _slice(rank: int, sizes: list[int]) -> slice:
    return slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))


def _global(world: int) -> list[torch.Tensor]:
    return [_rows(sum(SIZES[world]), 4, seed=s) for s in (11, 12, 13)]


def _calls(views: list[torch.Tensor], gather: bool, seed: int | None) -> list[torch.Tensor]:
    a = _directions(4, 6)
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    drawn = sigreg_loss(views[0], num_slices=5, generator=gen, gather_distributed=gather)
    return [
        sigreg_loss(views[0], projections=a, gather_distributed=gather),
        sigreg_loss(torch.stack(views), projections=a, gather_distributed=gather),
        lejepa_loss(views[:2], views[2:], lambd=0.3, projections=a, gather_distributed=gather),
        drawn,
    ]


def _dist_case(rank: int, world: int) -> list[tuple[torch.Tensor, ...]]:
    views = [v[_slice(rank, SIZES[world])] for v in _global(world)]
    # each rank's generator differs: the drawn directions are rank 0's, broadcast
    seed = 100 + rank
    return [
        value_and_grads(lambda *t, i=i: _calls(list(t), True, seed)[i], *views) for i in range(4)
    ]


def test_distributed_matches_single_process(dist_pool_w: Any) -> None:
    world = dist_pool_w.world_size
    sizes = SIZES[world]
    results = dist_pool_w.run(_dist_case)
    views = _global(world)
    for i in range(4):
        expected = value_and_grads(lambda *t, i=i: _calls(list(t), False, 100)[i], *views)
        values = torch.stack([results[rank][i][0] for rank in range(world)])
        if i == 2:  # LeJEPA: the prediction term is this rank's share of the global mean
            torch.testing.assert_close(values.mean(), expected[0], **TOL)
        else:  # SIGReg: every rank returns the global statistic
            torch.testing.assert_close(values, expected[0].expand(world), **TOL, msg=f"{i}")
        for rank in range(world):
            for got, want in zip(results[rank][i][1:], expected[1:], strict=True):
                torch.testing.assert_close(
                    got / world, want[_slice(rank, sizes)], **TOL, msg=f"{i} rank {rank}"
                )


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda x: sigreg_loss(x[0]), ValueError, "x must be a 2-D tensor"),
        (lambda x: sigreg_loss(x[:0]), ValueError, "at least 1 row"),
        (lambda x: sigreg_loss(x, num_slices=0), ValueError, "num_slices"),
        (lambda x: sigreg_loss(x, knots=1), ValueError, "knots"),
        (lambda x: sigreg_loss(x, t_max=0.0), ValueError, "t_max must be a finite number > 0"),
        (lambda x: sigreg_loss(x, generator=1), TypeError, "generator must be"),
        (
            lambda x: sigreg_loss(x, projections=torch.ones(2, 3, dtype=F64)),
            ValueError,
            r"projections must have shape \(D, S\) with D=3",
        ),
        (lambda x: sigreg_loss(x, projections="a"), TypeError, "projections must be"),
        (lambda x: lejepa_loss([]), ValueError, r"global_views must hold at least 1"),
        (lambda x: lejepa_loss(x), TypeError, "global_views must be a list or tuple"),
        (lambda x: lejepa_loss([x], [x[:, :2]]), ValueError, "same shape"),
        (lambda x: lejepa_loss([x], lambd=1.5), ValueError, "lambd"),
        (lambda x: LeJEPALoss(lambd=-0.1), ValueError, "lambd"),
        (lambda x: SIGRegLoss(knots=1), ValueError, "knots"),
    ],
)
def test_bad_input_is_named(call: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call(_rows(5, 3))
