"""Shared argument validation (private).

Every public function and module validates its arguments through these helpers, so that the
functional and module paths cannot drift apart and every error names the argument, what was
expected and what came. One rule for numbers: an integer is any ``numbers.Integral`` but
``bool`` (NumPy integers included), a real any finite ``numbers.Real`` (NumPy floats included);
a wrong type raises ``TypeError``, a wrong value ``ValueError``. Image checks and the choice of
the device random numbers are drawn on are in :mod:`sslosses.transforms._checks`; the dtype
policy and the reductions are in :mod:`sslosses._numerics`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import TypeGuard, TypeVar, get_args

import torch
from torch import Tensor

from sslosses._numerics import compute_dtype
from sslosses.typing import Algorithm, ChunkSize, Reduction

_REDUCTIONS: tuple[Reduction, ...] = get_args(Reduction)


def check_tensor(name: str, value: object, ndim: int | None = None) -> Tensor:
    """Check that ``value`` is a floating-point tensor (of rank ``ndim`` when given)."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {value.dtype}")
    if ndim is not None and value.dim() != ndim:
        raise ValueError(
            f"{name} must be a {ndim}-D tensor, got {value.dim()}-D with shape {tuple(value.shape)}"
        )
    return value


def check_same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Check that two tensors have identical shapes."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def check_same_device(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Check that two tensors live on the same device."""
    if a.device != b.device:
        raise ValueError(
            f"{name_a} and {name_b} must be on the same device, got {a.device} and {b.device}"
        )


def check_min_batch(name: str, tensor: Tensor, minimum: int) -> None:
    """Check that ``tensor`` has at least ``minimum`` rows."""
    if tensor.shape[0] < minimum:
        raise ValueError(
            f"{name} must have a batch size of at least {minimum}, got {tensor.shape[0]}"
        )


def check_min_features(name: str, tensor: Tensor, minimum: int = 1) -> None:
    """Check that ``tensor`` has at least ``minimum`` columns (features)."""
    if tensor.shape[1] < minimum:
        raise ValueError(
            f"{name} must have at least {minimum} feature(s) (dim 1), got shape "
            f"{tuple(tensor.shape)}"
        )


def _bounds(low: float | None, high: float | None, low_open: bool) -> str:
    """A range as text: ``"> 0"``, ``">= 0"``, ``"<= 1"``, ``"in [0, 1]"`` or ``""`` (none)."""

    def text(bound: float) -> str:
        return f"{bound:g}" if isinstance(bound, float) else str(bound)

    if low is None:
        return "" if high is None else f"<= {text(high)}"
    if high is None:
        return f"{'>' if low_open else '>='} {text(low)}"
    return f"in {'(' if low_open else '['}{text(low)}, {text(high)}]"


def _in_bounds(number: float, low: float | None, high: float | None, low_open: bool) -> bool:
    """Whether ``low <= number <= high`` (``low < number`` with ``low_open``); False for NaN."""
    if low is not None and not (number > low or (number == low and not low_open)):
        return False
    return high is None or number <= high


