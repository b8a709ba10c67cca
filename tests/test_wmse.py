"""W-MSE: reference with the same permutations, whitening invariants, randomness, errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from helpers import assert_all_close, value_and_grads
from hypothesis import given
from hypothesis import strategies as st
from strategies import SEEDS

from benchmarks.references import wmse
from sslosses import WMSELoss
from sslosses.functional import wmse_loss

F64 = torch.float64
TOL = {"rtol": 1e-10, "atol": 1e-10}


def _views(n: int, d: int, v: int, *, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, generator=gen, dtype=F64)
    return [base + torch.randn(n, d, generator=gen, dtype=F64) for _ in range(v)]


def _perms(n: int, w_iter: int, seed: int) -> list[torch.Tensor]:
    """The permutations ``wmse_loss`` draws from ``Generator().manual_seed(seed)``."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=gen) for _ in range(w_iter)]


# ---------------------------------------------------------------- reference and exactness
@given(
    st.integers(1, 3),  # sub-batches
    st.integers(1, 4),  # D
    st.integers(2, 4),  # views
    st.integers(1, 3),  # w_iter
    st.sampled_from([0.0, 0.1]),
    st.booleans(),
    SEEDS,
)
def test_matches_the_original(
    groups: int, d: int, v: int, w_iter: int, eps: float, normalize: bool, seed: int
) -> None:
    w_size = 2 * d + 2
    n = groups * w_size
    views = _views(n, d, v, seed=seed)

    def ours(t: list[torch.Tensor]) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return wmse_loss(
            t, w_size=w_size, w_iter=w_iter, eps=eps, normalize=normalize, generator=gen
        )

    def theirs(t: list[torch.Tensor]) -> torch.Tensor:
        return wmse(torch.cat(t), v, w_size, _perms(n, w_iter, seed), eps=eps, norm=normalize)

    assert_all_close(
        value_and_grads(lambda *t: ours(list(t)), *views),
        value_and_grads(lambda *t: theirs(list(t)), *views),
        rtol=1e-9,
        atol=1e-10,
    )


def test_gradcheck_through_the_whitening() -> None:
    views = [t.requires_grad_(True) for t in _views(12, 3, 3, seed=1)]

    def fn(*t: torch.Tensor) -> torch.Tensor:
        return wmse_loss(t, w_size=6, w_iter=2, generator=torch.Generator().manual_seed(4))

    assert torch.autograd.gradcheck(fn, views)


def test_whitened_sub_batch_has_identity_covariance() -> None:
    from sslosses.wmse import _whiten

    rows = torch.randn(20, 4, generator=torch.Generator().manual_seed(2), dtype=F64)
    z = _whiten(rows, 0.0)
    torch.testing.assert_close(z.T @ z / 19, torch.eye(4, dtype=F64), **TOL)
    torch.testing.assert_close(z.mean(dim=0), torch.zeros(4, dtype=F64), **TOL)


