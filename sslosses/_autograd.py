"""Helpers for the custom autograd Functions behind the fast paths (private)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

import torch
from torch import Tensor

from sslosses._validation import check_non_negative_int

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


class FrozenAtFirst:
    """Mixin: ``cancel_gradients_(step)`` for a module with parameters fixed for the first steps.

    The one home of that method (SwAV's prototypes, DINO's last layer): the module sets
    ``freeze_steps`` and names the parameters in ``_frozen_at_first``.
    """

    freeze_steps: int

    def _frozen_at_first(self) -> Iterable[Tensor]:  # pragma: no cover - always overridden
        raise NotImplementedError

    def cancel_gradients_(self, step: int) -> bool:
        """Drop the gradients of the parameters fixed at first (set them to ``None``) while
        ``step < freeze_steps``.

        Those are the last layer of :class:`~sslosses.DINOHead` and the ``weight`` of
        :class:`~sslosses.SwAVPrototypes`. Call it after ``loss.backward()`` and before
        ``optimizer.step()``, with the global 0-based iteration.

        Args:
            step: the current training iteration, ``>= 0``.

        Returns:
            Whether the gradients were dropped.

        Raises:
            TypeError: if ``step`` is not an ``int``.
            ValueError: if ``step < 0``.
        """
        step = check_non_negative_int("step", step)
        if step >= self.freeze_steps:
            return False
        for p in self._frozen_at_first():
            p.grad = None
        return True