def is_integer(value: object) -> TypeGuard[numbers.Integral]:
    """The rule for integer arguments: any ``numbers.Integral`` (NumPy's too) but ``bool``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: object) -> TypeGuard[numbers.Real]:
    """The type rule for real arguments: any ``numbers.Real`` (NumPy's too) but ``bool``."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(name: str, value: object, *, low: int | None = None, low_open: bool = False) -> int:
    """Check that ``value`` is an integer (any ``numbers.Integral`` but ``bool``) in range.

    The range is ``value >= low`` (``> low`` with ``low_open``); none when ``low`` is ``None``.
    Returns a Python ``int`` (e.g. for a NumPy integer).

    Raises:
        TypeError: if ``value`` is not an integer (``bool`` and floats included).
        ValueError: if ``value`` is out of range.
    """
    if not is_integer(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    number = int(value)
    if not _in_bounds(number, low, None, low_open):
        raise ValueError(f"{name} must be an int {_bounds(low, None, low_open)}, got {value}")
    return number


def check_positive_int(name: str, value: object) -> int:
    """Check that ``value`` is an integer > 0 (see :func:`check_int`); returns an ``int``."""
    return check_int(name, value, low=0, low_open=True)


def check_non_negative_int(name: str, value: object) -> int:
    """Check that ``value`` is an integer >= 0 (see :func:`check_int`); returns an ``int``."""
    return check_int(name, value, low=0)


def check_real(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """Check that ``value`` is a finite real number (any ``numbers.Real`` but ``bool``) in range.

    The range is ``low <= value <= high`` (``low < value`` with ``low_open``); a bound that is
    ``None`` is absent. Returns a Python ``float`` (e.g. for a NumPy scalar). The messages
    read ``"must be a finite number >= 0"`` for a half-line (non-finite values included), and
    ``"must be a finite number"`` / ``"must be in [low, high]"`` for an interval.

    Raises:
        TypeError: if ``value`` is not a real number (``bool``, strings and tensors included).
        ValueError: if ``value`` is not finite or out of range.
    """
    if not is_real(value):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    number = float(value)
    # Not math.isfinite: when a loss runs under torch.compile and a hyperparameter changes
    # between calls (a temperature schedule), Dynamo traces the float as a SymFloat, which
    # math.isfinite cannot take but comparisons can (nan and +-inf fail both).
    finite = -math.inf < number < math.inf
    if low is None or high is None:  # "a finite number", "a finite number >= 0"
        if not (finite and _in_bounds(number, low, high, low_open)):
            expected = " ".join(filter(None, ("a finite number", _bounds(low, high, low_open))))
            raise ValueError(f"{name} must be {expected}, got {value}")
        return number
    if not finite:
        raise ValueError(f"{name} must be a finite number, got {value}")
    if not _in_bounds(number, low, high, low_open):
        raise ValueError(f"{name} must be {_bounds(low, high, low_open)}, got {value}")
    return number


def check_positive(name: str, value: object) -> float:
    """Check that ``value`` is a finite real number > 0 and return it as ``float``."""
    return check_real(name, value, low=0, low_open=True)


def check_non_negative(name: str, value: object) -> float:
    """Check that ``value`` is a finite real number >= 0 and return it as ``float``."""
    return check_real(name, value, low=0)


def check_probability(name: str, value: object) -> float:
    """Check that ``value`` is a real number in ``[0, 1]`` and return it as ``float``."""
    number = check_real(name, value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    return number


def check_range(
    name: str, value: object, *, low: float = 0.0, high: float | None = None, low_open: bool
) -> tuple[float, float]:
    """Check a range ``(min, max)`` of finite reals with ``min <= max``, both within bounds.

    The bounds are ``low <= min`` (``low < min`` with ``low_open``) and ``max <= high``.
    """
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a pair (min, max) of floats, got {value!r}")
    lo, hi = (check_real(f"{name}[{i}]", v) for i, v in enumerate(value))
    if lo > hi:
        raise ValueError(f"{name} must have min <= max, got {value!r}")
    if not _in_bounds(lo, low, None, low_open) or not _in_bounds(hi, None, high, False):
        relation = "<" if low_open else "<="
        upper = "" if high is None else f" <= {high:g}"
        raise ValueError(f"{name} must satisfy {low:g} {relation} min <= max{upper}, got {value!r}")
    return lo, hi


def check_reals(name: str, value: object, *, positive: bool = False) -> tuple[float, ...]:
    """Check a non-empty sequence of finite reals (each ``> 0`` with ``positive``)."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) == 0:
        raise TypeError(f"{name} must be a non-empty sequence of floats, got {value!r}")
    out = tuple(check_real(f"{name}[{i}]", v) for i, v in enumerate(value))
    for i, v in enumerate(out):
        if positive and v <= 0:
            raise ValueError(f"{name}[{i}] must be > 0, got {v}")
    return out


def check_size(name: str, value: object) -> tuple[int, int]:
    """Check an image size: an integer ``s > 0`` (for ``s x s``) or a pair ``(height, width)``."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (height, width), got {value!r}")
        return check_positive_int(f"{name}[0]", value[0]), check_positive_int(
            f"{name}[1]", value[1]
        )
    size = check_positive_int(name, value)
    return size, size


def check_sequence(name: str, value: object) -> Sequence[object]:
    """Check a non-empty list or tuple (of anything: the caller checks the items)."""
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{name} must be a list or tuple, got {type(value).__name__}")
    if len(value) == 0:
        raise ValueError(f"{name} must not be empty")
    return value


def check_generator(value: object) -> torch.Generator | None:
    """Check that ``value`` is a :class:`torch.Generator` or ``None``."""
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(value).__name__}")
    return value


def check_bool(name: str, value: object) -> bool:
    """Check that ``value`` is a ``bool``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


_Choice = TypeVar("_Choice", bound=str)


def check_choice(name: str, value: object, choices: Sequence[_Choice]) -> _Choice:
    """Check that ``value`` is one of ``choices`` and return that choice.

    Typed by the choices: with ``choices: tuple[Reduction, ...]`` the result is a ``Reduction``.
    """
    if isinstance(value, str):
        for choice in choices:
            if value == choice:
                return choice
    expected = ", ".join(repr(c) for c in choices)
    raise ValueError(f"{name} must be one of {expected}, got {value!r}")


def check_reduction(reduction: object) -> Reduction:
    """Check a ``reduction`` argument against PyTorch's contract."""
    return check_choice("reduction", reduction, _REDUCTIONS)


def check_embedding_pair(
    name_a: str, a: object, name_b: str, b: object, *, min_batch: int = 1
) -> torch.dtype:
    """Check two embedding batches and return the dtype the loss computes in.

    Both must be floating-point ``(N, D)`` tensors of the same shape on the same device, with
    ``N >= min_batch`` and ``D >= 1``. The compute dtype is :func:`compute_dtype`'s: float64
    if either is float64, else float32 (half precision is computed in float32).
    """
    ta = check_tensor(name_a, a, ndim=2)
    tb = check_tensor(name_b, b, ndim=2)
    check_same_shape(name_a, ta, name_b, tb)
    check_same_device(name_a, ta, name_b, tb)
    check_min_batch(name_a, ta, min_batch)
    check_min_features(name_a, ta, 1)
    return compute_dtype(ta, tb)


def check_crops(
    name: str, scores: object, *, minimum: int, rows: int = 1, column: str = "score (column)"
) -> list[Tensor]:
    """Check a multi-crop argument: a list or tuple of at least ``minimum`` crops ``(N, K)``.

    Every crop is a floating-point 2-d tensor of the first crop's shape on its device, with at
    least ``rows`` rows (0 allowed where a rank may be empty) and one column (``column`` names
    it in the error: a prototype, an output dimension). Returns the crops as a list.
    """
    if not isinstance(scores, (list, tuple)):
        raise TypeError(
            f"{name} must be a list or tuple of tensors (N, K), got {type(scores).__name__}"
        )
    if len(scores) < minimum:
        raise ValueError(f"{name} must hold at least {minimum} crop(s), got {len(scores)}")
    crops = [check_tensor(f"{name}[{v}]", s, ndim=2) for v, s in enumerate(scores)]
    check_min_batch(f"{name}[0]", crops[0], rows)
    if crops[0].shape[1] < 1:
        raise ValueError(
            f"{name}[0] must have at least 1 {column}, got shape {tuple(crops[0].shape)}"
        )
    for v, s in enumerate(crops[1:], start=1):
        if s.shape != crops[0].shape:
            raise ValueError(
                f"all crops of {name} must have the same shape (N, K), got {name}[0] with "
                f"shape {tuple(crops[0].shape)} and {name}[{v}] with shape {tuple(s.shape)}"
            )
        check_same_device(f"{name}[0]", crops[0], f"{name}[{v}]", s)
    return crops


def check_algorithm(algorithm: object) -> Algorithm:
    """Check the ``algorithm`` of Barlow Twins and VICReg: ``"auto"``, ``"dense"``, ``"gram"``
    or ``"fused"`` (case-sensitive)."""
    return check_choice("algorithm", algorithm, get_args(Algorithm))


def check_variance_batch(n: int, *, sharded: bool, variance: str) -> None:
    """Check that the views' (global, when ``sharded``) batch has the 2 rows ``variance`` needs.

    Barlow Twins and VICReg check this after their gather, so an empty rank is allowed and
    every rank raises together when the global batch is too small.
    """
    if n < 2:
        scope = "global batch" if sharded else "batch"
        raise ValueError(
            f"z_a and z_b need a {scope} of at least 2 samples (the {variance} is undefined "
            f"for fewer), got {n}"
        )


def check_chunk_size(chunk_size: object) -> ChunkSize:
    """Check a ``chunk_size`` argument: ``None``, ``"auto"`` or an integer > 0."""
    if chunk_size is None:
        return None
    if isinstance(chunk_size, str):
        if chunk_size == "auto":
            return "auto"
        raise ValueError(f"chunk_size must be an int > 0, 'auto' or None, got {chunk_size!r}")
    return check_positive_int("chunk_size", chunk_size)
