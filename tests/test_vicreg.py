"""VICReg loss: reference (facebookresearch/vicreg main_vicreg.py), every algorithm, the terms,
properties, numerics, the auto rule, distributed (W=2 and W=3), errors."""

from __future__ import annotations

import pytest
import torch
from helpers import penalty_gradient, value_and_grads
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import SEEDS, embeddings

from benchmarks.references import vicreg as vicreg_reference
from benchmarks.references import vicreg_terms as vicreg_reference_terms
from sslosses import VICRegTerms
from sslosses import vicreg as vicreg_module
from sslosses.functional import select_algorithm, vicreg_loss, vicreg_terms

ALGORITHMS = ("dense", "gram", "fused", "auto")
COEFFS = {"sim_coeff": 2.0, "std_coeff": 3.0, "cov_coeff": 0.7}


def _pair(
    n: int = 6, d: int = 5, dtype: torch.dtype = torch.float64, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two views whose features have stds on both sides of 1 (both branches of the hinge)."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.2, 2.5, d, dtype=torch.float64)
    z_a = scale * torch.randn(n, d, generator=gen, dtype=torch.float64) + 1
    z_b = z_a + 0.5 * scale * torch.randn(n, d, generator=gen, dtype=torch.float64)
    return z_a.to(dtype), z_b.to(dtype)


def _close(xs: object, ys: object, tol: float = 1e-10) -> None:
    for x, y in zip(xs, ys, strict=True):  # type: ignore[call-overload]
        torch.testing.assert_close(x, y, rtol=tol, atol=tol)


# ------------------------------------------------------------------------------------------
# reference
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(
    ("n", "d"), [(6, 5), (3, 17), (17, 3), (9, 9), (2, 1), (2, 40), (64, 7), (5, 300)]
)
def test_matches_reference_value_and_gradient(algorithm: str, n: int, d: int) -> None:
    z_a, z_b = _pair(n, d)
    ref = value_and_grads(lambda a, b: vicreg_reference(a, b, **COEFFS, eps=1e-3), z_a, z_b)
    ours = value_and_grads(
        lambda a, b: vicreg_loss(a, b, **COEFFS, eps=1e-3, algorithm=algorithm),  # type: ignore[arg-type]
        z_a,
        z_b,
    )
    _close(ours, ref)


@given(embeddings(min_n=2, max_n=14, max_d=14), st.sampled_from(ALGORITHMS), SEEDS)
@settings(max_examples=30)
def test_matches_reference_hypothesis(
    pair: tuple[torch.Tensor, ...], algorithm: str, seed: int
) -> None:
    z_a, z_b = pair
    gen = torch.Generator().manual_seed(seed)
    z_a = z_a * torch.rand(z_a.shape[1], generator=gen, dtype=torch.float64)  # stds below 1 too
    coeffs = [float(c) for c in 3 * torch.rand(3, generator=gen, dtype=torch.float64)]
    ref = value_and_grads(lambda a, b: vicreg_reference(a, b, *coeffs), z_a, z_b)
    ours = value_and_grads(
        lambda a, b: vicreg_loss(
            a,
            b,
            sim_coeff=coeffs[0],
            std_coeff=coeffs[1],
            cov_coeff=coeffs[2],
            algorithm=algorithm,  # type: ignore[arg-type]
        ),
        z_a,
        z_b,
    )
    _close(ours, ref, 1e-9)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_terms_are_the_official_terms_and_make_the_loss(algorithm: str) -> None:
    z_a, z_b = _pair(7, 9)
    terms = vicreg_terms(z_a, z_b, **COEFFS, algorithm=algorithm)  # type: ignore[arg-type]
    assert isinstance(terms, VICRegTerms)
    _close(terms[1:], vicreg_reference_terms(z_a, z_b))
    weighted = 2.0 * terms.invariance + 3.0 * terms.variance + 0.7 * terms.covariance
    torch.testing.assert_close(terms.loss, weighted, rtol=1e-14, atol=0)
    loss = vicreg_loss(z_a, z_b, **COEFFS, algorithm=algorithm)  # type: ignore[arg-type]
    assert torch.equal(loss, terms.loss)
    # every term carries a gradient (one graph, no second computation)
    grads = torch.autograd.grad(
        vicreg_terms(z_a.requires_grad_(True), z_b, algorithm=algorithm).covariance,  # type: ignore[arg-type]
        [z_a],
    )
    assert grads[0].abs().sum() > 0


def test_default_hyperparameters_are_the_official_ones() -> None:
    z_a, z_b = _pair(8, 6)
    torch.testing.assert_close(vicreg_loss(z_a, z_b), vicreg_reference(z_a, z_b, 25, 25, 1, 1e-4))


def test_eps_is_inside_the_square_root() -> None:
    z_a, z_b = _pair(5, 4)
    z_a = 1e-2 * z_a  # variance ~1e-4, comparable to eps
    for eps in (1e-4, 1e-2):
        torch.testing.assert_close(
            vicreg_loss(z_a, z_b, eps=eps), vicreg_reference(z_a, z_b, eps=eps)
        )


# ------------------------------------------------------------------------------------------
# properties
# ------------------------------------------------------------------------------------------
@given(embeddings(min_n=2, max_n=12, max_d=10), st.sampled_from(ALGORITHMS), SEEDS)
@settings(max_examples=25)
def test_terms_non_negative_and_covariance_invariant_to_feature_permutations(
    pair: tuple[torch.Tensor, ...], algorithm: str, seed: int
) -> None:
    z_a, z_b = pair
    gen = torch.Generator().manual_seed(seed)
    z_a = z_a * torch.rand(z_a.shape[1], generator=gen, dtype=torch.float64)
    terms = vicreg_terms(z_a, z_b, algorithm=algorithm)  # type: ignore[arg-type]
    for term in terms:
        assert float(term) >= 0
    # each view's covariance term is unchanged by permuting its own features
    d = z_a.shape[1]
    perm_a, perm_b = torch.randperm(d, generator=gen), torch.randperm(d, generator=gen)
    permuted = vicreg_terms(z_a[:, perm_a], z_b[:, perm_b], algorithm=algorithm)  # type: ignore[arg-type]
    torch.testing.assert_close(permuted.covariance, terms.covariance, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(permuted.variance, terms.variance, rtol=1e-10, atol=1e-12)
    # the whole loss is unchanged by one permutation of the samples and of the features
    rows = torch.randperm(z_a.shape[0], generator=gen)
    both = vicreg_loss(z_a[rows][:, perm_a], z_b[rows][:, perm_a], algorithm=algorithm)  # type: ignore[arg-type]
    torch.testing.assert_close(both, terms.loss, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(("n", "d"), [(12, 4), (40, 30), (3, 2)])
def test_covariance_zero_for_decorrelated_features(algorithm: str, n: int, d: int) -> None:
    # Centred, mutually orthogonal columns with arbitrary scales: the covariance is diagonal.
    gen = torch.Generator().manual_seed(1)
    ones = torch.ones(n, 1, dtype=torch.float64)
    scales = torch.linspace(0.1, 5.0, d, dtype=torch.float64)

    def decorrelated(shift: float) -> torch.Tensor:
        x = torch.cat([ones, torch.randn(n, d, generator=gen, dtype=torch.float64)], 1)
        q = torch.linalg.qr(x)[0][:, 1:]  # orthonormal columns, orthogonal to the constant
        return q * scales + shift

    z_a, z_b = decorrelated(3.0), decorrelated(-1.0)
    terms = vicreg_terms(z_a, z_b, algorithm=algorithm)  # type: ignore[arg-type]
    assert abs(float(terms.covariance)) < 1e-12
    assert float(vicreg_terms(z_a, z_a @ torch.ones(d, d, dtype=torch.float64)).covariance) > 1


@given(embeddings(min_n=2, max_n=12, max_d=10, scale=1.0), SEEDS)
@settings(max_examples=25)
def test_variance_term_zero_when_every_std_is_at_least_one(
    pair: tuple[torch.Tensor, ...], seed: int
) -> None:
    z_a, z_b = pair
    gen = torch.Generator().manual_seed(seed)

    def with_std_at_least_one(z: torch.Tensor) -> torch.Tensor:
        z = z + torch.linspace(0, 1, z.shape[0], dtype=torch.float64)[:, None]  # std > 0
        target = 1 + 3 * torch.rand(z.shape[1], generator=gen, dtype=torch.float64)
        return (z - z.mean(0)) / z.std(0) * target

    z_a, z_b = with_std_at_least_one(z_a), with_std_at_least_one(z_b)
    assert float(vicreg_terms(z_a, z_b).variance) == 0.0
    shrunk = 0.5 * z_a / z_a.std(0)  # every std 0.5: the hinge is active
    assert float(vicreg_terms(shrunk, z_b).variance) > 0.0


def test_gram_off_diagonal_sum_never_rounds_below_zero() -> None:
    # One feature: the off-diagonal sum is exactly 0, and "Frobenius minus diagonal" rounds to
    # +-1 ulp; unclamped, the covariance term came out negative for some of these inputs.
    gen = torch.Generator().manual_seed(0)
    values = []
    for n in range(2, 40):
        z_a, z_b = 3 * torch.randn(2, n, 1, generator=gen, dtype=torch.float64)
        values.append(float(vicreg_terms(z_a, z_b, algorithm="gram").covariance))
    assert min(values) >= 0.0
    assert max(values) < 1e-12


def test_collapsed_views_value() -> None:
    # All samples equal: invariance 0, covariance 0, variance (1 - sqrt(eps)) per view / 2.
    z = torch.full((5, 3), 2.0, dtype=torch.float64)
    for algorithm in ALGORITHMS:
        terms = vicreg_terms(z, z, algorithm=algorithm)  # type: ignore[arg-type]
        assert float(terms.invariance) == 0.0
        assert float(terms.covariance) == 0.0
        torch.testing.assert_close(
            terms.variance, torch.tensor(1 - 1e-2, dtype=torch.float64), rtol=1e-14, atol=0
        )


# ------------------------------------------------------------------------------------------
# module, autograd, numerics
# ------------------------------------------------------------------------------------------
def test_dense_supports_double_backward_and_fast_paths_raise() -> None:
    z_a, z_b = _pair(3, 8)

    ours = penalty_gradient(lambda a, b: vicreg_loss(a, b, algorithm="dense"), z_a, z_b)
    ref = penalty_gradient(vicreg_reference, z_a, z_b)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    for algorithm in ("gram", "fused", "auto"):  # "auto" runs "gram" at N=3, D=8
        with pytest.raises(RuntimeError, match=r"has no double backward.*algorithm='dense'"):
            penalty_gradient(lambda a, b, k=algorithm: vicreg_loss(a, b, algorithm=k), z_a, z_b)


def test_centring_and_variance_function_matches_plain_ops_to_second_order() -> None:
    # vicreg's one Function for X = Z - mean(Z) and torch.var(Z, dim=0): values, gradients with
    # upstream gradients for both outputs, and the double backward that "dense" relies on
    z, _ = _pair(7, 5)
    gen = torch.Generator().manual_seed(1)
    g_x = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    g_v = torch.randn(5, generator=gen, dtype=torch.float64)

    def plain(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a - a.mean(dim=0), a.var(dim=0)

    def first_and_second(fn: object) -> list[torch.Tensor]:
        a = z.clone().requires_grad_(True)
        x, var = fn(a)  # type: ignore[operator]
        out = (g_x * x).sum() + (g_v * var).sum() + (x.square().sum(0) * var).sum()
        (grad,) = torch.autograd.grad(out, [a], create_graph=True)
        (second,) = torch.autograd.grad(grad.square().sum(), [a])
        return [x.detach(), var.detach(), grad.detach(), second]

    for ours, expected in zip(
        first_and_second(vicreg_module._centred), first_and_second(plain), strict=True
    ):
        torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-12)
    a = z.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(vicreg_module._centred, (a,))
    assert torch.autograd.gradgradcheck(vicreg_module._centred, (a,))


def test_gram_float32_stays_float32_when_computing_in_float64() -> None:
    z_a, z_b = _pair(6, 4)  # float64 stays float64: tests/contracts.py
    out = vicreg_terms(z_a.float(), z_b.float(), algorithm="gram")  # float64 inside (2N > D)
    assert all(t.dtype == torch.float32 for t in out)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_constant_column_is_finite(algorithm: str) -> None:
    z_a, z_b = _pair(6, 5)
    z_a[:, 2] = 3.0  # variance 0: sqrt(0 + eps) keeps the gradient finite
    z_b[:, 0] = -1.0
    ours = value_and_grads(lambda a, b: vicreg_loss(a, b, algorithm=algorithm), z_a, z_b)  # type: ignore[arg-type]
    for t in ours:
        assert torch.isfinite(t).all()
    _close(ours, value_and_grads(vicreg_reference, z_a, z_b))
    for dtype in (torch.float32, torch.float16):
        value = vicreg_loss(z_a.to(dtype), z_b.to(dtype), algorithm=algorithm)  # type: ignore[arg-type]
        assert torch.isfinite(value)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_float32_nearly_decorrelated_matches_float64(algorithm: str) -> None:
    # N >> D with nearly decorrelated features of large variance: sum(cov^2) is dominated by
    # the diagonal, where "full minus diagonal" cancels in float32 (the Gram path's float64).
    gen = torch.Generator().manual_seed(0)
    n, d = 4096, 4

    def view() -> torch.Tensor:
        x = torch.cat([torch.ones(n, 1), torch.randn(n, d, generator=gen)], 1).double()
        q = torch.linalg.qr(x)[0][:, 1:] * n**0.5 * 30  # decorrelated, std 30
        return q + torch.randn(n, d, generator=gen, dtype=torch.float64)  # small covariances

    z_a, z_b = view(), view()
    ref = vicreg_terms(z_a, z_b, algorithm="dense")
    ours = vicreg_terms(z_a.float(), z_b.float(), algorithm=algorithm)  # type: ignore[arg-type]
    assert ours.covariance.dtype == torch.float32
    torch.testing.assert_close(ours.covariance.double(), ref.covariance, rtol=1e-4, atol=0)

    def naive(z: torch.Tensor) -> torch.Tensor:
        x = (z - z.mean(0)).float()
        return ((x @ x.T) ** 2).sum() / (n - 1) ** 2 - (x.var(0) ** 2).sum()

    # the shape is one where the unguarded float32 Gram formula misses that tolerance
    unguarded = float(naive(z_a) + naive(z_b)) / d
    assert abs(unguarded - float(ref.covariance)) / float(ref.covariance) > 1e-3


# ------------------------------------------------------------------------------------------
# the auto rule (shared with Barlow Twins)
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n", "d", "expected"),
    [
        (256, 8192, "gram"),
        (2048, 8192, "gram"),
        (4096, 8192, "gram"),
        (4097, 8192, "fused"),
        (8192, 2048, "fused"),
        (1024, 1024, "fused"),
        (16384, 16384, "fused"),
    ],
)
def test_auto_rule(n: int, d: int, expected: str) -> None:
    # VICReg's covariance is symmetric: past the Gram range it takes "fused" at every size
    assert select_algorithm(n, d, symmetric=True) == expected


# ------------------------------------------------------------------------------------------
# distributed (gloo, W=2 and W=3, unequal batch sizes)
# ------------------------------------------------------------------------------------------
def _rank_data(rank: int, sizes: list[int], d: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + rank)
    scale = torch.linspace(0.3, 2.0, d, dtype=torch.float64)
    z_a = (rank + 1) * scale * torch.randn(sizes[rank], d, generator=gen, dtype=torch.float64)
    z_b = z_a + torch.randn(sizes[rank], d, generator=gen, dtype=torch.float64) + rank
    return z_a, z_b


def _dist_case(
    rank: int, world: int, sizes: list[int], d: int, algorithm: str, gather: bool
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    z_a, z_b = _rank_data(rank, sizes, d)
    z_a.requires_grad_(True)
    z_b.requires_grad_(True)
    terms = vicreg_terms(
        z_a,
        z_b,
        **COEFFS,
        gather_distributed=gather,
        algorithm=algorithm,  # type: ignore[arg-type]
    )
    terms.loss.backward()
    assert z_a.grad is not None and z_b.grad is not None
    return [t.detach() for t in terms], z_a.grad, z_b.grad


def _check_contract(results: list[object], sizes: list[int], d: int) -> None:
    world = len(sizes)
    parts = [_rank_data(r, sizes, d) for r in range(world)]
    z_a = torch.cat([p[0] for p in parts])
    z_b = torch.cat([p[1] for p in parts])
    ref, grad_a, grad_b = value_and_grads(lambda a, b: vicreg_reference(a, b, **COEFFS), z_a, z_b)
    ref_terms = vicreg_reference_terms(z_a, z_b)
    mean = sum(r[0][0] for r in results) / world  # type: ignore[index]
    torch.testing.assert_close(mean, ref, rtol=1e-10, atol=1e-10)
    for r, (terms, g_a, g_b) in enumerate(results):  # type: ignore[misc]
        # variance and covariance: the global terms on every rank
        torch.testing.assert_close(terms[2], ref_terms[1], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(terms[3], ref_terms[2], rtol=1e-10, atol=1e-12)
        rows = slice(sum(sizes[:r]), sum(sizes[: r + 1]))
        torch.testing.assert_close(g_a / world, grad_a[rows], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(g_b / world, grad_b[rows], rtol=1e-10, atol=1e-12)
    if len(set(sizes)) == 1:  # equal batches: the invariance is each rank's own MSE
        for r, (terms, _, _) in enumerate(results):  # type: ignore[misc]
            local = torch.nn.functional.mse_loss(*parts[r])
            torch.testing.assert_close(terms[1], local, rtol=1e-12, atol=0)


CASES = [
    ([3, 5, 4], 7),  # N > D / 2, odd D: unequal feature shards
    ([2, 3, 1], 16),  # N <= D / 2: auto picks gram; unequal Gram row shards
    ([4, 4, 4], 5),  # equal batches: the invariance term is the original's local MSE
    ([1, 0, 2], 1),  # an empty rank and one feature: some feature shards are empty
]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(("sizes", "d"), CASES)
def test_distributed_w2_matches_global_batch(
    dist_pool: object, algorithm: str, sizes: list[int], d: int
) -> None:
    sizes = sizes[:2] if sum(sizes[:2]) >= 2 else [1, 2]
    results = dist_pool.run(_dist_case, sizes, d, algorithm, True)  # type: ignore[attr-defined]
    _check_contract(results, sizes, d)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(("sizes", "d"), CASES)
def test_distributed_w3_matches_global_batch(
    dist_pool3: object, algorithm: str, sizes: list[int], d: int
) -> None:
    results = dist_pool3.run(_dist_case, sizes, d, algorithm, True)  # type: ignore[attr-defined]
    _check_contract(results, sizes, d)


def test_distributed_off_is_local(dist_pool: object) -> None:
    sizes, d = [3, 5], 4
    results = dist_pool.run(_dist_case, sizes, d, "auto", False)  # type: ignore[attr-defined]
    for r, (terms, g_a, g_b) in enumerate(results):
        ref = value_and_grads(
            lambda a, b: vicreg_reference(a, b, **COEFFS), *_rank_data(r, sizes, d)
        )
        _close([terms[0], g_a, g_b], ref)


# Errors, the shared ones and this loss's own hyperparameters: test_offdiag_checks.py
