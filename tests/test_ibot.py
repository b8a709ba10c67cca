"""iBOT patch loss (dinov2 ibot_patch_loss.py iBOTPatchLoss), its centering and Sinkhorn."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from strategies import SEEDS

import sslosses
from benchmarks.references import (
    dinov2_sinkhorn_knopp_teacher,
    ibot_forward,
    ibot_forward_masked,
    ibot_update_center,
)
from sslosses import DINOCenter, IBOTPatchLoss
from sslosses.functional import ibot_patch_loss

F64 = torch.float64
TOL = {"rtol": 1e-10, "atol": 1e-10}

Problem = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float, float]


def _problem(
    b: int = 4,
    p: int = 6,
    k: int = 7,
    *,
    seed: int = 0,
    scale: float = 3.0,
    ratio: float = 0.4,
    dtype: torch.dtype = F64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Student and teacher patch scores (B, P, K), masks (B, P) and a center (K,)."""
    gen = torch.Generator().manual_seed(seed)
    student = scale * torch.randn(b, p, k, generator=gen, dtype=F64)
    teacher = scale * torch.randn(b, p, k, generator=gen, dtype=F64)
    masks = torch.rand(b, p, generator=gen, dtype=F64) < ratio
    center = 0.5 * torch.randn(k, generator=gen, dtype=F64)
    return student.to(dtype), teacher.to(dtype), masks, center.to(dtype)


@st.composite
def ibot_problems(draw: st.DrawFn) -> Problem:
    """B in 1..5 images of P in 1..8 patches, K in 1..10, any masks (none and all included)."""
    b, p, k = draw(st.integers(1, 5)), draw(st.integers(1, 8)), draw(st.integers(1, 10))
    student, teacher, _, center = _problem(b, p, k, seed=draw(SEEDS))
    flat = draw(st.lists(st.booleans(), min_size=b * p, max_size=b * p))
    masks = torch.tensor(flat, dtype=torch.bool).reshape(b, p)
    t_s, t_t = draw(st.floats(0.05, 1.0)), draw(st.floats(0.05, 1.0))
    return student, teacher, masks, center, t_s, t_t


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


def _reference_targets(
    teacher: torch.Tensor, masks: torch.Tensor, center: torch.Tensor, t_t: float, mode: str
) -> torch.Tensor:
    """The original's teacher targets for the (B, P, K) patches (zero where not masked)."""
    if mode == "center":
        # softmax_center_teacher with the (1, 1, K) center of iBOTPatchLoss
        return F.softmax((teacher - center.reshape(1, 1, -1)) / t_t, dim=-1)
    targets = torch.zeros_like(teacher)
    # sinkhorn_knopp_teacher runs on the masked patches only (B = n_masked_patches)
    targets[masks] = dinov2_sinkhorn_knopp_teacher(teacher[masks], t_t)
    return targets


# ------------------------------------------------------------------------- reference agreement
@pytest.mark.parametrize("mode", ["center", "sinkhorn"])
@given(problem=ibot_problems())
def test_matches_forward_and_forward_masked_value_and_gradient(mode: str, problem: Problem) -> None:
    student, teacher, masks, center, t_s, t_t = problem
    kwargs: dict[str, Any] = {
        "center": center if mode == "center" else None,
        "centering": mode,
        "student_temperature": t_s,
        "teacher_temperature": t_t,
    }
    targets = _reference_targets(teacher, masks, center, t_t, mode)
    # the (B, P, K) layout against iBOTPatchLoss.forward
    mine, ref = _leaf(student), _leaf(student)
    loss = ibot_patch_loss(mine, teacher, masks, **kwargs)
    expected = ibot_forward(ref, targets, masks, t_s)
    loss.backward()
    expected.backward()
    torch.testing.assert_close(loss, expected, **TOL)
    torch.testing.assert_close(mine.grad, ref.grad, **TOL)
    # the masked-rows layout against iBOTPatchLoss.forward_masked
    rows, ref_rows = _leaf(student[masks]), _leaf(student[masks])
    loss_rows = ibot_patch_loss(rows, teacher[masks], masks, **kwargs)
    expected_rows = ibot_forward_masked(ref_rows, targets[masks], masks, t_s)
    loss_rows.backward()
    expected_rows.backward()
    torch.testing.assert_close(loss_rows, expected_rows, **TOL)
    torch.testing.assert_close(rows.grad, ref_rows.grad, **TOL)
    # the two originals agree with each other, and so do our two layouts
    torch.testing.assert_close(expected_rows, expected, **TOL)
    torch.testing.assert_close(loss_rows, loss, **TOL)
    if masks.any():
        torch.testing.assert_close(rows.grad, mine.grad[masks], **TOL)  # type: ignore[index]


