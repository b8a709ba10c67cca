"""Barlow Twins and VICReg: the checks they share (``check_embedding_pair``, ``check_algorithm``,
``check_variance_batch`` in ``sslosses/_validation.py``), through every entry point.

Also what both losses do alike around them: ``"auto"`` runs the algorithm
``select_algorithm`` names, ``gather_distributed`` without a process group is local, and a
global batch of one raises on every rank. And each loss's own hyperparameter errors, as one table.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from sslosses import BarlowTwinsLoss, VICRegLoss
from sslosses.functional import barlow_twins_loss, select_algorithm, vicreg_loss, vicreg_terms

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


# ------------------------------------------------------------------------------------------
# what both losses do alike
# ------------------------------------------------------------------------------------------
LOSSES = {"barlow_twins_loss": barlow_twins_loss, "vicreg_loss": vicreg_loss}
SYMMETRIC = {"barlow_twins_loss": False, "vicreg_loss": True}  # VICReg's covariance: one view


def _pair(n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two views whose features have stds on both sides of 1 (both branches of VICReg's hinge)."""
    gen = torch.Generator().manual_seed(0)
    scale = torch.linspace(0.2, 2.5, d, dtype=torch.float64)
    z_a = scale * torch.randn(n, d, generator=gen, dtype=torch.float64) + 1
    return z_a, z_a + 0.5 * scale * torch.randn(n, d, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize(("n", "d"), [(4, 16), (16, 4)])
def test_auto_equals_the_selected_algorithm(name: str, n: int, d: int) -> None:
    loss, (z_a, z_b) = LOSSES[name], _pair(n, d)
    chosen = select_algorithm(n, d, symmetric=SYMMETRIC[name])
    assert torch.equal(loss(z_a, z_b), loss(z_a, z_b, algorithm=chosen))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_gather_distributed_without_process_group_is_local(function: Callable[..., object]) -> None:
    z_a, z_b = _pair(5, 4)
    torch.testing.assert_close(function(z_a, z_b, gather_distributed=True), function(z_a, z_b))


# beyond tests/contracts.py (whose rows use the default coefficients): N below and above D
# with heavy coefficients, every algorithm
HEAVY = {
    "barlow_twins_loss": {"lambd": 0.4},
    "vicreg_loss": {"sim_coeff": 2.0, "std_coeff": 3.0, "cov_coeff": 0.7},
}


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("algorithm", ["dense", "gram", "fused"])
@pytest.mark.parametrize(("n", "d"), [(4, 6), (6, 3)])
def test_gradcheck_for_n_below_and_above_d(name: str, algorithm: str, n: int, d: int) -> None:
    z_a, z_b = (z.requires_grad_(True) for z in _pair(n, d))
    loss, options = LOSSES[name], HEAVY[name]
    assert torch.autograd.gradcheck(
        lambda a, b: loss(a, b, algorithm=algorithm, **options), (z_a, z_b)
    )


def _dist_too_small_case(rank: int, world: int, name: str) -> str:
    z = torch.randn(1 if rank == 0 else 0, 3, dtype=torch.float64)  # global batch of 1
    try:
        LOSSES[name](z, z, gather_distributed=True)
    except ValueError as error:
        return str(error)
    return "no error"


@pytest.mark.parametrize("name", list(LOSSES))
def test_distributed_global_batch_of_one_raises_on_every_rank(
    dist_pool_w: object, name: str
) -> None:
    messages = dist_pool_w.run(_dist_too_small_case, name)  # type: ignore[attr-defined]
    for message in messages:
        assert "global batch of at least 2 samples" in message
        assert "got 1" in message


# ------------------------------------------------------------------------------------------
# each loss's own hyperparameters (one table for both)
# ------------------------------------------------------------------------------------------
_OK = (torch.randn(4, 3), torch.randn(4, 3))
_BARLOW = (barlow_twins_loss,)
_VICREG = (vicreg_loss, vicreg_terms)


@pytest.mark.parametrize(
    ("functions", "args", "kwargs", "error", "match"),
    [
        (
            _BARLOW,
            _OK,
            {"lambd": -0.1},
            ValueError,
            r"lambd must be a finite number >= 0, got -0.1",
        ),
        (_BARLOW, _OK, {"lambd": "0.1"}, TypeError, r"lambd must be a float, got str"),
        (_BARLOW, _OK, {"eps": 0.0}, ValueError, r"eps must be a finite number > 0, got 0.0"),
        (_BARLOW, _OK, {"eps": -1e-5}, ValueError, r"eps must be a finite number > 0, got -1e-05"),
        (
            _VICREG,
            _OK,
            {"sim_coeff": -1.0},
            ValueError,
            r"sim_coeff must be a finite number >= 0, got -1.0",
        ),
        (
            _VICREG,
            _OK,
            {"std_coeff": -0.5},
            ValueError,
            r"std_coeff must be a finite number >= 0, got -0.5",
        ),
        (
            _VICREG,
            _OK,
            {"cov_coeff": -2},
            ValueError,
            r"cov_coeff must be a finite number >= 0, got -2",
        ),
        (_VICREG, _OK, {"cov_coeff": "1"}, TypeError, r"cov_coeff must be a float, got str"),
        (_VICREG, _OK, {"eps": 0.0}, ValueError, r"eps must be a finite number > 0, got 0.0"),
        (_VICREG, _OK, {"eps": -1e-4}, ValueError, r"eps must be a finite number > 0, got -0.0001"),
    ],
)
def test_own_hyperparameters_rejected(
    functions: tuple[Callable[..., object], ...],
    args: tuple[object, ...],
    kwargs: dict[str, object],
    error: type[Exception],
    match: str,
) -> None:
    for function in functions:
        with pytest.raises(error, match=match):
            function(*args, **kwargs)


@pytest.mark.parametrize(
    ("module", "kwargs", "error", "match"),
    [
        (
            BarlowTwinsLoss,
            {"lambd": -1.0},
            ValueError,
            r"lambd must be a finite number >= 0, got -1.0",
        ),
        (BarlowTwinsLoss, {"eps": 0}, ValueError, r"eps must be a finite number > 0, got 0"),
        (
            VICRegLoss,
            {"sim_coeff": -1.0},
            ValueError,
            r"sim_coeff must be a finite number >= 0, got -1.0",
        ),
        (VICRegLoss, {"eps": 0}, ValueError, r"eps must be a finite number > 0, got 0"),
    ],
)
def test_own_hyperparameters_rejected_at_construction(
    module: Callable[..., torch.nn.Module],
    kwargs: dict[str, object],
    error: type[Exception],
    match: str,
) -> None:
    with pytest.raises(error, match=match):
        module(**kwargs)