# ---------------------------------------------------------------- invariants
@given(st.integers(2, 5), SEEDS)
def test_invariant_to_an_affine_map_with_a_triangular_matrix(d: int, seed: int) -> None:
    # x -> x U + b with U upper triangular (positive diagonal) gives the same Cholesky-whitened
    # rows: L' = U^T L, so (x U - mean) L'^{-T} = (x - mean) L^{-T}.
    views = _views(4 * d, d, 2, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    u = torch.randn(d, d, generator=gen, dtype=F64).triu()
    u.diagonal().copy_(0.5 + torch.rand(d, generator=gen, dtype=F64))
    b = torch.randn(d, generator=gen, dtype=F64)
    mapped = [v @ u + b for v in views]
    kwargs = {"w_size": 2 * d, "w_iter": 2}
    base = wmse_loss(views, generator=torch.Generator().manual_seed(0), **kwargs)
    moved = wmse_loss(mapped, generator=torch.Generator().manual_seed(0), **kwargs)
    torch.testing.assert_close(moved, base, rtol=1e-8, atol=1e-9)


def test_identical_views_give_zero_and_one_sub_batch_ignores_the_permutation() -> None:
    (x,) = _views(16, 3, 1, seed=3)
    assert float(wmse_loss([x, 3 * x - 1], w_size=8)) < 1e-12
    views = _views(16, 3, 2, seed=4)
    one = [wmse_loss(views, w_size=16, generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
    torch.testing.assert_close(one[0], one[1], **TOL)


def test_the_generator_makes_it_reproducible_and_the_split_matters() -> None:
    views = _views(24, 3, 2, seed=5)
    a, b, c = (
        wmse_loss(views, w_size=8, generator=torch.Generator().manual_seed(s)) for s in (7, 7, 8)
    )
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)  # other sub-batches, another whitening


def test_float16_and_bfloat16_are_whitened_in_float32() -> None:
    views = _views(32, 4, 2, seed=6)

    def loss(t: list[torch.Tensor]) -> torch.Tensor:
        return wmse_loss(t, w_size=16, generator=torch.Generator().manual_seed(2))

    for dtype in (torch.float16, torch.bfloat16):
        rounded = [v.to(dtype) for v in views]
        got = loss(rounded)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, loss([r.float() for r in rounded]), rtol=0.0, atol=0.0)


def test_module_delegates_with_its_generator() -> None:
    views = _views(16, 2, 2, seed=8)
    module = WMSELoss(w_size=8, w_iter=3, eps=0.1, normalize=False)
    assert repr(module) == "WMSELoss(w_size=8, w_iter=3, eps=0.1, normalize=False)"
    got = module(views, torch.Generator().manual_seed(1))
    want = wmse_loss(
        views,
        w_size=8,
        w_iter=3,
        eps=0.1,
        normalize=False,
        generator=torch.Generator().manual_seed(1),
    )
    assert torch.equal(got, want)


# ---------------------------------------------------------------- errors
def test_a_rank_deficient_sub_batch_is_named() -> None:
    views = _views(8, 4, 2, seed=9)
    with pytest.raises(ValueError, match=r"w_size=4 rows and D=4 features is not positive"):
        wmse_loss(views, w_size=4)  # 4 rows: the covariance has rank 3 < D
    collapsed = [torch.ones(16, 3, dtype=F64), torch.ones(16, 3, dtype=F64)]
    with pytest.raises(ValueError, match="raise w_size or set eps > 0"):
        wmse_loss(collapsed, w_size=8)
    shrunk = wmse_loss(views, w_size=4, eps=0.5)  # eps > 0 makes it positive definite
    assert bool(torch.isfinite(shrunk))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda v: wmse_loss(v[:1], w_size=4), ValueError, r"at least 2 crop\(s\), got 1"),
        (lambda v: wmse_loss(v[0], w_size=4), TypeError, "views must be a list or tuple"),
        (lambda v: wmse_loss(v, w_size=5), ValueError, "multiple of w_size=5"),
        (lambda v: wmse_loss(v, w_size=1), ValueError, "w_size must be at least 2"),
        (lambda v: wmse_loss(v, w_size=0), ValueError, "w_size"),
        (lambda v: wmse_loss(v, w_size=4.0), TypeError, "w_size"),
        (lambda v: wmse_loss(v, w_size=4, w_iter=0), ValueError, "w_iter"),
        (lambda v: wmse_loss(v, w_size=4, eps=1.5), ValueError, "eps"),
        (lambda v: wmse_loss(v, w_size=4, generator=0), TypeError, "generator must be"),
        (lambda v: wmse_loss(v, w_size=4, normalize="yes"), TypeError, "normalize must be a bool"),
        (lambda v: wmse_loss([v[0], v[1][:4]], w_size=4), ValueError, "same shape"),
        (lambda v: WMSELoss(w_size=1), ValueError, "w_size must be at least 2"),
    ],
)
def test_bad_input_is_named(call: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call(_views(8, 2, 2))
