"""Sinkhorn: reference (SwAV distributed_sinkhorn), stability, properties, distributed, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import SEEDS

from benchmarks.references import swav_sinkhorn
from sslosses.sinkhorn import sinkhorn


def _scores(
    n: int = 12,
    k: int = 5,
    *,
    seed: int = 0,
    scale: float = 1.0,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, generator=gen, dtype=torch.float64)
    return (scale * torch.nn.functional.normalize(x, dim=1)).to(dtype)


@st.composite
def score_matrices(
    draw: st.DrawFn, *, max_n: int = 12, max_k: int = 8, max_scale: float = 5.0
) -> torch.Tensor:
    """A float64 ``(N, K)`` score matrix with entries of drawn scale."""
    n = draw(st.integers(1, max_n))
    k = draw(st.integers(1, max_k))
    scale = draw(st.floats(0.0, max_scale))
    gen = torch.Generator().manual_seed(draw(SEEDS))
    return scale * torch.randn(n, k, generator=gen, dtype=torch.float64)


EPSILONS = st.floats(0.01, 1.0)
ITERATIONS = st.integers(1, 8)


# ------------------------------------------------------------------------- reference agreement
@pytest.mark.parametrize(("n", "k"), [(12, 5), (4, 9), (1, 3), (7, 1)])
@pytest.mark.parametrize("iterations", [1, 3, 10])
@pytest.mark.parametrize("epsilon", [0.05, 0.5])
def test_matches_reference(n: int, k: int, iterations: int, epsilon: float) -> None:
    scores = _scores(n, k)
    ours = sinkhorn(scores, epsilon=epsilon, iterations=iterations)
    ref = swav_sinkhorn(scores, epsilon, iterations)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-13)


@given(score_matrices(), EPSILONS, ITERATIONS)
def test_agrees_with_reference_wherever_the_reference_is_finite(
    scores: torch.Tensor, epsilon: float, iterations: int
) -> None:
    ref = swav_sinkhorn(scores, epsilon, iterations)
    assume(bool(torch.isfinite(ref).all()))
    ours = sinkhorn(scores, epsilon=epsilon, iterations=iterations)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    ("dtype", "epsilon", "scale"),
    [
        (torch.float32, 0.01, 100.0),  # |scores| = 1 / epsilon: exp(1e4) overflows float32
        (torch.float32, 0.01, 1.0),  # cosine scores at epsilon=0.01: exp(100) > float32 max
        (torch.float64, 0.01, 100.0),  # exp(1e4) overflows float64 too
    ],
)
def test_stable_where_the_reference_overflows(
    dtype: torch.dtype, epsilon: float, scale: float
) -> None:
    scores = _scores(16, 6, scale=scale, dtype=dtype)
    scores[0, 0] = scale  # one sample sits exactly on a prototype
    ref = swav_sinkhorn(scores, epsilon, 3)
    assert not bool(torch.isfinite(ref).all())  # the original gives inf / nan here
    ours = sinkhorn(scores, epsilon=epsilon, iterations=3)
    assert ours.dtype == dtype
    assert bool(torch.isfinite(ours).all())
    assert bool((ours >= 0).all())
    torch.testing.assert_close(ours.sum(dim=1), torch.ones(16, dtype=dtype))
    # float32 keeps the float64 answer on the same inputs up to the rounding of scores / eps
    exact = sinkhorn(scores.double(), epsilon=epsilon, iterations=3)
    torch.testing.assert_close(ours.double(), exact, rtol=0, atol=1e-4 if scale > 1 else 1e-5)


def _dual_potentials(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """The docstring's dual form in float64, one log-sum-exp per normalization: an oracle
    that never overflows (the implementation exponentiates once and rescales instead)."""
    logits = scores.double() / epsilon
    b = torch.zeros(logits.shape[0], 1, dtype=torch.float64)
    for _ in range(iterations):
        a = torch.logsumexp(logits - b, dim=0)
        b = torch.logsumexp(logits - a, dim=1, keepdim=True)
    return torch.exp(logits - a - b)


@pytest.mark.parametrize(
    ("n", "k", "iterations"), [(4096, 8, 100), (8, 4096, 100), (256, 3000, 20), (1, 5, 50)]
)
def test_many_iterations_keep_the_scale_and_the_dual_form(n: int, k: int, iterations: int) -> None:
    # the rescalings keep the total mass at B in both steps: without that (each prototype's
    # total 1 instead of B / K) the scaling vectors grow by B / K per iteration and overflow
    scores = torch.nn.functional.normalize(_scores(n, k, scale=1.0, dtype=torch.float32), dim=1)
    ours = sinkhorn(scores, epsilon=0.05, iterations=iterations)
    assert bool(torch.isfinite(ours).all())
    torch.testing.assert_close(ours.sum(dim=1), torch.ones(n))
    exact = _dual_potentials(scores, 0.05, iterations)
    torch.testing.assert_close(ours.double(), exact, rtol=0, atol=1e-5)
    exact64 = sinkhorn(scores.double(), epsilon=0.05, iterations=iterations)
    torch.testing.assert_close(exact64, exact, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rows_and_columns_far_below_the_rest(dtype: torch.dtype) -> None:
    # a sample and a prototype 1000 nats (50 / epsilon) below every other score: exp of their
    # scores underflows, yet Sinkhorn gives the sample a full row and the prototype its share
    scores = _scores(64, 30, scale=1.0, dtype=torch.float64)
    scores[3] -= 50.0
    scores[:, 7] -= 50.0
    ours = sinkhorn(scores.to(dtype), epsilon=0.05, iterations=3)
    assert bool(torch.isfinite(ours).all())
    exact = _dual_potentials(scores, 0.05, 3)
    assert exact[:, 7].sum() > 0.1 and exact[3].sum() == pytest.approx(1.0)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(ours.double(), exact, rtol=0, atol=tol)


def test_tiny_epsilon_gives_hard_assignments() -> None:
    # each sample sits on its own prototype: the equipartition is the permutation itself
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    scores = torch.eye(16)[perm]
    q = sinkhorn(scores, epsilon=1e-4, iterations=3)
    assert bool(torch.isfinite(q).all())
    torch.testing.assert_close(q, scores)


# ----------------------------------------------------------------------------- properties
@given(score_matrices(max_scale=50.0), EPSILONS, ITERATIONS)
def test_rows_are_distributions(scores: torch.Tensor, epsilon: float, iterations: int) -> None:
    q = sinkhorn(scores, epsilon=epsilon, iterations=iterations)
    assert q.shape == scores.shape
    assert bool(torch.isfinite(q).all())
    assert bool((q >= 0).all())
    # the last step normalizes each sample, so rows sum to 1 exactly (up to rounding)
    torch.testing.assert_close(
        q.sum(dim=1), torch.ones(scores.shape[0], dtype=torch.float64), rtol=0, atol=1e-12
    )


@given(st.integers(1, 12), st.integers(1, 8), SEEDS)
def test_prototype_totals_converge_to_n_over_k(n: int, k: int, seed: int) -> None:
    scores = _scores(n, k, seed=seed)
    q = sinkhorn(scores, epsilon=0.5, iterations=300)
    # the prototype marginal is the one applied first in each iteration: it is only reached in
    # the limit, here up to the convergence of 300 iterations on a well-conditioned kernel
    torch.testing.assert_close(
        q.sum(dim=0), torch.full((k,), n / k, dtype=torch.float64), rtol=0, atol=1e-8
    )


def test_prototype_totals_are_approximate_after_few_iterations() -> None:
    scores = _scores(64, 8, scale=1.0)
    errors = [
        (sinkhorn(scores, epsilon=0.05, iterations=t).sum(dim=0) - 64 / 8).abs().max().item()
        for t in (1, 3, 30, 300)
    ]
    assert errors[0] > 1e-3  # not exact after one iteration
    assert errors[0] > errors[1] > errors[2] > errors[3]
    assert errors[3] < 1e-6


@given(score_matrices(), EPSILONS, ITERATIONS, SEEDS)
def test_invariant_to_a_constant_per_prototype(
    scores: torch.Tensor, epsilon: float, iterations: int, seed: int
) -> None:
    # a per-prototype constant (a row of the official K x B matrix) is absorbed exactly by the
    # first prototype normalization, whatever the number of iterations
    gen = torch.Generator().manual_seed(seed)
    col = 3 * torch.randn(1, scores.shape[1], generator=gen, dtype=torch.float64)
    torch.testing.assert_close(
        sinkhorn(scores + col, epsilon=epsilon, iterations=iterations),
        sinkhorn(scores, epsilon=epsilon, iterations=iterations),
        rtol=1e-7,
        atol=1e-9,
    )


def test_a_constant_per_sample_matters_until_convergence() -> None:
    scores = _scores(10, 4, seed=3)
    row = torch.linspace(-2, 2, 10, dtype=torch.float64)[:, None]
    few = [sinkhorn(s, epsilon=0.5, iterations=2) for s in (scores, scores + row)]
    assert not torch.allclose(few[0], few[1], atol=1e-3)
    # the limit (the unique scaling of the kernel) does not see per-sample factors
    many = [sinkhorn(s, epsilon=0.5, iterations=500) for s in (scores, scores + row)]
    torch.testing.assert_close(many[0], many[1], rtol=0, atol=1e-9)


@given(score_matrices(), EPSILONS, ITERATIONS, SEEDS)
def test_equivariant_to_sample_and_prototype_permutations(
    scores: torch.Tensor, epsilon: float, iterations: int, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randperm(scores.shape[0], generator=gen)
    cols = torch.randperm(scores.shape[1], generator=gen)
    q = sinkhorn(scores, epsilon=epsilon, iterations=iterations)
    permuted = sinkhorn(scores[rows][:, cols], epsilon=epsilon, iterations=iterations)
    torch.testing.assert_close(permuted, q[rows][:, cols], rtol=1e-10, atol=1e-12)


def test_equal_scores_give_uniform_assignments() -> None:
    q = sinkhorn(torch.full((5, 4), 0.3, dtype=torch.float64))
    torch.testing.assert_close(q, torch.full((5, 4), 0.25, dtype=torch.float64))


def test_no_gradient_and_input_untouched() -> None:
    scores = _scores().requires_grad_(True)
    before = scores.detach().clone()
    q = sinkhorn(scores)
    assert not q.requires_grad
    assert q.grad_fn is None
    assert torch.equal(scores.detach(), before)


# ------------------------------------------------------------------------------- numerics
# ---------------------------------------------------------------------------- distributed
def _sinkhorn_case(rank: int, world: int, scores: list[torch.Tensor], gather: bool) -> torch.Tensor:
    return sinkhorn(scores[rank], epsilon=0.05, iterations=4, gather_distributed=gather)


@pytest.mark.parametrize("sizes", [[6, 6], [3, 8], [1, 5]])
def test_distributed_equals_single_process_on_global_batch(dist_pool, sizes: list[int]) -> None:
    parts = [_scores(n, 7, seed=10 + r, scale=2.0) for r, n in enumerate(sizes)]
    outs = dist_pool.run(_sinkhorn_case, parts, True)
    expected = sinkhorn(torch.cat(parts), epsilon=0.05, iterations=4)
    torch.testing.assert_close(torch.cat(outs), expected, rtol=1e-8, atol=1e-8)
    # ... which is the original's global Sinkhorn (B = global batch size)
    reference = swav_sinkhorn(torch.cat(parts), 0.05, 4)
    torch.testing.assert_close(torch.cat(outs), reference, rtol=1e-8, atol=1e-8)
    assert not torch.allclose(outs[0], sinkhorn(parts[0], iterations=4))


def test_distributed_stays_local_unless_asked(dist_pool) -> None:
    parts = [_scores(4, 3, seed=r) for r in range(2)]
    outs = dist_pool.run(_sinkhorn_case, parts, False)
    for out, part in zip(outs, parts, strict=True):
        torch.testing.assert_close(out, sinkhorn(part, iterations=4), rtol=0, atol=0)


def test_gather_distributed_without_process_group_is_local() -> None:
    scores = _scores()
    torch.testing.assert_close(
        sinkhorn(scores, gather_distributed=True), sinkhorn(scores), rtol=0, atol=0
    )


# --------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("scores", "kwargs", "error", "match"),
    [
        (torch.randn(4), {}, ValueError, r"scores must be a 2-D tensor, got 1-D"),
        (torch.randn(2, 3, 4), {}, ValueError, r"scores must be a 2-D tensor, got 3-D"),
        (torch.randn(0, 3), {}, ValueError, r"scores must have a batch size of at least 1, got 0"),
        (torch.randn(3, 0), {}, ValueError, r"scores must have at least 1 prototype .*\(3, 0\)"),
        ([[1.0, 2.0]], {}, TypeError, r"scores must be a torch.Tensor, got list"),
        (
            torch.ones(2, 3, dtype=torch.long),
            {},
            TypeError,
            r"floating-point dtype, got torch.int64",
        ),
        (torch.randn(2, 3), {"epsilon": 0.0}, ValueError, r"epsilon must be a finite number > 0"),
        (torch.randn(2, 3), {"epsilon": -0.1}, ValueError, r"epsilon must be .* > 0, got -0.1"),
        (torch.randn(2, 3), {"epsilon": "0.1"}, TypeError, r"epsilon must be a float, got str"),
        (torch.randn(2, 3), {"iterations": 0}, ValueError, r"iterations must be an int > 0, got 0"),
        (
            torch.randn(2, 3),
            {"iterations": 2.0},
            TypeError,
            r"iterations must be an int, got float",
        ),
        (
            torch.randn(2, 3),
            {"iterations": True},
            TypeError,
            r"iterations must be an int, got bool",
        ),
        (
            torch.randn(2, 3),
            {"gather_distributed": 1},
            TypeError,
            r"gather_distributed must be a bool, got int",
        ),
    ],
)
def test_errors(scores: object, kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        sinkhorn(scores, **kwargs)  # type: ignore[arg-type]