def test_forward_masked_with_padding_and_explicit_weights_is_the_same_loss() -> None:
    # DINOv2's step: rows padded to an upper bound, n_masked_patches and masks_weight given
    student, teacher, masks, center = _problem(seed=3)
    targets = _reference_targets(teacher, masks, center, 0.07, "center")
    m = int(masks.sum())
    padded = torch.cat([student[masks], torch.zeros(5, 7, dtype=F64)])
    weights = (1 / masks.sum(-1).clamp(min=1).to(F64))[:, None].expand_as(masks)[masks]
    padded_targets = torch.cat([targets[masks], torch.zeros(5, 7, dtype=F64)])
    expected = ibot_forward_masked(padded, padded_targets, masks, 0.1, m, weights)
    torch.testing.assert_close(
        ibot_patch_loss(padded[:m], teacher[masks], masks, center=center), expected, **TOL
    )


# ------------------------------------------------------------------------------- properties
@pytest.mark.parametrize("mode", ["center", "sinkhorn"])
@given(problem=ibot_problems(), seed=SEEDS)
def test_unmasked_patches_change_nothing(mode: str, problem: Problem, seed: int) -> None:
    student, teacher, masks, center, t_s, t_t = problem
    gen = torch.Generator().manual_seed(seed)
    noise = 10 * torch.randn(2, *student.shape, generator=gen, dtype=F64)
    keep = masks[..., None]
    student_b = torch.where(keep, student, noise[0])
    teacher_b = torch.where(keep, teacher, noise[1])
    kwargs: dict[str, Any] = {
        "center": center if mode == "center" else None,
        "centering": mode,
        "student_temperature": t_s,
        "teacher_temperature": t_t,
    }
    a, b = _leaf(student), _leaf(student_b)
    loss_a = ibot_patch_loss(a, teacher, masks, **kwargs)
    loss_b = ibot_patch_loss(b, teacher_b, masks, **kwargs)
    loss_a.backward()
    loss_b.backward()
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-12, atol=1e-12)
    assert a.grad is not None and bool((a.grad[~masks] == 0).all())  # exactly no gradient


@given(problem=ibot_problems())
def test_an_image_without_masked_patches_counts_zero_and_divides_by_one(problem: Problem) -> None:
    student, teacher, masks, center, t_s, t_t = problem
    kwargs: dict[str, Any] = {"student_temperature": t_s, "teacher_temperature": t_t}
    per_image = torch.stack(
        [
            ibot_patch_loss(student[i : i + 1], teacher[i : i + 1], masks[i : i + 1],
                            center=center, **kwargs)
            for i in range(len(masks))
        ]
    )  # fmt: skip
    assert bool((per_image[~masks.any(dim=1)] == 0).all())
    torch.testing.assert_close(
        ibot_patch_loss(student, teacher, masks, center=center, **kwargs),
        per_image.mean(),
        **TOL,
    )


