"""DINO: loss (main_dino.py DINOLoss), centering, teacher-temperature warm-up, head."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from strategies import SEEDS

import sslosses
from benchmarks.references import dino as dino_reference
from benchmarks.references import (
    dino_from_targets,
    dino_update_center,
    dinov2_sinkhorn_knopp_teacher,
)
from sslosses.dino import DINOCenter, DINOHead, DINOLoss, dino_loss

F64 = torch.float64


def _scores(
    v: int, n: int = 5, k: int = 7, *, seed: int = 0, scale: float = 3.0, dtype: torch.dtype = F64
) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [(scale * torch.randn(n, k, generator=gen, dtype=F64)).to(dtype) for _ in range(v)]


def _leaves(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_(True) for t in tensors]


@st.composite
def dino_problems(
    draw: st.DrawFn,
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, float, float]:
    """Student crops (V in 2..10), teacher crops (G in 1..2), center and temperatures."""
    v = draw(st.integers(2, 10))
    g = draw(st.integers(1, 2))
    n = draw(st.integers(1, 8))
    k = draw(st.integers(1, 12))
    seed = draw(SEEDS)
    student = _scores(v, n, k, seed=seed)
    teacher = _scores(g, n, k, seed=seed + 1)
    center = _scores(1, 1, k, seed=seed + 2, scale=0.5)[0][0]
    t_s = draw(st.floats(0.05, 1.0))
    t_t = draw(st.floats(0.02, 1.0))
    return student, teacher, center, t_s, t_t


# ------------------------------------------------------------------------- reference agreement
@given(dino_problems())
def test_matches_reference_value_and_student_gradient(
    problem: tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, float, float],
) -> None:
    student, teacher, center, t_s, t_t = problem
    mine_s, mine_t = _leaves(student), _leaves(teacher)
    loss = dino_loss(
        mine_s, mine_t, center=center, student_temperature=t_s, teacher_temperature=t_t
    )
    loss.backward()
    ref_s, ref_t = _leaves([torch.cat(student)])[0], _leaves([torch.cat(teacher)])[0]
    expected = dino_reference(ref_s, ref_t, center[None], len(student), t_t, t_s)
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-10)
    assert ref_s.grad is not None
    torch.testing.assert_close(
        # with G = 1 student crop 0 (the teacher's own view) does not enter: no gradient
        torch.cat([torch.zeros_like(s) if s.grad is None else s.grad for s in mine_s]),
        ref_s.grad,
        rtol=1e-10,
        atol=1e-10,
    )
    assert all(t.grad is None for t in mine_t)  # the teacher gets no gradient
    assert (mine_s[0].grad is None) == (len(teacher) == 1)


def test_teacher_and_center_get_no_gradient_even_when_they_require_it() -> None:
    student, teacher = _leaves(_scores(4)), _leaves(_scores(2, seed=1))
    center = torch.zeros(7, dtype=F64, requires_grad=True)
    loss = dino_loss(student, teacher, center=center)
    assert loss.requires_grad
    loss.backward()
    assert all(t.grad is None for t in teacher) and center.grad is None
    assert all(s.grad is not None for s in student)


def test_center_shapes_k_and_1k_agree() -> None:
    student, teacher = _scores(3), _scores(2, seed=1)
    center = _scores(1, 1, 7, seed=2)[0]
    torch.testing.assert_close(
        dino_loss(student, teacher, center=center),
        dino_loss(student, teacher, center=center[0]),
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("g", [1, 2])
def test_center_update_matches_reference(momentum: float, g: int) -> None:
    centering = DINOCenter(7, momentum=momentum, dtype=F64)
    expected = torch.zeros(1, 7, dtype=F64)
    for step in range(3):
        teacher = _scores(g, 5, 7, seed=step)
        centering.update(teacher)
        expected = dino_update_center(expected, torch.cat(teacher), momentum)
        torch.testing.assert_close(centering.center, expected[0], rtol=1e-12, atol=1e-12)
    if momentum < 1:
        assert centering.center.abs().sum() > 0


def test_center_update_takes_one_concatenated_tensor_and_no_grad() -> None:
    teacher = _leaves(_scores(2, 4, 7, dtype=torch.float32))
    a, b = DINOCenter(7), DINOCenter(7)
    a.update(teacher)
    b.update(torch.cat(teacher))
    torch.testing.assert_close(a.center, b.center, rtol=0, atol=0)
    assert not a.center.requires_grad and all(t.grad is None for t in teacher)


def test_center_is_a_persistent_buffer_and_round_trips() -> None:
    centering = DINOCenter(7, momentum=0.8)
    centering.update(_scores(2, 4, 7, dtype=torch.float32))
    state = centering.state_dict()
    assert list(state) == ["center"]
    restored = DINOCenter(7, momentum=0.8)
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.center, centering.center, rtol=0, atol=0)
    assert restored.center.abs().sum() > 0
    assert repr(restored) == "DINOCenter(dim=7, momentum=0.8, gather_distributed=False)"


def test_center_half_inputs_update_a_float32_center() -> None:
    teacher = _scores(2, 4, 7, dtype=torch.float32)
    a, b = DINOCenter(7), DINOCenter(7)
    a.update([t.to(torch.bfloat16) for t in teacher])
    b.update([t.to(torch.bfloat16).float() for t in teacher])
    assert a.center.dtype == torch.float32
    torch.testing.assert_close(a.center, b.center, rtol=0, atol=0)


# ------------------------------------------------------------------------------- properties
def _entropy(teacher: Sequence[torch.Tensor], center: torch.Tensor, t_t: float) -> torch.Tensor:
    p = [F.softmax((t - center) / t_t, dim=1) for t in teacher]
    return torch.stack([-(q * q.log()).sum(dim=1).mean() for q in p]).mean()


@given(dino_problems())
def test_loss_is_at_least_the_target_entropy_with_equality_at_the_teacher(
    problem: tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, float, float],
) -> None:
    student, teacher, center, t_s, t_t = problem
    # every student crop paired with the same teacher crop: the loss is that pair's cross-entropy
    one_teacher = teacher[:1]
    loss = dino_loss(
        student, one_teacher, center=center, student_temperature=t_s, teacher_temperature=t_t
    )
    entropy = _entropy(one_teacher, center, t_t)
    assert loss >= entropy - 1e-10
    # a student whose softmax is the sharpened teacher: cross-entropy == entropy
    sharpened = (one_teacher[0] - center) * (t_s / t_t)
    equal = dino_loss(
        [student[0], *[sharpened] * (len(student) - 1)],
        one_teacher,
        center=center,
        student_temperature=t_s,
        teacher_temperature=t_t,
    )
    torch.testing.assert_close(equal, entropy, rtol=1e-10, atol=1e-10)


@given(dino_problems(), st.floats(-50.0, 50.0))
def test_targets_invariant_to_a_constant_added_to_the_teacher(
    problem: tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, float, float],
    constant: float,
) -> None:
    student, teacher, center, t_s, t_t = problem
    kwargs = {"center": center, "student_temperature": t_s, "teacher_temperature": t_t}
    shifted = [t + constant for t in teacher]
    per_row = [t + torch.linspace(-3, 3, t.shape[0], dtype=F64)[:, None] for t in teacher]
    base = dino_loss(student, teacher, **kwargs)  # type: ignore[arg-type]
    torch.testing.assert_close(dino_loss(student, shifted, **kwargs), base, rtol=1e-9, atol=1e-9)  # type: ignore[arg-type]
    torch.testing.assert_close(dino_loss(student, per_row, **kwargs), base, rtol=1e-9, atol=1e-9)  # type: ignore[arg-type]


@given(dino_problems())
def test_the_skipped_pairs_are_exactly_the_same_view_pairs(
    problem: tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, float, float],
) -> None:
    student, teacher, center, t_s, t_t = problem
    kwargs = {"center": center, "student_temperature": t_s, "teacher_temperature": t_t}
    loss = dino_loss(student, teacher, **kwargs)  # type: ignore[arg-type]
    pairs = []
    for g in range(len(teacher)):
        for v in range(len(student)):
            if v != g:
                # one pair alone: a student crop set of [filler..., crop v at a position != g]
                pairs.append(_pair_loss(student[v], teacher[g], center, t_s, t_t))
    torch.testing.assert_close(loss, torch.stack(pairs).mean(), rtol=1e-10, atol=1e-10)
    # changing a student crop changes the loss only through its different-view pairs: with
    # G = 1, student crop 0 (the teacher's own view) does not enter the loss at all
    if len(teacher) == 1:
        replaced = [torch.zeros_like(student[0]), *student[1:]]
        torch.testing.assert_close(
            dino_loss(replaced, teacher, **kwargs),  # type: ignore[arg-type]
            loss,
            rtol=0,
            atol=0,
        )


def _pair_loss(
    s: torch.Tensor, t: torch.Tensor, center: torch.Tensor, t_s: float, t_t: float
) -> torch.Tensor:
    """The cross-entropy of one (teacher, student) pair, written out."""
    target = F.softmax((t - center) / t_t, dim=1)
    return -(target * F.log_softmax(s / t_s, dim=1)).sum(dim=1).mean()


@given(dino_problems(), st.data())
def test_invariant_to_batch_permutation(
    problem: tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, float, float],
    data: st.DataObject,
) -> None:
    student, teacher, center, t_s, t_t = problem
    perm = torch.tensor(data.draw(st.permutations(range(student[0].shape[0]))))
    kwargs = {"center": center, "student_temperature": t_s, "teacher_temperature": t_t}
    torch.testing.assert_close(
        dino_loss([s[perm] for s in student], [t[perm] for t in teacher], **kwargs),  # type: ignore[arg-type]
        dino_loss(student, teacher, **kwargs),  # type: ignore[arg-type]
        rtol=1e-10,
        atol=1e-10,
    )


# --------------------------------------------------------------------------------- numerics
def test_finite_at_small_teacher_temperature_and_large_k() -> None:
    k = 65536
    student = _leaves(_scores(4, 3, k, scale=30.0, dtype=torch.float32))
    teacher = _scores(2, 3, k, seed=1, scale=30.0, dtype=torch.float32)
    loss = dino_loss(student, teacher, center=torch.zeros(k), teacher_temperature=0.01)
    loss.backward()
    assert bool(torch.isfinite(loss))
    assert all(bool(torch.isfinite(s.grad).all()) for s in student)  # type: ignore[arg-type]
    exact = dino_loss(
        [s.detach().double() for s in student],
        [t.double() for t in teacher],
        center=torch.zeros(k, dtype=F64),
        teacher_temperature=0.01,
    )
    torch.testing.assert_close(loss.double(), exact, rtol=1e-5, atol=0)


# ----------------------------------------------------------------------------------- module
def test_module_teacher_temperature_overrides_per_call() -> None:
    # module == function and the repr: tests/contracts.py (row dino_loss[temperatures])
    student, teacher = _scores(5), _scores(2, seed=1)
    center = _scores(1, 1, 7, seed=2)[0][0]
    module = DINOLoss(student_temperature=0.2, teacher_temperature=0.05)
    torch.testing.assert_close(
        module(student, teacher, center=center, teacher_temperature=0.07),
        dino_loss(
            student, teacher, center=center, student_temperature=0.2, teacher_temperature=0.07
        ),
        rtol=0,
        atol=0,
    )


def test_exported() -> None:
    assert sslosses.DINOLoss is DINOLoss and sslosses.DINOCenter is DINOCenter
    assert sslosses.DINOHead is DINOHead
    assert sslosses.functional.dino_loss is dino_loss


# ---------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("student", "teacher", "center", "kwargs", "error", "match"),
    [
        (_scores(3), _scores(2, k=6), torch.zeros(7, dtype=F64), {}, ValueError,
         r"teacher_scores and student_scores must have the same shape \(N, K\), "
         r"got \(5, 6\) and \(5, 7\)"),
        (_scores(3), _scores(2, n=4), torch.zeros(7, dtype=F64), {}, ValueError,
         r"must have the same shape \(N, K\), got \(4, 7\) and \(5, 7\)"),
        (_scores(2) + _scores(1, k=6), _scores(2), torch.zeros(7, dtype=F64), {}, ValueError,
         r"all crops of student_scores must have the same shape"),
        (_scores(2), _scores(3), torch.zeros(7, dtype=F64), {}, ValueError,
         r"student_scores must hold at least as many crops as teacher_scores .* got 2 student "
         r"and 3 teacher crops"),
        (_scores(1), _scores(1), torch.zeros(7, dtype=F64), {}, ValueError,
         r"student_scores must hold at least 2 crop\(s\), got 1"),
        (_scores(3), [], torch.zeros(7, dtype=F64), {}, ValueError,
         r"teacher_scores must hold at least 1 crop\(s\), got 0"),
        (_scores(3), _scores(2), torch.zeros(6, dtype=F64), {}, ValueError,
         r"center must have shape \(7,\) or \(1, 7\) \(K=7 like the scores\), got \(6,\)"),
        (_scores(3), _scores(2), torch.zeros(2, 7, dtype=F64), {}, ValueError,
         r"center must have shape \(7,\) or \(1, 7\)"),
        (_scores(3), _scores(2), torch.zeros(7, dtype=torch.long), {}, TypeError,
         r"center must have a floating-point dtype, got torch.int64"),
        (_scores(3), _scores(2), torch.zeros(7, dtype=F64), {"student_temperature": 0.0},
         ValueError, r"student_temperature must be a finite number > 0, got 0.0"),
        (_scores(3), _scores(2), torch.zeros(7, dtype=F64), {"teacher_temperature": -0.04},
         ValueError, r"teacher_temperature must be a finite number > 0, got -0.04"),
        (_scores(3)[0], _scores(2), torch.zeros(7, dtype=F64), {}, TypeError,
         r"student_scores must be a list or tuple of tensors \(N, K\), got Tensor"),
        ([1, 2], _scores(1), torch.zeros(7), {}, TypeError,
         r"student_scores\[0\] must be a torch.Tensor, got int"),
        (_scores(3), [torch.zeros(5, 7, 1, dtype=F64)], torch.zeros(7, dtype=F64), {},
         ValueError, r"teacher_scores\[0\] must be a 2-D tensor, got 3-D"),
        (_scores(3), _scores(2), torch.zeros(7, dtype=F64), {"gather_distributed": 1},
         TypeError, r"gather_distributed must be a bool, got int"),
    ],
)  # fmt: skip
def test_errors(
    student: object,
    teacher: object,
    center: object,
    kwargs: dict[str, object],
    error: type,
    match: str,
) -> None:
    with pytest.raises(error, match=match):
        dino_loss(student, teacher, center=center, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"momentum": 1.5}, ValueError, r"momentum must be in \[0, 1\], got 1.5"),
        ({"momentum": -0.1}, ValueError, r"momentum must be in \[0, 1\], got -0.1"),
        ({"momentum": "0.9"}, TypeError, r"momentum must be a float, got str"),
        ({"dim": 0}, ValueError, r"dim must be an int > 0, got 0"),
        ({"dtype": torch.long}, TypeError, r"dtype must be a floating-point torch.dtype"),
        ({"gather_distributed": "no"}, TypeError, r"gather_distributed must be a bool, got str"),
    ],
)
def test_center_errors(kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        DINOCenter(**{"dim": 7, **kwargs})  # type: ignore[arg-type]


def test_center_update_errors() -> None:
    centering = DINOCenter(7)
    with pytest.raises(ValueError, match=r"teacher_scores\[0\] must have K=7 columns like the "
                       r"center, got shape \(4, 6\)"):  # fmt: skip
        centering.update([torch.zeros(4, 6)])
    with pytest.raises(ValueError, match=r"teacher_scores must be a 2-D tensor \(M, K\) or a 3-D "):
        centering.update(torch.zeros(7))
    with pytest.raises(TypeError, match=r"teacher_scores must be a list or tuple of tensors"):
        centering.update(None)  # type: ignore[arg-type]
    # no rows: the mean is undefined, so the step is refused in both forms (not skipped)
    with pytest.raises(ValueError, match=r"teacher_scores must have at least 1 row, got shape"):
        centering.update(torch.zeros(0, 7))
    with pytest.raises(
        ValueError, match=r"teacher_scores\[0\] must have a batch size of at least 1, got 0"
    ):
        centering.update([torch.zeros(0, 7)])
    assert bool((centering.center == 0).all())  # nothing was applied


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"student_temperature": 0}, ValueError, r"student_temperature must be a finite number"),
        ({"teacher_temperature": float("inf")}, ValueError, r"teacher_temperature must be a"),
        ({"gather_distributed": None}, TypeError, r"gather_distributed must be a bool"),
    ],
)
def test_module_validates_in_init(kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        DINOLoss(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- distributed
@pytest.fixture(scope="module", params=[2, 3], ids=["W2", "W3"])
def pool(request: pytest.FixtureRequest, dist_pool: object) -> Iterator[object]:
    """The session's 2-rank pool, or a 3-rank pool for this module."""
    if request.param == 2:
        yield dist_pool
        return
    from dist_harness import DistPool

    three = DistPool(world_size=3)
    yield three
    three.close()


