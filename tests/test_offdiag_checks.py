"""Barlow Twins and VICReg: the checks they share (``check_embedding_pair``, ``check_algorithm``,
``check_variance_batch`` in ``sslosses/_validation.py``), through every entry point.

The checks of each loss's own hyperparameters stay in ``test_barlow_twins.py`` and
``test_vicreg.py``; the distributed global-batch checks too (they need the process pools).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from sslosses import BarlowTwinsLoss, VICRegLoss
from sslosses.functional import barlow_twins_loss, vicreg_loss, vicreg_terms

FUNCTIONS = [
    pytest.param(barlow_twins_loss, id="barlow_twins_loss"),
    pytest.param(vicreg_loss, id="vicreg_loss"),
    pytest.param(vicreg_terms, id="vicreg_terms"),
]


SHAPES = r"z_a and z_b must have the same shape, got "
FEATURES = r"z_a must have at least 1 feature\(s\) \(dim 1\), got shape "
LONG, BOOL = torch.ones(4, 3, dtype=torch.long), torch.ones(4, 3, dtype=torch.bool)
BAD_VIEWS = [  # (z_a, z_b, error, message)
    (
        torch.randn(4),
        torch.randn(4),
        ValueError,
        r"z_a must be a 2-D tensor, got 1-D with shape \(4,\)",
    ),
    (torch.randn(4, 3), torch.randn(4, 2), ValueError, SHAPES + r"\(4, 3\) and \(4, 2\)"),
    (torch.randn(4, 3), torch.randn(5, 3), ValueError, SHAPES + r"\(4, 3\) and \(5, 3\)"),
    (LONG, torch.randn(4, 3), TypeError, r"z_a must have a floating-point dtype, got torch.int64"),
    (torch.randn(4, 3), BOOL, TypeError, r"z_b must have a floating-point dtype, got torch.bool"),
    ([[1.0, 2.0]], torch.randn(1, 2), TypeError, r"z_a must be a torch.Tensor, got list"),
    (torch.randn(4, 0), torch.randn(4, 0), ValueError, FEATURES + r"\(4, 0\)"),
    (
        torch.randn(4, 3),
        torch.randn(4, 3, device="meta"),
        ValueError,
        r"z_a and z_b must be on the same device, got cpu and meta",
    ),
]


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize(("z_a", "z_b", "error", "match"), BAD_VIEWS)
def test_bad_views(
    function: Callable[..., object], z_a: object, z_b: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        function(z_a, z_b)


OPTIONS = [
    pytest.param(
        {"algorithm": "sparse"},
        ValueError,
        r"algorithm must be one of 'auto', 'dense', 'gram', 'fused', got 'sparse'",
        id="algorithm",
    ),
    pytest.param(
        {"algorithm": "Dense"},
        ValueError,
        r"algorithm must be one of .* got 'Dense'",
        id="algorithm is case-sensitive",
    ),
    pytest.param(
        {"gather_distributed": 1},
        TypeError,
        r"gather_distributed must be a bool, got int",
        id="gather_distributed",
    ),
]


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize(("kwargs", "error", "match"), OPTIONS)
def test_bad_options(
    function: Callable[..., object], kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        function(torch.randn(4, 3), torch.randn(4, 3), **kwargs)


@pytest.mark.parametrize(
    ("function", "variance"),
    [
        pytest.param(barlow_twins_loss, "batch variance", id="barlow_twins_loss"),
        pytest.param(vicreg_loss, "unbiased variance", id="vicreg_loss"),
        pytest.param(vicreg_terms, "unbiased variance", id="vicreg_terms"),
    ],
)
def test_batch_of_one_raises(function: Callable[..., object], variance: str) -> None:
    match = rf"z_a and z_b need a batch of at least 2 samples \(the {variance} is undefined "
    with pytest.raises(ValueError, match=match + r"for fewer\), got 1"):
        function(torch.randn(1, 3), torch.randn(1, 3))


@pytest.mark.parametrize("module", [BarlowTwinsLoss, VICRegLoss])
@pytest.mark.parametrize(("kwargs", "error", "match"), OPTIONS)
def test_modules_check_options_at_construction(
    module: Callable[..., object], kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        module(**kwargs)


@pytest.mark.parametrize("module", [BarlowTwinsLoss, VICRegLoss])
def test_modules_keep_the_checked_options(module: Callable[..., torch.nn.Module]) -> None:
    criterion = module(gather_distributed=True, algorithm="gram")
    assert criterion.gather_distributed is True
    assert criterion.algorithm == "gram"