@pytest.mark.parametrize("mode", ["center", "sinkhorn"])
@pytest.mark.parametrize("layout", ["patches", "rows"])
def test_no_masked_patch_at_all_gives_zero_not_nan(mode: str, layout: str) -> None:
    student, teacher, _, center = _problem()
    masks = torch.zeros(4, 6, dtype=torch.bool)
    if layout == "rows":
        student, teacher = student[masks], teacher[masks]
    leaf = _leaf(student)
    loss = ibot_patch_loss(
        leaf, teacher, masks, center=center if mode == "center" else None, centering=mode
    )
    loss.backward()
    assert loss.item() == 0.0 and bool((leaf.grad == 0).all())  # type: ignore[union-attr]


def test_sinkhorn_targets_of_the_masked_patches_sum_to_one_per_patch() -> None:
    # the gradient of the loss for one masked patch of one image is
    # (softmax(s / t_s) - q) / t_s: with s = 0, q = 1 / K - t_s * grad
    _, teacher, masks, _ = _problem(b=1, p=8, k=5, seed=4, ratio=1.0)
    student = torch.zeros_like(teacher, requires_grad=True)
    ibot_patch_loss(
        student, teacher, masks, centering="sinkhorn", student_temperature=0.5
    ).backward()
    assert student.grad is not None
    q = 1 / 5 - 0.5 * 8 * student.grad[0]  # (P, K); the image's weight is 1 / 8
    torch.testing.assert_close(q.sum(dim=1), torch.ones(8, dtype=F64), **TOL)
    torch.testing.assert_close(q, dinov2_sinkhorn_knopp_teacher(teacher[0], 0.07), **TOL)


