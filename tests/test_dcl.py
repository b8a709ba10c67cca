"""DCL and DCLW: reference, relation to NT-Xent, weights, blockwise path, distributed, errors."""

from __future__ import annotations

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

from benchmarks.references import dcl
from sslosses import DCLLoss, DCLWLoss
from sslosses.functional import dcl_loss, dclw_loss, nt_xent

F64 = torch.float64
TOL = {"rtol": 1e-10, "atol": 1e-10}
TEMPERATURES = st.floats(min_value=0.05, max_value=2.0)
SIGMAS = st.floats(min_value=0.1, max_value=5.0)
CHUNKS = st.none() | st.integers(min_value=1, max_value=20)


def _pair(n: int, d: int, *, seed: int = 0, dtype: torch.dtype = F64):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=gen, dtype=F64).to(dtype) for _ in range(2))


def _loss(sigma: float | None) -> Any:
    """``dcl_loss`` (``sigma=None``) or ``dclw_loss`` at ``sigma``, with the same keywords."""
    if sigma is None:
        return dcl_loss
    return lambda a, b, **kw: dclw_loss(a, b, sigma=sigma, **kw)


# ---------------------------------------------------------------- reference and exactness
@given(embeddings(min_n=2, max_n=12), TEMPERATURES, CHUNKS)
def test_dcl_matches_reference(views, temperature: float, chunk_size: int | None) -> None:
    a, b = views
    ours = value_and_grads(
        lambda x, y: dcl_loss(x, y, temperature=temperature, chunk_size=chunk_size), a, b
    )
    assert_all_close(ours, value_and_grads(lambda x, y: dcl(x, y, temperature), a, b), **TOL)


@given(embeddings(min_n=2, max_n=12), TEMPERATURES, SIGMAS, CHUNKS)
def test_dclw_matches_reference(views, temperature: float, sigma: float, chunk_size) -> None:
    a, b = views
    ours = value_and_grads(
        lambda x, y: dclw_loss(x, y, temperature=temperature, sigma=sigma, chunk_size=chunk_size),
        a,
        b,
    )
    assert_all_close(ours, value_and_grads(lambda x, y: dcl(x, y, temperature, sigma), a, b), **TOL)


@given(embeddings(min_n=2, max_n=12, scale=5.0), TEMPERATURES, st.integers(1, 20), st.booleans())
def test_blockwise_equals_plain(views, temperature: float, chunk_size: int, normalize: bool):
    a, b = views
    for sigma in (None, 0.5):
        fn = _loss(sigma)

        def loss(chunk: int | None, fn: Any = fn) -> Any:
            return lambda x, y: fn(
                x, y, temperature=temperature, normalize=normalize, chunk_size=chunk
            )

        assert_all_close(
            value_and_grads(loss(chunk_size), a, b), value_and_grads(loss(None), a, b), **TOL
        )


# DCLW's weights are constants of the loss (not differentiated), so finite differences, which
# move them, disagree with its gradient by design: test_dclw_weights_are_not_differentiated
# checks that gradient instead.
@pytest.mark.parametrize("chunk_size", [None, 1, 3])
@pytest.mark.parametrize("normalize", [True, False])
def test_gradcheck(chunk_size: int | None, normalize: bool) -> None:
    a, b = (x.requires_grad_(True) for x in _pair(5, 3))
    assert torch.autograd.gradcheck(
        lambda x, y: dcl_loss(
            x, y, temperature=0.3, normalize=normalize, chunk_size=chunk_size, reduction="none"
        ),
        (a, b),
    )


def test_double_backward_matches_reference() -> None:
    a, b = (x.requires_grad_(True) for x in _pair(6, 4, seed=5))
    penalties = []
    for fn in (lambda x, y: dclw_loss(x, y, chunk_size=2), lambda x, y: dcl(x, y, 0.1, 0.5)):
        ga, gb = torch.autograd.grad(fn(a, b), [a, b], create_graph=True)
        penalties.append(torch.autograd.grad(ga.square().sum() + gb.square().sum(), [a, b]))
    assert_all_close(penalties[0], penalties[1], rtol=1e-8, atol=1e-8)


# ---------------------------------------------------------------- relation to NT-Xent
@given(embeddings(min_n=2, max_n=12), TEMPERATURES, CHUNKS)
def test_dcl_is_below_nt_xent_pointwise(views, temperature: float, chunk_size) -> None:
    a, b = views
    kwargs = {"temperature": temperature, "reduction": "none", "chunk_size": chunk_size}
    ours = dcl_loss(a, b, **kwargs)
    ntx = nt_xent(a, b, **kwargs)
    # per anchor NT-Xent = softplus(DCL); per pair (the mean of two anchors) softplus is convex
    assert bool((F.softplus(ours) <= ntx + 1e-12).all())
    # the gap is at least log(1 + exp(-DCL)) > 0 (rounded to 0 in float64 for large DCL)
    assert bool((ntx - ours >= torch.log1p(torch.exp(-ours)) - 1e-12).all())