def _dino_case(
    rank: int,
    world: int,
    student: list[list[torch.Tensor]],
    teacher: list[list[torch.Tensor]],
    center: torch.Tensor,
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    mine = _leaves(student[rank])
    loss = dino_loss(mine, teacher[rank], center=center, gather_distributed=True)
    loss.backward()
    centering = DINOCenter(center.shape[0], gather_distributed=True, dtype=F64)
    centering.center.copy_(center)
    centering.update(teacher[rank])
    return loss.detach(), [s.grad for s in mine], centering.center  # type: ignore[misc]


@pytest.mark.parametrize(
    ("sizes", "v", "g"), [([4, 4, 4], 4, 2), ([2, 5, 3], 6, 2), ([1, 6, 2], 3, 1)]
)
def test_distributed_equals_single_process_on_global_batch(
    pool: object, sizes: list[int], v: int, g: int
) -> None:
    world = pool.world_size  # type: ignore[attr-defined]
    sizes = sizes[:world]
    student = [_scores(v, n, 9, seed=r) for r, n in enumerate(sizes)]
    teacher = [_scores(g, n, 9, seed=10 + r) for r, n in enumerate(sizes)]
    center = _scores(1, 1, 9, seed=99, scale=0.5)[0][0]
    outs = pool.run(_dino_case, student, teacher, center)  # type: ignore[attr-defined]

    global_student = _leaves([torch.cat([s[j] for s in student]) for j in range(v)])
    global_teacher = [torch.cat([t[j] for t in teacher]) for j in range(g)]
    expected = dino_loss(global_student, global_teacher, center=center)
    expected.backward()
    mean_loss = sum(loss for loss, _, _ in outs) / world
    torch.testing.assert_close(mean_loss, expected.detach(), rtol=1e-10, atol=1e-10)
    starts = np.cumsum([0, *sizes]).tolist()
    for r, (_, grads, _) in enumerate(outs):
        for j in range(v):
            grad = global_student[j].grad
            if grad is None:  # G = 1: crop 0 is the teacher's own view and does not enter
                assert g == 1 and j == 0 and grads[j] is None
                continue
            torch.testing.assert_close(
                grads[j] / world, grad[starts[r] : starts[r + 1]], rtol=1e-10, atol=1e-10
            )
    # the center: the single-process center on the global batch, the same on every rank
    single = DINOCenter(9, dtype=F64)
    single.center.copy_(center)
    single.update(global_teacher)
    for _, _, c in outs:
        torch.testing.assert_close(c, single.center, rtol=1e-12, atol=1e-12)
    if len(set(sizes)) > 1:  # the official N * world_size division would differ here
        official = dino_update_center(
            center[None],
            torch.cat(global_teacher).sum(dim=0, keepdim=True)
            * (len(global_teacher[0]) / (g * sizes[0] * world)),
            0.9,
        )
        assert not torch.allclose(official[0], single.center)


def test_gather_distributed_without_process_group_is_local() -> None:
    student, teacher = _scores(3), _scores(2, seed=1)
    center = torch.zeros(7, dtype=F64)
    torch.testing.assert_close(
        dino_loss(student, teacher, center=center, gather_distributed=True),
        dino_loss(student, teacher, center=center),
        rtol=0,
        atol=0,
    )
    a, b = DINOCenter(7, gather_distributed=True), DINOCenter(7)
    a.update([t.float() for t in teacher])
    b.update([t.float() for t in teacher])
    torch.testing.assert_close(a.center, b.center, rtol=0, atol=0)


# ------------------------------------------------------------- Sinkhorn-Knopp (DINOv2) centering
@given(dino_problems(), st.integers(1, 5))
def test_sinkhorn_matches_dinov2_value_and_student_gradient(
    problem: tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, float, float],
    iterations: int,
) -> None:
    student, teacher, _, t_s, t_t = problem
    mine = _leaves(student)
    loss = dino_loss(
        mine,
        teacher,
        centering="sinkhorn",
        sinkhorn_iterations=iterations,
        student_temperature=t_s,
        teacher_temperature=t_t,
    )
    loss.backward()
    # DINOv2 runs Sinkhorn-Knopp once over the teacher's rows of all global crops (G N, K)
    targets = dinov2_sinkhorn_knopp_teacher(torch.cat(teacher), t_t, iterations)
    ref = _leaves([torch.cat(student)])[0]
    expected = dino_from_targets(ref, targets, len(student), t_s)
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-10)
    assert ref.grad is not None
    torch.testing.assert_close(
        torch.cat([torch.zeros_like(s) if s.grad is None else s.grad for s in mine]),
        ref.grad,
        rtol=1e-10,
        atol=1e-10,
    )


