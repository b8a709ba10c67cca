"""SwAV loss: reference (SwAV main_swav.py train loop), queue, properties, distributed, errors."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import SEEDS

from benchmarks.references import swav as swav_reference
from benchmarks.references import swav_sinkhorn
from sslosses.swav import SwAVLoss, swav_loss

F64 = torch.float64


def _crops(
    v: int = 4,
    n: int = 6,
    k: int = 5,
    *,
    seed: int = 0,
    scale: float = 1.0,
    dtype: torch.dtype = F64,
) -> list[torch.Tensor]:
    """``v`` crops of cosine-like scores ``(n, k)`` (normalized rows times ``scale``)."""
    gen = torch.Generator().manual_seed(seed)
    raw = torch.randn(v, n, k, generator=gen, dtype=F64)
    return [(scale * torch.nn.functional.normalize(x, dim=1)).to(dtype) for x in raw]


def _queue(lengths: Sequence[int], k: int = 5, *, seed: int = 100) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.nn.functional.normalize(torch.randn(q, k, generator=gen, dtype=F64), dim=1)
        for q in lengths
    ]


def _leaves(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_(True) for t in tensors]


@st.composite
def swav_problems(
    draw: st.DrawFn,
) -> tuple[list[torch.Tensor], tuple[int, ...], list[torch.Tensor] | None]:
    """Crops, assignment crops and optional queue scores of drawn sizes (float64)."""
    v = draw(st.integers(2, 4))
    n = draw(st.integers(1, 8))
    k = draw(st.integers(1, 6))
    assign = tuple(draw(st.permutations(range(v)))[: draw(st.integers(1, v))])
    seed = draw(SEEDS)
    crops = _crops(v, n, k, seed=seed, scale=draw(st.floats(0.1, 3.0)))
    queue = None
    if draw(st.booleans()):
        queue = _queue([draw(st.integers(0, 10)) for _ in assign], k, seed=seed + 1)
    return crops, assign, queue


# ------------------------------------------------------------------------- reference agreement
@pytest.mark.parametrize(
    ("v", "assign"), [(2, (0, 1)), (2, (1,)), (4, (0, 1)), (3, (2, 0)), (5, (0, 1, 2))]
)
@pytest.mark.parametrize("queue_len", [None, 0, 9])
def test_matches_reference_value_and_gradient(
    v: int, assign: tuple[int, ...], queue_len: int | None
) -> None:
    crops = _crops(v)
    queue = None if queue_len is None else _queue([queue_len] * len(assign))
    ours_in, ref_in = _leaves(crops), _leaves(crops)
    ours = swav_loss(ours_in, sinkhorn_iterations=3, assign_crops=assign, queue_scores=queue)
    ref = swav_reference(ref_in, 0.1, 0.05, 3, assign_crops=assign, queue_scores=queue)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    ours.backward()
    ref.backward()
    for a, b in zip(ours_in, ref_in, strict=True):
        if b.grad is None:  # V=2 with one assignment crop: that crop only provides codes
            assert a.grad is None
        else:
            assert a.grad is not None
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)
    assert any(a.grad is not None for a in ours_in)


@given(swav_problems(), st.floats(0.05, 1.0), st.floats(0.02, 1.0), st.integers(1, 6))
def test_agrees_with_reference(
    problem: tuple[list[torch.Tensor], tuple[int, ...], list[torch.Tensor] | None],
    temperature: float,
    epsilon: float,
    iterations: int,
) -> None:
    crops, assign, queue = problem
    ours = swav_loss(
        crops,
        temperature=temperature,
        epsilon=epsilon,
        sinkhorn_iterations=iterations,
        assign_crops=assign,
        queue_scores=queue,
    )
    ref = swav_reference(crops, temperature, epsilon, iterations, assign, queue)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


def test_queue_changes_the_codes_and_gets_no_gradient() -> None:
    crops = _crops(2)
    queue = _leaves(_queue([20, 20]))
    with_queue = swav_loss(crops, queue_scores=queue)
    assert not torch.allclose(with_queue, swav_loss(crops))
    assert not with_queue.requires_grad  # neither crops nor codes carry gradient here
    crops = _leaves(crops)
    swav_loss(crops, queue_scores=queue).backward()
    assert all(q.grad is None for q in queue)
    assert all(c.grad is not None for c in crops)


def test_empty_queue_equals_no_queue() -> None:
    crops = _crops(3)
    torch.testing.assert_close(
        swav_loss(crops, queue_scores=_queue([0, 0])), swav_loss(crops), rtol=0, atol=0
    )


def test_gradcheck_through_the_predicting_crops() -> None:
    # codes are stop-gradient targets: a finite difference through an assignment crop would
    # also move its codes, so gradcheck varies the crops that only predict (2 and 3)
    crops = _crops(4, 3, 4)
    fixed = crops[:2]
    queue = _queue([3, 2], 4)

    def loss(c2: torch.Tensor, c3: torch.Tensor) -> torch.Tensor:
        return swav_loss([*fixed, c2, c3], queue_scores=queue)

    assert torch.autograd.gradcheck(loss, tuple(_leaves(crops[2:])))


def test_assignment_crop_gradient_is_only_its_prediction_terms() -> None:
    crops = _leaves(_crops(2))
    swav_loss(crops, assign_crops=(0,)).backward()
    # crop 0 only provides codes (stop-gradient) when it is the sole assignment crop
    assert crops[0].grad is None
    assert crops[1].grad is not None and crops[1].grad.abs().sum() > 0


def test_equals_cross_entropy_with_sinkhorn_targets() -> None:
    crops = _crops(2)
    codes = [swav_sinkhorn(c, 0.05, 3) for c in crops]
    expected = sum(torch.nn.functional.cross_entropy(crops[1 - a] / 0.1, codes[a]) for a in (0, 1))
    torch.testing.assert_close(swav_loss(crops), expected / 2, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- properties
@given(swav_problems(), SEEDS)
def test_non_negative_and_invariant_to_batch_permutation(
    problem: tuple[list[torch.Tensor], tuple[int, ...], list[torch.Tensor] | None], seed: int
) -> None:
    crops, assign, queue = problem
    loss = swav_loss(crops, assign_crops=assign, queue_scores=queue)
    assert loss.shape == ()
    assert bool(loss >= 0)  # cross-entropy against distributions
    perm = torch.randperm(crops[0].shape[0], generator=torch.Generator().manual_seed(seed))
    permuted = swav_loss([c[perm] for c in crops], assign_crops=assign, queue_scores=queue)
    torch.testing.assert_close(permuted, loss, rtol=1e-10, atol=1e-12)


@given(swav_problems(), SEEDS)
def test_invariant_to_prototype_and_queue_permutations(
    problem: tuple[list[torch.Tensor], tuple[int, ...], list[torch.Tensor] | None], seed: int
) -> None:
    crops, assign, queue = problem
    gen = torch.Generator().manual_seed(seed)
    cols = torch.randperm(crops[0].shape[1], generator=gen)
    loss = swav_loss(crops, assign_crops=assign, queue_scores=queue)
    queue_p = None
    if queue is not None:
        queue_p = [q[torch.randperm(q.shape[0], generator=gen)][:, cols] for q in queue]
    permuted = swav_loss([c[:, cols] for c in crops], assign_crops=assign, queue_scores=queue_p)
    torch.testing.assert_close(permuted, loss, rtol=1e-10, atol=1e-12)


@given(swav_problems(), SEEDS)
def test_invariant_to_crop_relabelling(
    problem: tuple[list[torch.Tensor], tuple[int, ...], list[torch.Tensor] | None], seed: int
) -> None:
    crops, assign, queue = problem
    perm = torch.randperm(len(crops), generator=torch.Generator().manual_seed(seed)).tolist()
    moved = [crops[p] for p in perm]  # moved[j] = crops[perm[j]]
    where = {p: j for j, p in enumerate(perm)}
    relabelled = tuple(where[a] for a in assign)
    torch.testing.assert_close(
        swav_loss(moved, assign_crops=relabelled, queue_scores=queue),
        swav_loss(crops, assign_crops=assign, queue_scores=queue),
        rtol=1e-10,
        atol=1e-12,
    )


@given(swav_problems(), SEEDS)
def test_predicting_crops_are_invariant_to_a_constant_per_sample(
    problem: tuple[list[torch.Tensor], tuple[int, ...], list[torch.Tensor] | None], seed: int
) -> None:
    crops, assign, queue = problem
    gen = torch.Generator().manual_seed(seed)
    shifted = [
        c if v in assign else c + 5 * torch.randn(c.shape[0], 1, generator=gen, dtype=F64)
        for v, c in enumerate(crops)
    ]
    torch.testing.assert_close(
        swav_loss(shifted, assign_crops=assign, queue_scores=queue),
        swav_loss(crops, assign_crops=assign, queue_scores=queue),
        rtol=1e-10,
        atol=1e-12,
    )


# ------------------------------------------------------------------------------- numerics
def test_stable_at_small_epsilon_with_large_scores() -> None:
    # |scores| = 1 / epsilon in float32: the original Sinkhorn's exp overflows to inf/nan
    crops = _leaves(_crops(4, 8, 6, scale=100.0, dtype=torch.float32))
    ref = swav_reference([c.detach() for c in crops], 0.1, 0.01, 3)
    assert not bool(torch.isfinite(ref))
    loss = swav_loss(crops, epsilon=0.01)
    assert loss.dtype == torch.float32
    assert bool(torch.isfinite(loss))
    loss.backward()
    assert all(c.grad is not None and bool(torch.isfinite(c.grad).all()) for c in crops)
    exact = swav_loss([c.detach().double() for c in crops], epsilon=0.01)
    torch.testing.assert_close(loss.double(), exact, rtol=1e-5, atol=0)


# --------------------------------------------------------------------------------- module
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"temperature": 0.0}, ValueError, r"temperature must be a finite number > 0, got 0.0"),
        ({"epsilon": -1.0}, ValueError, r"epsilon must be a finite number > 0, got -1.0"),
        ({"sinkhorn_iterations": 0}, ValueError, r"sinkhorn_iterations must be an int > 0"),
        ({"assign_crops": ()}, ValueError, r"assign_crops must list at least one crop"),
        (
            {"assign_crops": (0, 0)},
            ValueError,
            r"assign_crops must not repeat a crop, got \(0, 0\)",
        ),
        ({"assign_crops": (-1,)}, ValueError, r"assign_crops must hold indices >= 0, got -1"),
        ({"assign_crops": 0}, TypeError, r"assign_crops must be a list or tuple of ints, got int"),
        ({"gather_distributed": "yes"}, TypeError, r"gather_distributed must be a bool, got str"),
    ],
)
def test_module_validates_in_init(kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        SwAVLoss(**kwargs)  # type: ignore[arg-type]


def test_module_checks_assign_crops_against_the_crops() -> None:
    with pytest.raises(ValueError, match=r"assign_crops must hold indices >= 0 and < 2 .*got 3"):
        SwAVLoss(assign_crops=(0, 3))(_crops(2))


def test_lightly_call_shape_is_a_type_error() -> None:
    """Issue 10.5: lightly's ``SwAVLoss()(high_res, low_res)`` took the low-resolution crops
    as queue scores (those crops got no gradient). ``queue_scores`` is keyword-only now."""
    crops = _crops(4)
    high, low = crops[:2], crops[2:]
    with pytest.raises(TypeError, match=r"forward\(\) takes 2 positional arguments but 3"):
        SwAVLoss()(high, low)
    with pytest.raises(TypeError, match=r"swav_loss\(\) takes 1 positional argument but 2"):
        swav_loss(high, low)  # type: ignore[misc]
    # The intended call: all crops in one sequence, every crop gets gradient.
    leaves = _leaves(crops)
    SwAVLoss()(leaves).backward()
    assert all(leaf.grad is not None and leaf.grad.abs().sum() > 0 for leaf in leaves)


# ---------------------------------------------------------------------------- distributed
def _swav_case(
    rank: int,
    world: int,
    crops: list[list[torch.Tensor]],
    queues: list[list[torch.Tensor]] | None,
    assign: tuple[int, ...],
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    mine = _leaves(crops[rank])
    queue = None if queues is None else queues[rank]
    loss = swav_loss(mine, assign_crops=assign, queue_scores=queue, gather_distributed=True)
    loss.backward()
    return loss.detach(), [c.grad for c in mine]  # type: ignore[misc]


@pytest.mark.parametrize(
    ("sizes", "queue_lens", "assign", "v"),
    [
        ([5, 5], None, (0, 1), 2),
        ([3, 6], None, (0, 1), 4),
        ([4, 4], [[8, 8], [8, 8]], (0, 1), 3),  # the official setting: equal per-rank queues
        ([2, 5], [[3, 0], [7, 4]], (1, 0), 4),  # unequal batches and queue lengths
    ],
)
def test_distributed_equals_single_process_on_global_batch(
    dist_pool,
    sizes: list[int],
    queue_lens: list[list[int]] | None,
    assign: tuple[int, ...],
    v: int,
) -> None:
    crops = [_crops(v, n, 5, seed=r, scale=2.0) for r, n in enumerate(sizes)]
    queues = None
    if queue_lens is not None:
        queues = [_queue(lens, 5, seed=50 + r) for r, lens in enumerate(queue_lens)]
    outs = dist_pool.run(_swav_case, crops, queues, assign)
    world = len(sizes)

    # the global problem: all ranks' batches, and per assignment crop all ranks' queue rows
    global_crops = _leaves([torch.cat([c[j] for c in crops]) for j in range(v)])
    global_queue = None
    if queues is not None:
        global_queue = [torch.cat([q[i] for q in queues]) for i in range(len(assign))]
    expected = swav_loss(global_crops, assign_crops=assign, queue_scores=global_queue)
    reference = swav_reference(
        [c.detach() for c in global_crops], 0.1, 0.05, 3, assign, global_queue
    )
    torch.testing.assert_close(expected, reference, rtol=1e-12, atol=1e-12)
    expected.backward()

    mean_loss = sum(loss for loss, _ in outs) / world
    torch.testing.assert_close(mean_loss, expected.detach(), rtol=1e-8, atol=1e-8)
    starts = [0, sizes[0]]
    for r, (_, grads) in enumerate(outs):
        for j in range(v):
            grad = global_crops[j].grad
            assert grad is not None
            torch.testing.assert_close(
                grads[j] / world, grad[starts[r] : starts[r] + sizes[r]], rtol=1e-8, atol=1e-8
            )
    # the codes really are global: rank 0 alone would get a different loss
    alone = swav_loss(
        crops[0], assign_crops=assign, queue_scores=None if queues is None else queues[0]
    )
    assert not torch.allclose(outs[0][0] * sum(sizes) / (world * sizes[0]), alone)


def test_gather_distributed_without_process_group_is_local() -> None:
    crops = _crops(3)
    torch.testing.assert_close(
        swav_loss(crops, gather_distributed=True), swav_loss(crops), rtol=0, atol=0
    )


# --------------------------------------------------------------------------------- errors
def _bad(*shapes: tuple[int, ...]) -> list[torch.Tensor]:
    return [torch.randn(*s) for s in shapes]


@pytest.mark.parametrize(
    ("scores", "kwargs", "error", "match"),
    [
        ([], {}, ValueError, r"scores must hold at least 2 crop\(s\), got 0"),
        (_bad((4, 3)), {}, ValueError, r"scores must hold at least 2 crop\(s\), got 1"),
        (torch.randn(2, 4, 3), {}, TypeError, r"scores must be a list or tuple .*got Tensor"),
        (
            _bad((4, 3), (4, 2)),
            {},
            ValueError,
            r"same shape \(N, K\), got scores\[0\] with shape \(4, 3\) and scores\[1\] .*\(4, 2\)",
        ),
        (
            _bad((4, 3), (5, 3)),
            {},
            ValueError,
            r"scores\[0\] with shape \(4, 3\) and scores\[1\] with shape \(5, 3\)",
        ),
        (_bad((4, 3), (4,)), {}, ValueError, r"scores\[1\] must be a 2-D tensor, got 1-D"),
        (_bad((4, 3), (4, 3, 1)), {}, ValueError, r"scores\[1\] must be a 2-D tensor, got 3-D"),
        (
            [torch.randn(4, 3), [[1.0]]],
            {},
            TypeError,
            r"scores\[1\] must be a torch.Tensor, got list",
        ),
        (
            [torch.randn(4, 3), torch.ones(4, 3, dtype=torch.long)],
            {},
            TypeError,
            r"scores\[1\] must have a floating-point dtype, got torch.int64",
        ),
        (_bad((0, 3), (0, 3)), {}, ValueError, r"scores\[0\] must have a batch size of at least 1"),
        (_bad((4, 0), (4, 0)), {}, ValueError, r"scores\[0\] must have at least 1 prototype"),
        (_bad((4, 3), (4, 3)), {"assign_crops": ()}, ValueError, r"at least one crop index"),
        (
            _bad((4, 3), (4, 3)),
            {"assign_crops": (0, 2)},
            ValueError,
            r"assign_crops must hold indices >= 0 and < 2 \(the number of crops\), got 2",
        ),
        (
            _bad((4, 3), (4, 3)),
            {"assign_crops": (-1,)},
            ValueError,
            r"assign_crops must hold indices >= 0 and < 2 .*, got -1",
        ),
        (
            _bad((4, 3), (4, 3), (4, 3)),
            {"assign_crops": (1, 0, 1)},
            ValueError,
            r"assign_crops must not repeat a crop, got \(1, 0, 1\)",
        ),
        (
            _bad((4, 3), (4, 3)),
            {"assign_crops": (0, 1.0)},
            TypeError,
            r"assign_crops must hold ints, got float in \(0, 1.0\)",
        ),
        (
            _bad((4, 3), (4, 3)),
            {"assign_crops": (True,)},
            TypeError,
            r"assign_crops must hold ints, got bool",
        ),
        (
            _bad((4, 3), (4, 3)),
            {"assign_crops": "01"},
            TypeError,
            r"assign_crops must be a list or tuple of ints, got str",
        ),
        (
            _bad((4, 3), (4, 3)),
            {"queue_scores": _bad((5, 3))},
            ValueError,
            r"queue_scores must hold one tensor per assignment crop: expected 2 for "
            r"assign_crops=\(0, 1\), got 1",
        ),
        (
            _bad((4, 3), (4, 3)),
            {"queue_scores": _bad((5, 3), (5, 4))},
            ValueError,
            r"queue_scores\[1\] must have K=3 prototypes \(columns\) like scores, got shape "
            r"\(5, 4\)",
        ),
        (
            _bad((4, 3), (4, 3)),
            {"queue_scores": _bad((5, 3), (5,))},
            ValueError,
            r"queue_scores\[1\] must be a 2-D tensor, got 1-D",
        ),
        (
            _bad((4, 3), (4, 3)),
            {"queue_scores": torch.randn(2, 5, 3)},
            TypeError,
            r"queue_scores must be None or a list or tuple of \(Q, K\) tensors, got Tensor",
        ),
        (_bad((4, 3), (4, 3)), {"temperature": 0.0}, ValueError, r"temperature must be .* > 0"),
        (_bad((4, 3), (4, 3)), {"temperature": -0.1}, ValueError, r"temperature .* got -0.1"),
        (_bad((4, 3), (4, 3)), {"epsilon": 0}, ValueError, r"epsilon must be a finite number > 0"),
        (
            _bad((4, 3), (4, 3)),
            {"epsilon": float("inf")},
            ValueError,
            r"epsilon must be a finite number > 0, got inf",
        ),
        (
            _bad((4, 3), (4, 3)),
            {"sinkhorn_iterations": 0},
            ValueError,
            r"sinkhorn_iterations must be an int > 0, got 0",
        ),
        (
            _bad((4, 3), (4, 3)),
            {"sinkhorn_iterations": 3.0},
            TypeError,
            r"sinkhorn_iterations must be an int, got float",
        ),
        (
            _bad((4, 3), (4, 3)),
            {"gather_distributed": None},
            TypeError,
            r"gather_distributed must be a bool, got NoneType",
        ),
    ],
)
def test_errors(scores: object, kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        swav_loss(scores, **kwargs)  # type: ignore[arg-type]
