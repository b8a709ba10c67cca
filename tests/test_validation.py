"""Cross-cutting input validation shared by the losses (``sslosses._validation``)."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("loss", ["nt_xent", "info_nce"])
def test_contrastive_losses_reject_zero_features(loss: str) -> None:
    import sslosses.functional as SF

    fn = getattr(SF, loss)
    first = "z_a" if loss == "nt_xent" else "query"
    with pytest.raises(ValueError, match=rf"{first} must have at least 1 feature\(s\)"):
        fn(torch.randn(4, 0), torch.randn(4, 0))


def test_hyperparameters_accept_numpy_scalars() -> None:
    import numpy as np

    import sslosses

    assert sslosses.NTXentLoss(temperature=np.float32(0.5)).temperature == 0.5  # type: ignore[arg-type]


def test_positive_int_accepts_numpy_integers_as_python_ints() -> None:
    import numpy as np

    from sslosses._validation import check_positive_int

    value = check_positive_int("chunk_size", np.int64(4))
    assert value == 4 and type(value) is int
    with pytest.raises(TypeError, match="chunk_size must be an int, got float64"):
        check_positive_int("chunk_size", np.float64(4.0))
    with pytest.raises(ValueError, match="chunk_size must be an int > 0, got 0"):
        check_positive_int("chunk_size", np.int32(0))


# --------------------------------------------------------------------------------------------
# One set of numeric checks (issue 11 item 1, issue 10 item 10)
# --------------------------------------------------------------------------------------------
def test_check_int_takes_any_integral_but_bool_and_ranges_as_arguments() -> None:
    import numpy as np

    from sslosses._validation import check_int

    for value in (3, np.int64(3), np.uint8(3), np.int32(3)):
        out = check_int("n", value)
        assert out == 3 and type(out) is int
    assert check_int("n", -7) == -7  # no range: any integer
    assert check_int("n", 0, low=0) == 0
    with pytest.raises(ValueError, match=r"n must be an int >= 0, got -1"):
        check_int("n", np.int64(-1), low=0)
    with pytest.raises(ValueError, match=r"n must be an int > 0, got 0"):
        check_int("n", 0, low=0, low_open=True)
    with pytest.raises(ValueError, match=r"n must be an int >= 2, got 1"):
        check_int("n", 1, low=2)
    for bad in (True, np.bool_(True), 2.0, np.float32(2.0), "2", None):
        with pytest.raises(TypeError, match=rf"n must be an int, got {type(bad).__name__}"):
            check_int("n", bad)


def test_check_real_takes_finite_reals_and_ranges_as_arguments() -> None:
    import fractions
    import math

    import numpy as np

    from sslosses._validation import check_real

    for value in (0.5, np.float32(0.5), np.float64(0.5), fractions.Fraction(1, 2)):
        out = check_real("x", value)
        assert out == 0.5 and type(out) is float
    assert check_real("x", np.int64(2)) == 2.0
    assert check_real("x", -1e300) == -1e300  # no range: any finite number
    for bad in (math.nan, math.inf, -math.inf, np.float32("nan")):
        with pytest.raises(ValueError, match=r"x must be a finite number, got"):
            check_real("x", bad)
    with pytest.raises(ValueError, match=r"x must be a finite number > 0, got 0"):
        check_real("x", 0, low=0, low_open=True)
    with pytest.raises(ValueError, match=r"x must be a finite number >= 0, got -0.5"):
        check_real("x", -0.5, low=0)
    with pytest.raises(ValueError, match=r"x must be a finite number >= 0, got nan"):
        check_real("x", math.nan, low=0)
    with pytest.raises(ValueError, match=r"x must be in \[0, 1\], got 1.5"):
        check_real("x", 1.5, low=0, high=1)
    with pytest.raises(ValueError, match=r"x must be in \(0, 1\], got 0.0"):
        check_real("x", 0.0, low=0, high=1, low_open=True)
    with pytest.raises(ValueError, match=r"x must be a finite number, got inf"):
        check_real("x", math.inf, low=0, high=1)
    assert check_real("x", 1, low=0, high=1) == 1.0
    for bad in (True, "0.5", None, 1j, torch.tensor(0.5)):
        with pytest.raises(TypeError, match=rf"x must be a float, got {type(bad).__name__}"):
            check_real("x", bad)


def test_check_choice_returns_the_choice_itself() -> None:
    from sslosses._validation import check_choice, check_reduction

    choices = ("auto", "dense")
    name = "".join(["den", "se"])  # an equal string that is not the literal object
    assert check_choice("algorithm", name, choices) is choices[1]
    assert check_reduction("sum") == "sum"
    with pytest.raises(ValueError, match=r"algorithm must be one of 'auto', 'dense', got 'x'"):
        check_choice("algorithm", "x", choices)
    with pytest.raises(ValueError, match=r"algorithm must be one of 'auto', 'dense', got 1"):
        check_choice("algorithm", 1, choices)


def test_check_embedding_pair_validates_and_returns_the_compute_dtype() -> None:
    from sslosses._validation import check_embedding_pair

    a32, a64 = torch.randn(3, 2), torch.randn(3, 2, dtype=torch.float64)
    half = torch.randn(3, 2, dtype=torch.float16)
    assert check_embedding_pair("p", a32, "t", a32) == torch.float32
    assert check_embedding_pair("p", half, "t", half.bfloat16()) == torch.float32
    assert check_embedding_pair("p", a32, "t", a64) == torch.float64
    with pytest.raises(TypeError, match=r"t must be a torch.Tensor, got list"):
        check_embedding_pair("p", a32, "t", [1.0])
    with pytest.raises(ValueError, match=r"p must be a 2-D tensor, got 1-D"):
        check_embedding_pair("p", a32[0], "t", a32[0])
    with pytest.raises(ValueError, match=r"p and t must have the same shape, got \(3, 2\)"):
        check_embedding_pair("p", a32, "t", a32[:2])
    with pytest.raises(ValueError, match=r"p must have a batch size of at least 2, got 1"):
        check_embedding_pair("p", a32[:1], "t", a32[:1], min_batch=2)
    with pytest.raises(ValueError, match=r"p must have at least 1 feature\(s\)"):
        check_embedding_pair("p", a32[:, :0], "t", a32[:, :0])


# Every integer / real option takes NumPy scalars (issue 10 item 10): each call returns the
# same value as with the Python number.
def _numpy_cases() -> list[tuple[str, object, object]]:
    import numpy as np

    return [
        ("cosine_schedule step", (np.int64(5), 10, 0.9, 1.0), (5, 10, 0.9, 1.0)),
        ("cosine_schedule total_steps", (5, np.int32(10), 0.9, 1.0), (5, 10, 0.9, 1.0)),
        ("cosine_schedule start/end", (5, 10, np.float32(0.5), np.float64(1.0)), (5, 10, 0.5, 1.0)),
    ]


@pytest.mark.parametrize(("case", "numpy_args", "python_args"), _numpy_cases())
def test_cosine_schedule_accepts_numpy_scalars(
    case: str, numpy_args: tuple[object, ...], python_args: tuple[object, ...]
) -> None:
    from sslosses import cosine_schedule

    assert cosine_schedule(*numpy_args) == cosine_schedule(*python_args)  # type: ignore[arg-type]


def test_ema_accepts_numpy_momentum() -> None:
    import numpy as np
    from torch import nn

    from sslosses import EMA
    from sslosses.functional import ema_update_

    ema = EMA(nn.Linear(2, 2), momentum=np.float32(0.5), final_momentum=np.float64(1.0))
    assert ema.momentum == 0.5 and type(ema.base_momentum) is float
    target, online = [torch.zeros(3)], [torch.ones(3)]
    ema_update_(target=target, online=online, momentum=np.float32(0.75))
    torch.testing.assert_close(target[0], torch.full((3,), 0.25))


def test_swav_components_accept_numpy_integers() -> None:
    import numpy as np

    from sslosses import SwAVPrototypes
    from sslosses.functional import swav_loss

    scores = [torch.randn(4, 3, dtype=torch.float64) for _ in range(3)]
    expected = swav_loss(scores, assign_crops=(0, 2))
    got = swav_loss(scores, assign_crops=(np.int64(0), np.int32(2)))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    prototypes = SwAVPrototypes(4, 3, freeze_steps=np.int64(2))
    assert prototypes.freeze_steps == 2 and type(prototypes.freeze_steps) is int
    prototypes.weight.grad = torch.ones_like(prototypes.weight)
    assert prototypes.cancel_gradients_(np.int64(1)) is True
    assert prototypes.weight.grad is None
    prototypes.weight.grad = torch.ones_like(prototypes.weight)
    assert prototypes.cancel_gradients_(np.int64(2)) is False
    assert prototypes.weight.grad is not None


def test_transforms_accept_numpy_scalars() -> None:
    import numpy as np

    from sslosses.transforms import Augmentation, RandomResizedCrop, swav_transform
    from sslosses.transforms import functional as TF

    multicrop = swav_transform(8, 4, local_count=np.int64(2))
    assert multicrop.crop_counts == (2, 2)
    crop = RandomResizedCrop(4, scale=(np.float32(0.25), 1.0), flip_prob=np.float64(0.5))
    assert crop.scale == (0.25, 1.0)
    g = torch.Generator().manual_seed(0)
    params = crop.sample_params(np.int64(2), np.int64(8), 8, count=np.int32(3), generator=g)
    assert params.boxes.shape == (3, 2, 4)
    boxes = TF.sample_crop_boxes(np.int64(5), 8, 8, generator=torch.Generator().manual_seed(1))
    assert boxes.shape == (5, 4)
    aug = Augmentation(
        blur_prob=np.float32(0.5),
        blur_sigma=(np.float64(0.1), 2.0),
        blur_kernel_size=np.int64(3),
    )
    assert aug.blur_prob == 0.5 and aug.blur_sigma == (0.1, 2.0)
    assert aug.blur_kernel_size == 3 and type(aug.blur_kernel_size) is int
    assert aug.sample_params(np.int64(3)).jitter.shape == (3,)
    assert TF.normalize(torch.ones(1, 1, 1), [np.float32(0.5)], [np.float32(0.25)]).item() == 2.0


def test_transform_counts_of_the_wrong_type_raise_type_error() -> None:
    from sslosses.transforms import Augmentation, RandomResizedCrop
    from sslosses.transforms import functional as TF

    with pytest.raises(TypeError, match=r"n must be an int, got float"):
        TF.sample_crop_boxes(2.0, 8, 8)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"n must be an int, got bool"):
        RandomResizedCrop(4).sample_params(True, 8, 8)
    with pytest.raises(TypeError, match=r"n must be an int, got str"):
        Augmentation().sample_params("3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"n must be an int >= 0, got -2"):
        Augmentation().sample_params(-2)


def test_non_finite_ranges_raise_value_error_naming_the_argument() -> None:
    import math

    from sslosses.transforms import Augmentation, RandomResizedCrop
    from sslosses.transforms import functional as TF

    with pytest.raises(ValueError, match=r"scale\[0\] must be a finite number, got nan"):
        RandomResizedCrop(4, scale=(math.nan, 1.0))
    with pytest.raises(ValueError, match=r"blur_sigma\[1\] must be a finite number, got inf"):
        Augmentation(blur_sigma=(0.1, math.inf))
    with pytest.raises(ValueError, match=r"mean\[1\] must be a finite number, got nan"):
        TF.normalize(torch.ones(2, 1, 1), [0.0, math.nan], [1.0, 1.0])
    with pytest.raises(TypeError, match=r"std\[0\] must be a float, got str"):
        TF.normalize(torch.ones(1, 1, 1), [0.0], ["1"])  # type: ignore[list-item]


def test_dino_center_momentum_follows_the_number_rule() -> None:
    import numpy as np

    from sslosses import DINOCenter

    assert DINOCenter(4, momentum=np.float32(0.5)).momentum == 0.5  # rejected before
    assert type(DINOCenter(4, momentum=np.float64(0.25)).momentum) is float
    with pytest.raises(TypeError, match="momentum must be a float, got bool"):
        DINOCenter(4, momentum=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"momentum must be a finite number, got nan"):
        DINOCenter(4, momentum=float("nan"))
