"""Helpers for the custom autograd Functions behind the fast paths (private)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

import torch
from torch import Tensor

_Backward = TypeVar("_Backward", bound=Callable[..., Any])


def apply_function(function: type[torch.autograd.Function], *args: object) -> Tensor:
    """Run ``function.apply(*args)`` and return its tensor.

    ``Function.apply`` is untyped in some torch releases and typed in others, so a direct call
    needs a ``type: ignore`` on one release that is an error ("unused ignore") on the next. This
    is the one place that calls it, through ``Any``, so type-checking does not depend on the
    installed torch's stubs.
    """
    untyped: Any = function
    return cast(Tensor, untyped.apply(*args))


def first_order_only(what: str, instead: str) -> Callable[[_Backward], _Backward]:
    """Decorate a ``backward`` that cannot itself be differentiated.

    PyTorch's ``once_differentiable`` raises on a second backward only when the incoming
    gradient requires grad; for a loss (whose incoming gradient is a constant) it silently
    treats the returned gradient as a constant under ``create_graph=True``, which makes
    gradient penalties wrong. This decorator raises instead, naming ``what`` and the
    alternative ``instead``, and otherwise runs ``backward`` without recording a graph.
    """

    def decorate(backward: _Backward) -> _Backward:
        @functools.wraps(backward)
        def wrapper(ctx: Any, *grads: Any) -> Any:
            if torch.is_grad_enabled():  # the engine enables grad mode only for create_graph
                raise RuntimeError(
                    f"{what} has no double backward (create_graph=True, e.g. a gradient "
                    f"penalty); use {instead}"
                )
            return backward(ctx, *grads)

        return wrapper  # type: ignore[return-value]

    return decorate


def drop_gradients_while_frozen(step: int, freeze_steps: int, params: Iterable[Tensor]) -> bool:
    """Set the ``.grad`` of ``params`` to ``None`` if ``step < freeze_steps``; whether it did.

    The one rule behind ``cancel_gradients_`` of the layers frozen for the first steps
    (SwAV's prototypes, DINO's last layer); ``step`` is validated by the caller.
    """
    if step >= freeze_steps:
        return False
    for p in params:
        p.grad = None
    return True