@given(embeddings(min_n=2, max_n=12, count=1), TEMPERATURES)
def test_nt_xent_is_softplus_of_dcl_when_both_directions_agree(rows, temperature) -> None:
    (a,) = rows  # z_a = z_b: the two directions of every pair are the same anchor problem
    ours = dcl_loss(a, a, temperature=temperature, reduction="none")
    ntx = nt_xent(a, a, temperature=temperature, reduction="none")
    torch.testing.assert_close(F.softplus(ours), ntx, **TOL)


# ---------------------------------------------------------------- the DCLW weights
@given(embeddings(min_n=2, max_n=12), SIGMAS)
def test_dclw_minus_dcl_is_the_weighted_positive(views, sigma: float) -> None:
    a, b = views
    tau = 0.3
    cosine = F.cosine_similarity(a, b, dim=1)  # (N,)
    weight = 2 - a.shape[0] * torch.softmax(cosine / sigma, dim=0)
    torch.testing.assert_close(weight.mean(), torch.tensor(1.0, dtype=F64), **TOL)
    difference = dclw_loss(a, b, temperature=tau, sigma=sigma, reduction="none") - dcl_loss(
        a, b, temperature=tau, reduction="none"
    )
    torch.testing.assert_close(difference, -(weight - 1) * cosine / tau, **TOL)


def test_dclw_equals_dcl_when_every_pair_is_equally_similar() -> None:
    a, _ = _pair(6, 4)
    for b in (a, 2 * a):  # all cosines 1: every weight is 1
        assert_all_close(
            value_and_grads(lambda x, y: dclw_loss(x, y, sigma=0.2), a, b),
            value_and_grads(dcl_loss, a, b),
            **TOL,
        )


def test_dclw_weights_are_not_differentiated() -> None:
    a, b = _pair(5, 3)

    def frozen(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # weights as constants
        u, v = F.normalize(x, dim=1), F.normalize(y, dim=1)
        w = (2 - 5 * torch.softmax((u * v).sum(1) / 0.5, dim=0)).detach()
        weighted = dcl_loss(x, y, reduction="none") - (w - 1) * (u * v).sum(1) / 0.1
        return weighted.mean()

    assert_all_close(value_and_grads(dclw_loss, a, b), value_and_grads(frozen, a, b), **TOL)


# ---------------------------------------------------------------- invariants
@given(embeddings(min_n=2, max_n=12), SEEDS, CHUNKS, st.sampled_from([None, 0.5]))
def test_invariant_to_consistent_permutation(views, seed: int, chunk_size, sigma) -> None:
    a, b = views
    fn = _loss(sigma)
    perm = torch.randperm(a.shape[0], generator=torch.Generator().manual_seed(seed))
    per_pair = fn(a, b, reduction="none", chunk_size=chunk_size)
    permuted = fn(a[perm], b[perm], reduction="none", chunk_size=chunk_size)
    torch.testing.assert_close(permuted, per_pair[perm], **TOL)


@given(embeddings(min_n=2, max_n=12), st.sampled_from([None, 0.5]))
def test_symmetric_in_the_two_views(views, sigma: float | None) -> None:
    a, b = views
    fn = _loss(sigma)
    torch.testing.assert_close(fn(b, a, reduction="none"), fn(a, b, reduction="none"), **TOL)


@given(
    embeddings(min_n=2, max_n=10, count=2), st.lists(positive_scales(), min_size=20, max_size=20)
)
def test_invariant_to_positive_rescaling_when_normalized(views, scales: list[float]) -> None:
    a, b = views
    n = a.shape[0]
    s = torch.tensor(scales, dtype=F64)
    for sigma in (None, 0.5):
        fn = _loss(sigma)
        scaled = fn(a * s[:n, None], b * s[10 : 10 + n, None], reduction="none")
        torch.testing.assert_close(scaled, fn(a, b, reduction="none"), **TOL)


def test_normalize_false_uses_raw_inner_products() -> None:
    a, b = _pair(5, 3)
    u, v = F.normalize(a, dim=1), F.normalize(b, dim=1)
    for sigma in (None, 0.7):
        fn = _loss(sigma)
        torch.testing.assert_close(fn(u, v, normalize=False), fn(a, b), **TOL)
        assert not torch.allclose(fn(3 * a, b, normalize=False), fn(a, b, normalize=False))


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_finite_at_small_temperature(chunk_size: int | None) -> None:
    a, noise = _pair(6, 8, dtype=torch.float32)
    b = a + 0.05 * noise
    for sigma in (None, 0.5):
        fn = _loss(sigma)
        ours = fn(a, b, temperature=0.01, chunk_size=chunk_size)  # logits up to 100
        ref = fn(a.double(), b.double(), temperature=0.01)
        assert torch.isfinite(ours)
        torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-3)


