"""Autograd-aware collectives for opt-in distributed losses, and their shared plumbing.

Every function here falls back to single-process behaviour when :mod:`torch.distributed` is not
available or no process group is initialized: :func:`world_size` is 1, :func:`rank` is 0 and
:func:`gather` returns its input unchanged. This is the only module of the package that imports
:mod:`torch.distributed`; the losses reach it through the private helpers below (the layout of
the global batch over ranks, the no-grad reductions and the reduction of a per-sample loss over
ranks), and :class:`sslosses.EMA` through the FSDP probe (``DTensor`` and ``FSDPModule``).

Gradients: :func:`gather` concatenates the tensors of all ranks along dim 0; its backward sums
the incoming gradient over ranks and returns this rank's slice (a reduce-scatter). When every
rank computes a loss from the gathered tensor and all ranks call ``backward``, each rank's input
gradient is the gradient of the *sum* of the ranks' losses. The distributed losses scale their
values so that the mean over ranks is the single-process loss on the global batch; each rank's
gradient is then ``world_size`` times its slice of the single-process gradient, and DDP's
gradient averaging divides that factor out again.

The backward of :func:`gather` is itself an autograd Function whose backward is a gather again
(and :func:`all_reduce_sum`'s backward is an all-reduce with gradient), so a double backward
(``create_graph=True``, e.g. a gradient penalty) includes the cross-rank terms exactly, provided
every rank runs it. A backward here never writes into the gradient tensor it is given.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor

from sslosses._autograd import apply_function
from sslosses._validation import check_bool, reduce
from sslosses.typing import Reduction

__all__ = ["all_reduce_sum", "gather", "is_available", "is_initialized", "rank", "world_size"]


def is_available() -> bool:
    """Whether :mod:`torch.distributed` is compiled into this PyTorch build."""
    return dist.is_available()


def is_initialized() -> bool:
    """Whether a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """The number of processes in the default group, or 1 without one."""
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    """This process's rank in the default group, or 0 without one."""
    return dist.get_rank() if is_initialized() else 0


def _check_gather_distributed(gather_distributed: object) -> bool:
    """Validate a ``gather_distributed`` argument (private helper for losses and modules)."""
    gather_distributed = check_bool("gather_distributed", gather_distributed)
    if gather_distributed and not dist.is_available():
        raise ValueError(
            "gather_distributed=True needs torch.distributed, which this PyTorch build lacks "
            "(torch.distributed.is_available() is False)"
        )
    return gather_distributed


# ------------------------------------------------------------------------------- FSDP probe
@functools.cache
def _sharded_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """``(DTensor,), (FSDPModule,)`` where this torch has them (looked up once, lazily)."""
    dtensor: tuple[type, ...] = ()
    fsdp: tuple[type, ...] = ()
    try:
        from torch.distributed.tensor import DTensor

        dtensor = (DTensor,)
    except ImportError:  # torch < 2.5 or built without distributed
        pass
    try:
        from torch.distributed.fsdp import FSDPModule

        fsdp = (FSDPModule,)
    except ImportError:  # torch < 2.6 or built without distributed
        pass
    return dtensor, fsdp


# ----------------------------------------------------------------------------- batch layout
@dataclass(frozen=True)
class _BatchLayout:
    """The global batch: rank ``r`` holds rows ``offset_r : offset_r + sizes[r]``, rank 0 first."""

    sizes: tuple[int, ...]
    rank: int

    @property
    def world(self) -> int:
        """The number of ranks :math:`W`."""
        return len(self.sizes)

    @property
    def local(self) -> int:
        """This rank's rows :math:`N_r`."""
        return self.sizes[self.rank]

    @property
    def offset(self) -> int:
        """The rows of the ranks before this one."""
        return sum(self.sizes[: self.rank])

    @property
    def total(self) -> int:
        r"""The global batch size :math:`N_g = \sum_r N_r`."""
        return sum(self.sizes)


