"""The plumbing of the distributed losses (private): one layout exchange, one share rule.

This is the only module of the package that imports :mod:`torch.distributed`. The public face is
:mod:`sslosses.distributed` (:func:`~sslosses.distributed.gather`,
:func:`~sslosses.distributed.all_reduce_sum`, :func:`~sslosses.distributed.rank`,
:func:`~sslosses.distributed.world_size`); the losses and components use what is here:

- the layout exchange: :func:`global_layout` (every rank's batch size in one all-gather, and the
  empty-rank rule: a rank may hold no rows, the minimum applies to the global batch and every
  rank raises the same error together) with :func:`local_minimum` for the local check;
- the share rule: :func:`mean_weight` turns a rank's sum over its rows into its share of the
  global mean (:math:`W / N_g`), and :func:`reduce_over_ranks` applies it to a per-sample loss,
  so that the mean over ranks of a returned value is the single-process value on the global batch;
- the collectives with gradient (:func:`gather_rows`, :class:`AllReduceSum`) and without
  (:func:`all_reduce_`), and the FSDP/DTensor probe :func:`sharded_types` used by
  :class:`sslosses.EMA`.

Without a process group (or with one process) nothing communicates: :func:`global_layout`
returns ``None`` and the rules reduce to the local ones. A backward here never writes into the
gradient tensor it is given.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor

from sslosses._autograd import apply_function
from sslosses._numerics import reduce
from sslosses._validation import check_bool
from sslosses.typing import Reduction


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


def check_gather_distributed(gather_distributed: object) -> bool:
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
def sharded_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
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
class BatchLayout:
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


def batch_layout(n_local: int, device: torch.device) -> BatchLayout:
    """Every rank's batch size (one small all-gather; ``(n_local,)`` without a process group)."""
    world = world_size()
    if world == 1:
        return BatchLayout((n_local,), 0)
    size = torch.tensor([n_local], dtype=torch.long, device=device)
    sizes = [torch.empty_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    return BatchLayout(tuple(int(s.item()) for s in sizes), dist.get_rank())


def communicates(gather_distributed: bool) -> bool:
    """Whether a ``gather_distributed`` entry point exchanges data (asked for and :math:`W > 1`)."""
    return gather_distributed and world_size() > 1


def local_minimum(gather_distributed: bool, minimum: int) -> int:
    """The rows a local batch needs: ``minimum`` alone, 0 when the ranks pool their batches.

    The empty-rank rule of every ``gather_distributed`` entry point: a rank may hold no rows (it
    contributes nothing, and the result on the other ranks is exact); the minimum applies to
    the global batch and is checked by :func:`global_layout` on every rank at once.
    """
    return 0 if communicates(gather_distributed) else minimum


def check_global_batch(layout: BatchLayout, name: str, minimum: int, why: str = "") -> None:
    """Raise the same ``ValueError`` on every rank when the global batch has too few rows."""
    if layout.total < minimum:
        raise ValueError(
            f"{name} must have a global batch of at least {minimum} row(s) summed over the "
            f"{layout.world} ranks (gather_distributed=True){why}, got {layout.total} "
            f"(per-rank batch sizes {list(layout.sizes)})"
        )


def global_layout(
    gather_distributed: bool,
    n_local: int,
    device: torch.device,
    *,
    name: str,
    minimum: int = 1,
    why: str = "",
) -> BatchLayout | None:
    """The layout when a loss communicates (``gather_distributed`` and :math:`W > 1`), else None.

    The global batch must hold ``minimum`` rows: every rank learns every batch size in the same
    exchange, so every rank raises the same ``ValueError`` together (no rank is left waiting in
    a collective). ``name`` and ``why`` word the error.
    """
    if not communicates(gather_distributed):
        return None
    layout = batch_layout(n_local, device)
    check_global_batch(layout, name, minimum, why)
    return layout


def mean_weight(n_local: int, layout: BatchLayout | None) -> float:
    """The factor that turns this rank's sum over its ``n_local`` samples into its share of
    the global mean: :math:`1 / N` locally, :math:`W / N_g` with a layout (exact for unequal
    batches, and 0 contribution from an empty rank, whose sum is 0)."""
    return 1 / n_local if layout is None else layout.world / layout.total


def reduce_over_ranks(loss: Tensor, reduction: Reduction, layout: BatchLayout | None) -> Tensor:
    """Reduce this rank's per-sample ``loss`` so that the mean over ranks is the global reduction.

    ``"mean"``: the local sum times :math:`W / N_g`; ``"sum"``: the local sum times :math:`W`;
    ``"none"``: the rows unchanged (this rank's rows of the global per-sample loss). Without a
    layout (no communication) this is the plain local reduction.
    """
    if layout is None or reduction == "none":
        return reduce(loss, reduction)
    total = loss.sum()
    if reduction == "mean":
        return total * mean_weight(loss.shape[0], layout)
    return total * layout.world


# ------------------------------------------------------------------------ no-grad reductions
def all_reduce_(tensor: Tensor, op: Literal["sum", "max"]) -> Tensor:
    """Reduce ``tensor`` over ranks in place, without gradient (statistics such as marginals)."""
    with torch.no_grad():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor


def broadcast_(tensor: Tensor, src: int = 0) -> Tensor:
    """Overwrite ``tensor`` in place with rank ``src``'s, without gradient (shared randomness)."""
    with torch.no_grad():
        dist.broadcast(tensor, src=src)
    return tensor


# --------------------------------------------------------------------- collectives with grad
class Gather(torch.autograd.Function):
    """All-gather along dim 0; the backward is :class:`ReduceScatter` (differentiable)."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, layout: BatchLayout) -> Tensor:
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
        return apply_function(ReduceScatter, grad, ctx.layout), None


class ReduceScatter(torch.autograd.Function):
    """Sum over ranks, keep this rank's rows; the backward is :class:`Gather` (differentiable)."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, layout: BatchLayout) -> Tensor:
        summed = tensor.clone(memory_format=torch.contiguous_format)  # never reduce into the input
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        ctx.layout = layout
        return summed[layout.offset : layout.offset + layout.local].clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return apply_function(Gather, grad, ctx.layout), None


class AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the backward is this Function again (its own adjoint)."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return apply_function(AllReduceSum, grad)


def gather_rows(tensor: Tensor, layout: BatchLayout) -> Tensor:
    """``sslosses.distributed.gather`` with a known layout (no exchange of batch sizes)."""
    if layout.world == 1:
        return tensor
    return apply_function(Gather, tensor, layout)