def test_two_pairs_by_hand() -> None:
    # N = 2: each anchor has the other pair's two views as its only negatives
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    b = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=F64)
    tau = 0.5
    # anchor a0: positive b0 (cos 1); negatives a1 (0), b1 (0)
    # anchor a1: positive b1 (cos -1); negatives a0 (0), b0 (0); b0, b1 the same by symmetry
    pair0 = -1 / tau + math.log(2)
    pair1 = 1 / tau + math.log(2)
    expected = torch.tensor([pair0, pair1], dtype=F64)
    torch.testing.assert_close(dcl_loss(a, b, temperature=tau, reduction="none"), expected)


# ---------------------------------------------------------------- reductions, module
def test_reductions() -> None:
    a, b = _pair(7, 5)
    for sigma in (None, 0.5):
        fn = _loss(sigma)
        none = fn(a, b, reduction="none")
        assert none.shape == (7,) and fn(a, b).shape == () and fn(a, b, reduction="sum").shape == ()
        torch.testing.assert_close(none.mean(), fn(a, b), **TOL)
        torch.testing.assert_close(none.sum(), fn(a, b, reduction="sum"), **TOL)


def test_modules_match_functional() -> None:
    a, b = _pair(6, 4)
    for kwargs in (
        {},
        {"temperature": 0.3, "normalize": False, "reduction": "none", "chunk_size": 4},
        {"reduction": "sum", "gather_distributed": True},
    ):
        torch.testing.assert_close(
            DCLLoss(**kwargs)(a, b), dcl_loss(a, b, **kwargs), rtol=0, atol=0
        )
        kw = {**kwargs, "sigma": 0.3}
        torch.testing.assert_close(DCLWLoss(**kw)(a, b), dclw_loss(a, b, **kw), rtol=0, atol=0)
    assert repr(DCLLoss(temperature=0.3, chunk_size=64)) == (
        "DCLLoss(temperature=0.3, normalize=True, gather_distributed=False, "
        "reduction='mean', chunk_size=64)"
    )
    assert repr(DCLWLoss(sigma=0.25)) == (
        "DCLWLoss(temperature=0.1, sigma=0.25, normalize=True, gather_distributed=False, "
        "reduction='mean', chunk_size='auto')"
    )


def test_gather_distributed_without_process_group_is_local() -> None:
    a, b = _pair(5, 3)
    assert not dist.is_initialized()
    for sigma in (None, 0.5):
        fn = _loss(sigma)
        for reduction in ("mean", "sum", "none"):
            torch.testing.assert_close(
                fn(a, b, gather_distributed=True, reduction=reduction),
                fn(a, b, reduction=reduction),
                rtol=0,
                atol=0,
            )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_float32(dtype: torch.dtype) -> None:
    a, b = _pair(6, 8, dtype=dtype)
    for sigma in (None, 0.5):
        fn = _loss(sigma)
        out = fn(a, b, chunk_size=3)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, fn(a.float(), b.float()), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- errors
def test_rejects_bad_inputs() -> None:
    a, b = _pair(4, 3)
    for fn in (dcl_loss, dclw_loss):
        with pytest.raises(ValueError, match=r"z_a must be a 2-D tensor, got 1-D with shape"):
            fn(a[:, 0], b)
        with pytest.raises(ValueError, match=r"same shape, got \(4, 3\) and \(3, 3\)"):
            fn(a, b[:3])
        with pytest.raises(ValueError, match="z_a must have a batch size of at least 2, got 1"):
            fn(a[:1], b[:1])
        with pytest.raises(TypeError, match=r"z_b must have a floating-point dtype, got torch"):
            fn(a, b.long())
        with pytest.raises(TypeError, match=r"z_a must be a torch.Tensor, got list"):
            fn([[1.0, 2.0]], b)
        with pytest.raises(ValueError, match="same device, got cpu and meta"):
            fn(a, b.to("meta"))