def test_sinkhorn_is_finite_where_the_original_overflows() -> None:
    student, teacher, masks, _ = _problem(scale=10.0, dtype=torch.float32)
    original = dinov2_sinkhorn_knopp_teacher(teacher[masks], 0.07)  # exp(> 88) in float32
    assert not bool(torch.isfinite(original).all())
    loss = ibot_patch_loss(student, teacher, masks, centering="sinkhorn")
    exact = ibot_forward(
        student.double(), _reference_targets(teacher.double(), masks, teacher[0, 0], 0.07,
                                             "sinkhorn"), masks,
    )  # fmt: skip
    assert bool(torch.isfinite(loss))
    torch.testing.assert_close(loss.double(), exact, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------- center
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_center_update_of_patch_tokens_matches_the_original(momentum: float) -> None:
    centering = DINOCenter(7, momentum=momentum, dtype=F64)
    expected = torch.zeros(1, 7, dtype=F64)
    for step in range(3):
        _, teacher, _, _ = _problem(b=3 + step, seed=step)
        centering.update(teacher)  # (B, P, K): patches per image, then images
        expected = ibot_update_center(expected, teacher, momentum)
        torch.testing.assert_close(centering.center, expected[0], rtol=1e-12, atol=1e-12)


def test_center_update_of_patch_tokens_half_precision_and_errors() -> None:
    _, teacher, _, _ = _problem(dtype=torch.float32)
    a, b = DINOCenter(7), DINOCenter(7)
    a.update(teacher.to(torch.bfloat16))
    b.update(teacher.to(torch.bfloat16).float())
    assert a.center.dtype == torch.float32
    torch.testing.assert_close(a.center, b.center, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"teacher_scores of patch tokens \(B, P, K\) must have "
                       r"at least 1 patch, got shape \(4, 0, 7\)"):  # fmt: skip
        a.update(torch.zeros(4, 0, 7))
    with pytest.raises(ValueError, match=r"teacher_scores must be a 2-D tensor \(M, K\) or a 3-D "
                       r"tensor of patch tokens \(B, P, K\), got 4-D"):  # fmt: skip
        a.update(torch.zeros(1, 4, 2, 7))


# --------------------------------------------------------------------------------- numerics
# ----------------------------------------------------------------------------------- module
def test_module_teacher_temperature_overrides_per_call() -> None:
    # module == function, repr: tests/contracts.py (ibot_patch_loss[temperatures], [sinkhorn])
    student, teacher, masks, center = _problem()
    module = IBOTPatchLoss(student_temperature=0.2, teacher_temperature=0.05)
    torch.testing.assert_close(
        module(student, teacher, masks, center=center, teacher_temperature=0.04),
        ibot_patch_loss(student, teacher, masks, center=center, student_temperature=0.2,
                        teacher_temperature=0.04),
        rtol=0, atol=0,
    )  # fmt: skip


def test_exported() -> None:
    assert sslosses.IBOTPatchLoss is IBOTPatchLoss
    assert sslosses.functional.ibot_patch_loss is ibot_patch_loss


def test_gather_distributed_without_process_group_is_local() -> None:
    student, teacher, masks, _ = _problem()
    torch.testing.assert_close(
        ibot_patch_loss(student, teacher, masks, centering="sinkhorn", gather_distributed=True),
        ibot_patch_loss(student, teacher, masks, centering="sinkhorn"),
        rtol=0,
        atol=0,
    )


# ----------------------------------------------------------------------------------- errors
_S, _T, _M, _C = _problem()


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((_S, _T, _M.float()), {"center": _C}, TypeError,
         r"masks must have dtype torch.bool \(True where a patch is masked\), got torch.float32"),
        ((_S, _T, [[True]]), {"center": _C}, TypeError,
         r"masks must be a torch.Tensor of dtype torch.bool, got list"),
        ((_S, _T, _M[:, :5]), {"center": _C}, ValueError,
         r"masks must have shape \(B, P\) like the patch tokens \(B, P, K\), got \(4, 5\)"),
        ((_S, _T, _M.reshape(-1)), {"center": _C}, ValueError,
         r"masks must be a 2-D tensor \(B, P\), got 1-D"),
        ((_S[_M][1:], _T[_M][1:], _M), {"center": _C}, ValueError,
         r"student_scores given as masked rows \(M, K\) must have one row per masked patch, "
         r"got M=\d+ rows and masks marking \d+ patches"),
        ((_S[0, 0], _T[0, 0], _M), {"center": _C}, ValueError,
         r"student_scores must be patch tokens \(B, P, K\) or masked rows \(M, K\), got 1-D"),
        ((_S, _T[:, :5], _M), {"center": _C}, ValueError,
         r"student_scores and teacher_scores must have the same shape, got \(4, 6, 7\) and "
         r"\(4, 5, 7\)"),
        ((_S, _T.long(), _M), {"center": _C}, TypeError,
         r"teacher_scores must have a floating-point dtype, got torch.int64"),
        ((_S[:, :, :0], _T[:, :, :0], _M), {"center": _C[:0]}, ValueError,
         r"student_scores must have at least 1 output \(K, the last dim\)"),
        ((_S[:0], _T[:0], _M[:0]), {"center": _C}, ValueError,
         r"masks must have a batch size of at least 1, got 0"),
        ((_S, _T, _M), {}, ValueError,
         r"center is required with centering='center' \(e.g. DINOCenter.center"),
        ((_S, _T, _M), {"center": _C, "centering": "sinkhorn"}, ValueError,
         r"center must be None with centering='sinkhorn'"),
        ((_S, _T, _M), {"centering": "sinkhorn_knopp"}, ValueError,
         r"centering must be one of 'center', 'sinkhorn', got 'sinkhorn_knopp'"),
        ((_S, _T, _M), {"centering": "sinkhorn", "sinkhorn_iterations": 0}, ValueError,
         r"sinkhorn_iterations must be an int > 0, got 0"),
        ((_S, _T, _M), {"center": _C[:6]}, ValueError,
         r"center must have shape \(7,\) or \(1, 7\) \(K=7 like the scores\), got \(6,\)"),
        ((_S, _T, _M), {"center": _C, "student_temperature": 0.0}, ValueError,
         r"student_temperature must be a finite number > 0, got 0.0"),
        ((_S, _T, _M), {"center": _C, "teacher_temperature": "0.07"}, TypeError,
         r"teacher_temperature must be a float, got str"),
        ((_S, _T, _M), {"center": _C, "gather_distributed": 1}, TypeError,
         r"gather_distributed must be a bool, got int"),
    ],
)  # fmt: skip
def test_errors(
    args: tuple[object, ...], kwargs: dict[str, object], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        ibot_patch_loss(*args, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"centering": "sk"}, ValueError, r"centering must be one of 'center', 'sinkhorn'"),
        ({"sinkhorn_iterations": 1.5}, TypeError, r"sinkhorn_iterations must be an int"),
        ({"teacher_temperature": -1}, ValueError, r"teacher_temperature must be a finite"),
        ({"gather_distributed": None}, TypeError, r"gather_distributed must be a bool"),
    ],
)
def test_module_validates_in_init(kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        IBOTPatchLoss(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- distributed
SIZES = {2: [3, 2], 3: [2, 1, 3]}  # unequal per-rank numbers of images
NO_MASKED = 1  # rank 1's images have no masked patch


def _global_problem(world: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    sizes = SIZES[world]
    student, teacher, masks, center = _problem(b=sum(sizes), seed=21, ratio=0.5)
    masks[sizes[0] : sizes[0] + sizes[1]] = False
    masks[0, 0] = True  # rank 0 has a masked patch
    return student, teacher, masks, center


def _rows(rank: int, sizes: list[int]) -> slice:
    return slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))


def _ibot_ranks_case(rank: int, world: int) -> dict[str, Any]:
    student, teacher, masks, center = _global_problem(world)
    rows = _rows(rank, SIZES[world])
    s, t, m = student[rows], teacher[rows], masks[rows]
    out: dict[str, Any] = {}
    for mode in ("center", "sinkhorn"):
        for layout in ("patches", "rows"):
            a, b = (s, t) if layout == "patches" else (s[m], t[m])
            leaf = _leaf(a)
            loss = ibot_patch_loss(
                leaf, b, m, center=center if mode == "center" else None, centering=mode,
                gather_distributed=True,
            )  # fmt: skip
            loss.backward()
            out[f"{mode} {layout}"] = (loss.detach(), leaf.grad)
    centering = DINOCenter(7, gather_distributed=True, dtype=F64)
    centering.update(t)  # (B_r, P, K) patch tokens
    out["center"] = centering.center
    return out


def test_distributed_equals_single_process_on_global_batch(dist_pool_w: Any) -> None:
    world = dist_pool_w.world_size
    sizes = SIZES[world]
    results = dist_pool_w.run(_ibot_ranks_case)
    student, teacher, masks, center = _global_problem(world)
    for mode in ("center", "sinkhorn"):
        for layout in ("patches", "rows"):
            a, b = (student, teacher) if layout == "patches" else (student[masks], teacher[masks])
            leaf = _leaf(a)
            expected = ibot_patch_loss(
                leaf, b, masks, center=center if mode == "center" else None, centering=mode
            )
            expected.backward()
            assert leaf.grad is not None
            name = f"{mode} {layout}"
            losses = [results[r][name][0] for r in range(world)]
            torch.testing.assert_close(torch.stack(losses).mean(), expected.detach(), **TOL)
            assert losses[NO_MASKED].item() == 0.0  # no masked patch on that rank
            offset = 0
            for r in range(world):
                grad = results[r][name][1]
                if layout == "patches":
                    want = leaf.grad[_rows(r, sizes)]
                else:
                    n_r = int(masks[_rows(r, sizes)].sum())
                    want = leaf.grad[offset : offset + n_r]
                    offset += n_r
                torch.testing.assert_close(grad / world, want, **TOL, msg=f"{name}, rank {r}")
    single = DINOCenter(7, dtype=F64)
    single.update(teacher)
    for r in range(world):
        torch.testing.assert_close(results[r]["center"], single.center, rtol=1e-12, atol=1e-12)
