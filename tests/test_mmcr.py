"""MMCR: reference, the nuclear norm's gradient, invariants, distributed, errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from helpers import assert_all_close, value_and_grads
from hypothesis import given
from hypothesis import strategies as st
from strategies import SEEDS, positive_scales

from benchmarks.references import mmcr
from sslosses import MMCRLoss
from sslosses.functional import mmcr_loss

F64 = torch.float64
TOL = {"rtol": 1e-10, "atol": 1e-10}


def _views(n: int, d: int, v: int, *, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=gen, dtype=F64) for _ in range(v)]


def _sample_major(views: list[torch.Tensor]) -> torch.Tensor:
    """The original's ``(B * n_aug, C)`` layout: sample b's views in rows b*V .. b*V + V - 1."""
    return torch.stack(views, dim=1).reshape(-1, views[0].shape[1])


# ---------------------------------------------------------------- reference and exactness
@given(
    st.integers(1, 9),
    st.integers(1, 7),
    st.integers(1, 4),
    st.sampled_from([0.0, 0.005, 0.3]),
    SEEDS,
)
def test_matches_the_original(n: int, d: int, v: int, lambd: float, seed: int) -> None:
    views = _views(n, d, v, seed=seed)
    ours = value_and_grads(lambda *t: mmcr_loss(list(t), lambd=lambd), *views)
    theirs = value_and_grads(lambda *t: mmcr(_sample_major(list(t)), v, lambd), *views)
    assert_all_close(ours, theirs, **TOL)


@given(st.integers(1, 8), st.integers(2, 6), st.sampled_from([0.0, 0.1]), SEEDS)
def test_matches_the_original_momentum_variant(n: int, d: int, lambd: float, seed: int) -> None:
    views = _views(n, d, 4, seed=seed)
    ours = value_and_grads(
        lambda *t: mmcr_loss(list(t[:2]), target_views=list(t[2:]), lambd=lambd), *views
    )
    theirs = value_and_grads(
        lambda *t: mmcr(
            _sample_major(list(t[:2])), 2, lambd, z_momentum=_sample_major(list(t[2:]))
        ),
        *views,
    )
    assert_all_close(ours, theirs, **TOL)


def test_nuclear_norm_is_the_sum_of_root_eigenvalues() -> None:
    # An independent formulation: ||C||_* = sum sqrt(eig(C C^T)), without any SVD.
    views = _views(7, 5, 3, seed=4)
    lambd = 0.2
    normed = [v / v.norm(dim=1, keepdim=True) for v in views]
    centroids = torch.stack(normed).mean(dim=0)  # (N, D)
    spread = sum(
        torch.linalg.eigvalsh(z @ z.T).clamp_min(0).sqrt().sum()
        for z in torch.stack(normed, dim=1)  # (V, D) per sample
    )
    nuclear = torch.linalg.eigvalsh(centroids.T @ centroids).clamp_min(0).sqrt().sum()
    expected = -nuclear + lambd * spread / 7
    torch.testing.assert_close(mmcr_loss(views, lambd=lambd), expected, rtol=1e-10, atol=1e-10)


def test_gradcheck_with_both_terms_and_targets() -> None:
    views = [v.requires_grad_(True) for v in _views(5, 4, 4, seed=2)]
    assert torch.autograd.gradcheck(
        lambda *t: mmcr_loss(t[:3], target_views=t[3:], lambd=0.3), views
    )


def test_lambd_adds_the_mean_per_sample_nuclear_norm() -> None:
    views = _views(6, 5, 3, seed=5)
    z = torch.stack([v / v.norm(dim=1, keepdim=True) for v in views], dim=1)  # (N, V, D)
    mean_spread = torch.linalg.matrix_norm(z, ord="nuc").mean()
    gap = mmcr_loss(views, lambd=0.4) - mmcr_loss(views)
    torch.testing.assert_close(gap, 0.4 * mean_spread, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- the nuclear norm's gradient
def test_gradient_at_repeated_singular_values_is_u_v_transpose() -> None:
    # Orthonormal centroids: every singular value is 1 (repeated), and d||C||_*/dC = U V^T = C.
    c = torch.zeros(4, 6, dtype=F64)
    c[:, :4] = torch.linalg.qr(
        torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    )[0]
    leaf = c.clone().requires_grad_(True)
    loss = mmcr_loss([leaf], normalize=False)
    (grad,) = torch.autograd.grad(loss, [leaf])
    torch.testing.assert_close(loss, torch.tensor(-4.0, dtype=F64), **TOL)
    torch.testing.assert_close(grad, -c, **TOL)


@pytest.mark.parametrize("normalize", [True, False])
def test_collapsed_batch_is_finite(normalize: bool) -> None:
    # Every sample and view the same vector: rank 1, zero singular values (a subgradient).
    row = torch.tensor([[1.0, 2.0, -1.0]], dtype=F64)
    views = [row.repeat(5, 1).requires_grad_(True) for _ in range(2)]
    loss = mmcr_loss(views, lambd=0.1, normalize=normalize)
    grads = torch.autograd.grad(loss, views)
    norm = 1.0 if normalize else float(row.norm())
    expected = -(5**0.5) * norm + 0.1 * (2**0.5) * norm  # ||C||_* = sqrt(5), ||Z_i||_* = sqrt(2)
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=F64), **TOL)
    assert all(bool(torch.isfinite(g).all()) for g in grads)


def test_float32_and_half_inputs_stay_finite_on_a_collapsed_batch() -> None:
    views = [torch.ones(8, 4, dtype=torch.float16) for _ in range(3)]
    loss = mmcr_loss(views, lambd=0.5)
    assert loss.dtype == torch.float32 and bool(torch.isfinite(loss))


# ---------------------------------------------------------------- invariants
@given(st.integers(2, 8), st.integers(2, 6), SEEDS)
def test_invariant_to_sample_and_view_order(n: int, d: int, seed: int) -> None:
    views = _views(n, d, 3, seed=seed)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    base = mmcr_loss(views, lambd=0.2)
    torch.testing.assert_close(mmcr_loss([v[perm] for v in views], lambd=0.2), base, **TOL)
    torch.testing.assert_close(mmcr_loss(views[::-1], lambd=0.2), base, **TOL)


@given(st.integers(2, 8), st.integers(2, 6), SEEDS, positive_scales())
def test_invariant_to_row_scale_when_normalized(n: int, d: int, seed: int, scale: float) -> None:
    views = _views(n, d, 2, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    scales = [scale * (0.5 + torch.rand(n, 1, generator=gen, dtype=F64)) for _ in views]
    scaled = [v * s for v, s in zip(views, scales, strict=True)]
    torch.testing.assert_close(mmcr_loss(scaled, lambd=0.1), mmcr_loss(views, lambd=0.1), **TOL)


@given(st.integers(1, 8), st.integers(1, 6), SEEDS)
def test_invariant_to_a_rotation_of_the_features(n: int, d: int, seed: int) -> None:
    views = _views(n, d, 3, seed=seed)
    q = torch.linalg.qr(
        torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    )[0]
    rotated = [v @ q for v in views]
    torch.testing.assert_close(mmcr_loss(rotated, lambd=0.3), mmcr_loss(views, lambd=0.3), **TOL)


def test_agreeing_orthogonal_samples_reach_the_minimum() -> None:
    # Unit centroids: ||C||_* <= sqrt(rank) ||C||_F <= sqrt(min(N, D) N), met by orthonormal
    # rows; random views stay above it.
    eye = torch.eye(5, dtype=F64)
    torch.testing.assert_close(mmcr_loss([eye, eye]), torch.tensor(-5.0, dtype=F64), **TOL)
    assert float(mmcr_loss(_views(5, 5, 2, seed=9))) > -5.0


def test_module_repr_and_targets() -> None:
    views = _views(4, 3, 2, seed=1)
    targets = _views(4, 3, 2, seed=2)
    module = MMCRLoss(lambd=0.1, normalize=False)
    assert repr(module) == "MMCRLoss(lambd=0.1, normalize=False, gather_distributed=False)"
    torch.testing.assert_close(
        module(views, targets),
        mmcr_loss(views, target_views=targets, lambd=0.1, normalize=False),
        rtol=0.0,
        atol=0.0,
    )


# ---------------------------------------------------------------- distributed (W = 2 and 3)
SIZES = {2: [3, 5], 3: [3, 1, 4]}  # unequal per-rank batch sizes, rank 0's rows first
OPTIONS = [(lambd, targets) for lambd in (0.0, 0.2) for targets in (False, True)]


def _slice(rank: int, sizes: list[int]) -> slice:
    return slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))


def _loss(views: list[torch.Tensor], lambd: float, targets: bool, gather: bool) -> torch.Tensor:
    if targets:
        return mmcr_loss(views[:2], target_views=views[2:], lambd=lambd, gather_distributed=gather)
    return mmcr_loss(views, lambd=lambd, gather_distributed=gather)


def _dist_case(rank: int, world: int) -> list[tuple[torch.Tensor, ...]]:
    views = [v[_slice(rank, SIZES[world])] for v in _views(sum(SIZES[world]), 5, 4, seed=7)]
    return [
        value_and_grads(lambda *t, lam=lam, tg=tg: _loss(list(t), lam, tg, True), *views)
        for lam, tg in OPTIONS
    ]


def test_distributed_matches_single_process(dist_pool_w: Any) -> None:
    world = dist_pool_w.world_size
    sizes = SIZES[world]
    results = dist_pool_w.run(_dist_case)
    views = _views(sum(sizes), 5, 4, seed=7)
    for i, (lambd, targets) in enumerate(OPTIONS):
        expected = value_and_grads(
            lambda *t, lam=lambd, tg=targets: _loss(list(t), lam, tg, False), *views
        )
        mean = torch.stack([r[i][0] for r in results]).mean()
        torch.testing.assert_close(mean, expected[0], **TOL, msg=f"lambd={lambd} {targets}")
        for rank in range(world):
            for got, want in zip(results[rank][i][1:], expected[1:], strict=True):
                torch.testing.assert_close(
                    got / world, want[_slice(rank, sizes)], **TOL, msg=f"rank {rank}"
                )


def test_gather_without_a_process_group_is_local() -> None:
    views = _views(5, 4, 2, seed=3)
    torch.testing.assert_close(
        mmcr_loss(views, lambd=0.1, gather_distributed=True), mmcr_loss(views, lambd=0.1), **TOL
    )


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda v: mmcr_loss(v[0]), TypeError, "views must be a list or tuple"),
        (lambda v: mmcr_loss([]), ValueError, r"views must hold at least 1 crop\(s\), got 0"),
        (lambda v: mmcr_loss([v[0][0]]), ValueError, r"views\[0\] must be a 2-D tensor"),
        (lambda v: mmcr_loss([v[0], v[1][:3]]), ValueError, "same shape"),
        (
            lambda v: mmcr_loss([v[0][:0]]),
            ValueError,
            r"views\[0\] must have a batch size of at least 1",
        ),
        (lambda v: mmcr_loss(v, lambd=-0.1), ValueError, "lambd must be a finite number >= 0"),
        (lambda v: mmcr_loss(v, lambd="1"), TypeError, "lambd must be a float"),
        (lambda v: mmcr_loss(v, normalize=1), TypeError, "normalize must be a bool"),
        (
            lambda v: mmcr_loss(v, target_views=[v[0][:, :2]]),
            ValueError,
            r"views\[0\] and target_views\[0\] must have the same shape",
        ),
        (lambda v: mmcr_loss(v, target_views=v[0]), TypeError, "target_views must be a list"),
        (lambda v: mmcr_loss([v[0].long()]), TypeError, "floating"),
        (lambda v: MMCRLoss(lambd=float("nan")), ValueError, "lambd must be a finite number"),
    ],
)
def test_bad_input_is_named(call: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call(_views(4, 3, 2))