OPTION_ERRORS = [
    ({"temperature": 0.0}, ValueError, "temperature must be a finite number > 0, got 0.0"),
    ({"temperature": math.inf}, ValueError, "temperature must be a finite number > 0"),
    ({"temperature": "0.1"}, TypeError, "temperature must be a float, got str"),
    ({"reduction": "avg"}, ValueError, "reduction must be one of 'none', 'mean', 'sum'"),
    ({"chunk_size": 0}, ValueError, "chunk_size must be an int > 0, got 0"),
    ({"chunk_size": 2.0}, TypeError, "chunk_size must be an int, got float"),
    ({"normalize": 1}, TypeError, "normalize must be a bool, got int"),
    ({"gather_distributed": "yes"}, TypeError, "gather_distributed must be a bool, got str"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), OPTION_ERRORS)
def test_rejects_bad_options(kwargs, error: type[Exception], message: str) -> None:
    a, b = _pair(4, 3)
    for fn, module in ((dcl_loss, DCLLoss), (dclw_loss, DCLWLoss)):
        with pytest.raises(error, match=message):
            fn(a, b, **kwargs)
        with pytest.raises(error, match=message):
            module(**kwargs)


@pytest.mark.parametrize(
    ("sigma", "error", "message"),
    [
        (0.0, ValueError, "sigma must be a finite number > 0, got 0.0"),
        (-1.0, ValueError, "sigma must be a finite number > 0, got -1.0"),
        (math.nan, ValueError, "sigma must be a finite number > 0, got nan"),
        (None, TypeError, "sigma must be a float, got NoneType"),
    ],
)
def test_rejects_bad_sigma(sigma: Any, error: type[Exception], message: str) -> None:
    a, b = _pair(4, 3)
    with pytest.raises(error, match=message):
        dclw_loss(a, b, sigma=sigma)
    with pytest.raises(error, match=message):
        DCLWLoss(sigma=sigma)


# ---------------------------------------------------------------- distributed (W = 2 and 3)
SIZES = {2: [3, 5], 3: [3, 1, 4]}  # unequal per-rank batch sizes, rank 0's rows first
OPTIONS = [
    (s, r, c)
    for s in (None, 0.5)
    for r, c in (("mean", None), ("mean", 2), ("sum", 3), ("none", 2))
]


def _global_pair(world: int) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _pair(sum(SIZES[world]), 5, seed=123)
    return a, b


def _slice(rank: int, sizes: list[int]) -> slice:
    return slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))


def _weights(rows: slice) -> torch.Tensor:
    return torch.linspace(0.5, 1.5, 16, dtype=F64)[rows]  # by global row, for "none"


def _dist_case(rank: int, world: int) -> list[Any]:
    a_all, b_all = _global_pair(world)
    rows = _slice(rank, SIZES[world])
    out = []
    for sigma, reduction, chunk_size in OPTIONS:
        fn = _loss(sigma)
        kwargs = {"temperature": 0.3, "reduction": reduction, "chunk_size": chunk_size}

        def loss(x: torch.Tensor, y: torch.Tensor, fn: Any = fn, kw: Any = kwargs) -> Any:
            value = fn(x, y, gather_distributed=True, **kw)
            return value * _weights(rows) if kw["reduction"] == "none" else value

        out.append(value_and_grads(loss, a_all[rows], b_all[rows]))
    return out


def test_distributed_matches_single_process(dist_pool_w: Any) -> None:
    world = dist_pool_w.world_size
    sizes = SIZES[world]
    results = dist_pool_w.run(_dist_case)
    a, b = _global_pair(world)
    for i, (sigma, reduction, chunk_size) in enumerate(OPTIONS):
        fn = _loss(sigma)
        what = f"sigma={sigma}, {reduction}, chunk_size={chunk_size}"
        if reduction == "none":
            value, ga, gb = value_and_grads(
                lambda x, y, f=fn: (
                    f(x, y, temperature=0.3, reduction="none") * _weights(slice(0, sum(sizes)))
                ),
                a,
                b,
            )
            torch.testing.assert_close(torch.cat([r[i][0] for r in results]), value, **TOL)
            scale = 1
        else:
            value, ga, gb = value_and_grads(
                lambda x, y, f=fn, red=reduction: f(x, y, temperature=0.3, reduction=red), a, b
            )
            mean = torch.stack([r[i][0] for r in results]).mean()
            torch.testing.assert_close(mean, value, **TOL, msg=what)
            scale = world
        for rank in range(world):
            rows = _slice(rank, sizes)
            torch.testing.assert_close(results[rank][i][1] / scale, ga[rows], **TOL, msg=what)
            torch.testing.assert_close(results[rank][i][2] / scale, gb[rows], **TOL, msg=what)