def _batch_layout(n_local: int, device: torch.device) -> _BatchLayout:
    """Every rank's batch size (one small all-gather; ``(n_local,)`` without a process group)."""
    world = world_size()
    if world == 1:
        return _BatchLayout((n_local,), 0)
    size = torch.tensor([n_local], dtype=torch.long, device=device)
    sizes = [torch.empty_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    return _BatchLayout(tuple(int(s.item()) for s in sizes), dist.get_rank())


def _communicates(gather_distributed: bool) -> bool:
    """Whether a ``gather_distributed`` entry point exchanges data (asked for and :math:`W > 1`)."""
    return gather_distributed and world_size() > 1


def _local_minimum(gather_distributed: bool, minimum: int) -> int:
    """The rows a local batch needs: ``minimum`` alone, 0 when the ranks pool their batches.

    The empty-rank rule of every ``gather_distributed`` entry point: a rank may hold no rows (it
    contributes nothing, and the result on the other ranks is exact); the minimum applies to
    the global batch and is checked by :func:`_global_layout` on every rank at once.
    """
    return 0 if _communicates(gather_distributed) else minimum


def _check_global_batch(layout: _BatchLayout, name: str, minimum: int, why: str = "") -> None:
    """Raise the same ``ValueError`` on every rank when the global batch has too few rows."""
    if layout.total < minimum:
        raise ValueError(
            f"{name} must have a global batch of at least {minimum} row(s) summed over the "
            f"{layout.world} ranks (gather_distributed=True){why}, got {layout.total} "
            f"(per-rank batch sizes {list(layout.sizes)})"
        )


def _global_layout(
    gather_distributed: bool,
    n_local: int,
    device: torch.device,
    *,
    name: str,
    minimum: int = 1,
    why: str = "",
) -> _BatchLayout | None:
    """The layout when a loss communicates (``gather_distributed`` and :math:`W > 1`), else None.

    The global batch must hold ``minimum`` rows: every rank learns every batch size in the same
    exchange, so every rank raises the same ``ValueError`` together (no rank is left waiting in
    a collective). ``name`` and ``why`` word the error.
    """
    if not _communicates(gather_distributed):
        return None
    layout = _batch_layout(n_local, device)
    _check_global_batch(layout, name, minimum, why)
    return layout


def _mean_weight(n_local: int, layout: _BatchLayout | None) -> float:
    """The factor that turns this rank's sum over its ``n_local`` samples into its share of
    the global mean: :math:`1 / N` locally, :math:`W / N_g` with a layout (exact for unequal
    batches, and 0 contribution from an empty rank, whose sum is 0)."""
    return 1 / n_local if layout is None else layout.world / layout.total


def _reduce_over_ranks(loss: Tensor, reduction: Reduction, layout: _BatchLayout | None) -> Tensor:
    """Reduce this rank's per-sample ``loss`` so that the mean over ranks is the global reduction.

    ``"mean"``: the local sum times :math:`W / N_g`; ``"sum"``: the local sum times :math:`W`;
    ``"none"``: the rows unchanged (this rank's rows of the global per-sample loss). Without a
    layout (no communication) this is the plain local reduction.
    """
    if layout is None or reduction == "none":
        return reduce(loss, reduction)
    total = loss.sum()
    if reduction == "mean":
        return total * _mean_weight(loss.shape[0], layout)
    return total * layout.world


# ------------------------------------------------------------------------ no-grad reductions
def _all_reduce_(tensor: Tensor, op: Literal["sum", "max"]) -> Tensor:
    """Reduce ``tensor`` over ranks in place, without gradient (statistics such as marginals)."""
    with torch.no_grad():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor


# --------------------------------------------------------------------- collectives with grad
class _Gather(torch.autograd.Function):
    """All-gather along dim 0; the backward is :class:`_ReduceScatter` (differentiable)."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, layout: _BatchLayout) -> Tensor:
        largest = max(layout.sizes)
        padded = tensor.contiguous()
        if tensor.shape[0] < largest:
            pad = tensor.new_zeros((largest - tensor.shape[0], *tensor.shape[1:]))
            padded = torch.cat([padded, pad])
        parts = [torch.empty_like(padded) for _ in layout.sizes]
        dist.all_gather(parts, padded)
        ctx.layout = layout
        return torch.cat([part[:n] for part, n in zip(parts, layout.sizes, strict=True)])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return apply_function(_ReduceScatter, grad, ctx.layout), None


class _ReduceScatter(torch.autograd.Function):
    """Sum over ranks, keep this rank's rows; the backward is :class:`_Gather` (differentiable)."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, layout: _BatchLayout) -> Tensor:
        summed = tensor.clone(memory_format=torch.contiguous_format)  # never reduce into the input
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        ctx.layout = layout
        return summed[layout.offset : layout.offset + layout.local].clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return apply_function(_Gather, grad, ctx.layout), None


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the backward is this Function again (its own adjoint)."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return apply_function(_AllReduceSum, grad)


def _gather(tensor: Tensor, layout: _BatchLayout) -> Tensor:
    """:func:`gather` with a known layout (skips the exchange of batch sizes)."""
    if layout.world == 1:
        return tensor
    return apply_function(_Gather, tensor, layout)


def gather(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0, with gradient.

    Ranks may hold different batch sizes (dim 0); all other dims must match. Without a process
    group (or with one process) the input is returned unchanged.

    The backward sums the incoming gradient over ranks and returns this rank's rows; it is
    differentiable itself, so a double backward (``create_graph=True``) is exact when every
    rank runs it.

    Args:
        tensor: this rank's tensor of shape ``(N_r, *)``.

    Returns:
        The tensor of shape ``(sum_r N_r, *)``, rank 0's rows first.

    Examples:
        >>> import torch
        >>> from sslosses.distributed import gather
        >>> gather(torch.ones(2, 3)).shape  # no process group: unchanged
        torch.Size([2, 3])
    """
    if world_size() == 1:
        return tensor
    return _gather(tensor, _batch_layout(tensor.shape[0], tensor.device))


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over ranks, with gradient (the backward sums the gradient over ranks too).

    Use it where every rank then computes the same function of the sum: each rank's input
    gradient is ``world_size`` times the single-process gradient, as with :func:`gather`. The
    backward is differentiable itself (double backward is exact when every rank runs it).
    Without a process group the input is returned unchanged.
    """
    if world_size() == 1:
        return tensor
    return apply_function(_AllReduceSum, tensor)