def _sinkhorn_targets(teacher: list[torch.Tensor], t_t: float, iterations: int = 3) -> torch.Tensor:
    """The targets of teacher crop 0, read off the public loss's gradient.

    With G = 1 and student crop 1 all zeros, d loss / d S = (1 / K - Q) / (t_s N): the
    targets are 1 / K - t_s N grad (t_s = 1).
    """
    n, k = teacher[0].shape
    student = [torch.zeros(n, k, dtype=F64), torch.zeros(n, k, dtype=F64, requires_grad=True)]
    dino_loss(
        student,
        teacher[:1],
        centering="sinkhorn",
        sinkhorn_iterations=iterations,
        student_temperature=1.0,
        teacher_temperature=t_t,
    ).backward()
    assert student[1].grad is not None
    return 1 / k - n * student[1].grad


@given(dino_problems())
def test_sinkhorn_marginals_rows_sum_to_one_and_columns_approach_n_over_k(
    problem: tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, float, float],
) -> None:
    _, teacher, _, _, t_t = problem
    n, k = teacher[0].shape
    t_t = max(t_t, 0.2)  # a moderate sharpening, so that 300 iterations converge
    q = _sinkhorn_targets(teacher, t_t)
    # the last step is the per-sample normalization: every row sums to 1 exactly
    torch.testing.assert_close(q.sum(dim=1), torch.ones(n, dtype=F64), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(q, dinov2_sinkhorn_knopp_teacher(teacher[0], t_t), rtol=1e-9,
                               atol=1e-10)  # fmt: skip
    # the per-output totals are N / K only in the limit (after 3 iterations approximately)
    many = _sinkhorn_targets(teacher, t_t, iterations=300)
    torch.testing.assert_close(
        many.sum(dim=0), torch.full((k,), n / k, dtype=F64), rtol=1e-6, atol=1e-6
    )


@given(dino_problems())
def test_sinkhorn_targets_ignore_a_constant_per_output(
    problem: tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, float, float],
) -> None:
    student, teacher, center, t_s, t_t = problem
    kwargs = {"centering": "sinkhorn", "student_temperature": t_s, "teacher_temperature": t_t}
    shifted = [t + 5 * center for t in teacher]  # a center would change nothing
    torch.testing.assert_close(
        dino_loss(student, shifted, **kwargs),  # type: ignore[arg-type]
        dino_loss(student, teacher, **kwargs),  # type: ignore[arg-type]
        rtol=1e-9,
        atol=1e-9,
    )


