"""Plain tensor builders and comparisons shared by the test modules (Hypothesis strategies:
``strategies.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch


def gaussian_pair(
    n: int = 6, d: int = 5, *, seed: int = 0, dtype: torch.dtype = torch.float64, grad: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two seeded standard-normal ``(n, d)`` tensors, drawn in ``dtype`` (leaves if ``grad``)."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=gen, dtype=dtype).requires_grad_(grad)
    b = torch.randn(n, d, generator=gen, dtype=dtype).requires_grad_(grad)
    return a, b


def value_and_grads(
    fn: Callable[..., torch.Tensor], *inputs: torch.Tensor, grad_of: Sequence[int] | None = None
) -> tuple[torch.Tensor, ...]:
    """``fn``'s value and the gradients of its sum, on fresh leaf copies of ``inputs``.

    Every input is copied to a new leaf that requires grad and ``fn(*leaves)`` is called; the
    result is the detached value followed by the gradients of ``out.sum()`` (for a scalar ``out``,
    those of ``out``) with respect to the leaves, in order, or only to those at the indices in
    ``grad_of``. An input that ``fn`` does not use gets a zero gradient.
    """
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    out = fn(*leaves)
    wrt = leaves if grad_of is None else [leaves[i] for i in grad_of]
    grads = torch.autograd.grad(out.sum(), wrt, allow_unused=True, materialize_grads=True)
    return (out.detach(), *grads)


def assert_all_close(
    xs: Iterable[torch.Tensor],
    ys: Iterable[torch.Tensor],
    /,
    *,
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    """``torch.testing.assert_close`` on each pair of ``xs`` and ``ys`` (of equal length).

    ``rtol`` and ``atol`` are passed through (both or neither: without them, ``assert_close``'s
    defaults for the dtype).
    """
    for x, y in zip(xs, ys, strict=True):
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol)


def assert_reductions(loss: Callable[[str], torch.Tensor], n: int) -> torch.Tensor:
    """``loss(reduction)`` keeps PyTorch's contract: ``"none"`` gives the ``(n,)`` per-sample
    losses, ``"mean"`` and ``"sum"`` 0-d tensors equal to their mean and their sum.

    Returns the per-sample losses, for checks of one loss's own.
    """
    none, mean, total = loss("none"), loss("mean"), loss("sum")
    assert none.shape == (n,)
    assert mean.shape == () and total.shape == ()
    torch.testing.assert_close(none.mean(), mean)
    torch.testing.assert_close(none.sum(), total)
    return none


def assert_ranks_match_single_process(
    ranks: Sequence[Sequence[torch.Tensor]],
    single: Sequence[torch.Tensor],
    sizes: Sequence[int],
    /,
    *,
    per_row: bool,
    msg: str,
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    """Each rank's ``(value, *grads)`` against ``single``'s, one process on the global batch.

    Rank ``r`` holds the ``sizes[r]`` rows after those of the ranks before it. Per-row values
    (``per_row``) concatenate to the global ones and each rank's gradient is its slice of the
    global gradient; reduced values average over the W ranks to the global one and each rank's
    gradient divided by W (DDP averages gradients) is its slice. ``rtol`` and ``atol`` are
    passed through.
    """
    value, *grads = single
    if per_row:
        torch.testing.assert_close(
            torch.cat([r[0] for r in ranks]), value, rtol=rtol, atol=atol, msg=msg
        )
        scale = 1
    else:
        mean = torch.stack([r[0] for r in ranks]).mean()
        torch.testing.assert_close(mean, value, rtol=rtol, atol=atol, msg=msg)
        scale = len(ranks)
    for rank, result in enumerate(ranks):
        rows = slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))
        for got, want in zip(result[1:], grads, strict=True):
            torch.testing.assert_close(
                got / scale, want[rows], rtol=rtol, atol=atol, msg=f"{msg}, rank {rank}"
            )


def penalty_gradient(
    fn: Callable[..., torch.Tensor], a: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """The gradient w.r.t. ``a`` of a gradient penalty ``|d fn(a, b) / d a|^2``: a double
    backward through ``fn`` (``b`` held fixed)."""
    leaf = a.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(leaf, b), [leaf], create_graph=True)
    (second,) = torch.autograd.grad(grad.square().sum(), [leaf])
    return second