def test_sinkhorn_normalizes_the_global_crops_together() -> None:
    # one Sinkhorn over the G N rows differs from one per crop: the concatenation is the one
    student, teacher = _scores(4), _scores(2, seed=1)
    loss = dino_loss(student, teacher, centering="sinkhorn", teacher_temperature=0.1)
    together = dinov2_sinkhorn_knopp_teacher(torch.cat(teacher), 0.1)
    apart = torch.cat([dinov2_sinkhorn_knopp_teacher(t, 0.1) for t in teacher])
    expected = dino_from_targets(torch.cat(student), together, 4)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(dino_from_targets(torch.cat(student), apart, 4), expected)


def test_sinkhorn_finite_where_the_original_overflows() -> None:
    student = _scores(4, 6, 9, scale=8.0, dtype=torch.float32)
    teacher = _scores(2, 6, 9, seed=1, scale=8.0, dtype=torch.float32)
    original = dinov2_sinkhorn_knopp_teacher(torch.cat(teacher), 0.04)  # exp(200) in float32
    assert not bool(torch.isfinite(original).all())
    loss = dino_loss(student, teacher, centering="sinkhorn", teacher_temperature=0.04)
    exact = dino_from_targets(
        torch.cat(student).double(),
        dinov2_sinkhorn_knopp_teacher(torch.cat(teacher).double(), 0.04),
        4,
    )
    assert bool(torch.isfinite(loss))
    torch.testing.assert_close(loss.double(), exact, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_sinkhorn_half_inputs_and_autocast_compute_in_float32(dtype: torch.dtype) -> None:
    student = _scores(4, dtype=torch.float32)
    teacher = _scores(2, seed=1, dtype=torch.float32)
    half = dino_loss(
        [s.to(dtype) for s in student], [t.to(dtype) for t in teacher], centering="sinkhorn"
    )
    assert half.dtype == torch.float32
    torch.testing.assert_close(
        half,
        dino_loss(
            [s.to(dtype).float() for s in student],
            [t.to(dtype).float() for t in teacher],
            centering="sinkhorn",
        ),
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = dino_loss(student, teacher, centering="sinkhorn")
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, dino_loss(student, teacher, centering="sinkhorn"))
    assert dino_loss(_scores(2), _scores(1), centering="sinkhorn").dtype == F64


def test_sinkhorn_compile_fullgraph_matches_eager() -> None:
    student = _scores(5, dtype=torch.float32)
    teacher = _scores(2, seed=1, dtype=torch.float32)
    compiled = torch.compile(dino_loss, fullgraph=True)
    torch.testing.assert_close(
        compiled(student, teacher, centering="sinkhorn", teacher_temperature=0.07),
        dino_loss(student, teacher, centering="sinkhorn", teacher_temperature=0.07),
    )


def test_sinkhorn_module_equals_functional() -> None:
    student, teacher = _scores(5), _scores(2, seed=1)
    module = DINOLoss(centering="sinkhorn", sinkhorn_iterations=4)
    torch.testing.assert_close(
        module(student, teacher, teacher_temperature=0.06),
        dino_loss(student, teacher, centering="sinkhorn", sinkhorn_iterations=4,
                  teacher_temperature=0.06),
        rtol=0, atol=0,
    )  # fmt: skip
    assert repr(module) == (
        "DINOLoss(student_temperature=0.1, teacher_temperature=0.04, centering='sinkhorn', "
        "sinkhorn_iterations=4, gather_distributed=False)"
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({}, ValueError, r"center is required with centering='center' \(e.g. DINOCenter.center, "
         r"a tensor of shape \(7,\)\), got None"),
        ({"center": torch.zeros(7, dtype=F64), "centering": "sinkhorn"}, ValueError,
         r"center must be None with centering='sinkhorn' \(.*\), got \(7,\)"),
        ({"centering": "sinkhorn_knopp"}, ValueError,
         r"centering must be one of 'center', 'sinkhorn', got 'sinkhorn_knopp'"),
        ({"centering": "sinkhorn", "sinkhorn_iterations": 0}, ValueError,
         r"sinkhorn_iterations must be an int > 0, got 0"),
        ({"centering": "sinkhorn", "sinkhorn_iterations": 2.0}, TypeError,
         r"sinkhorn_iterations must be an int, got float"),
    ],
)  # fmt: skip
def test_centering_errors(kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        dino_loss(_scores(3), _scores(2), **kwargs)  # type: ignore[arg-type]
    if "center" not in kwargs and "centering" in kwargs:
        with pytest.raises(error, match=match):
            DINOLoss(**{k: v for k, v in kwargs.items()})  # type: ignore[arg-type]


def _dino_sinkhorn_case(
    rank: int, world: int, student: list[list[torch.Tensor]], teacher: list[list[torch.Tensor]]
) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    mine = _leaves(student[rank])
    loss = dino_loss(
        mine, teacher[rank], centering="sinkhorn", teacher_temperature=0.1, gather_distributed=True
    )
    loss.backward()
    return loss.detach(), [s.grad for s in mine]


def test_sinkhorn_distributed_equals_single_process_on_global_batch(dist_pool_w: Any) -> None:
    world = dist_pool_w.world_size
    sizes = {2: [2, 5], 3: [3, 1, 4]}[world]  # unequal batches
    student = [_scores(4, n, 9, seed=r) for r, n in enumerate(sizes)]
    teacher = [_scores(2, n, 9, seed=10 + r) for r, n in enumerate(sizes)]
    outs = dist_pool_w.run(_dino_sinkhorn_case, student, teacher)
    global_student = _leaves([torch.cat([s[j] for s in student]) for j in range(4)])
    global_teacher = [torch.cat([t[j] for t in teacher]) for j in range(2)]
    expected = dino_loss(
        global_student, global_teacher, centering="sinkhorn", teacher_temperature=0.1
    )
    expected.backward()
    torch.testing.assert_close(
        torch.stack([loss for loss, _ in outs]).mean(), expected.detach(), rtol=1e-10, atol=1e-10
    )
    starts = np.cumsum([0, *sizes]).tolist()
    for r, (_, grads) in enumerate(outs):
        for j in range(4):
            want = global_student[j].grad
            assert want is not None and grads[j] is not None
            torch.testing.assert_close(
                grads[j] / world, want[starts[r] : starts[r + 1]], rtol=1e-10, atol=1e-10
            )


def test_compiled_loss_accepts_a_center_after_k_changed() -> None:
    # Dynamo makes K a symbol once it changes between calls; the center check must trace it
    # (it compared shapes with ``in`` and rejected a matching center).
    torch._dynamo.reset()
    compiled = torch.compile(dino_loss, fullgraph=True)
    gen = torch.Generator().manual_seed(0)
    for k, centering in ((7, "sinkhorn"), (6, "center"), (5, "center")):
        student = [torch.randn(4, k, generator=gen) for _ in range(3)]
        teacher = [torch.randn(4, k, generator=gen) for _ in range(2)]
        kwargs: dict[str, Any] = (
            {"centering": "sinkhorn"} if centering == "sinkhorn" else {"center": torch.zeros(k)}
        )
        torch.testing.assert_close(
            compiled(student, teacher, **kwargs), dino_loss(student, teacher, **kwargs)
        )
