"""Autograd-aware collectives for opt-in distributed losses.

Every function here falls back to single-process behaviour when :mod:`torch.distributed` is not
available or no process group is initialized: :func:`world_size` is 1, :func:`rank` is 0 and
:func:`gather` returns its input unchanged.

Gradients: :func:`gather` concatenates the tensors of all ranks along dim 0; its backward sums
the incoming gradient over ranks (an all-reduce) and returns this rank's slice. When every rank
computes the same global loss from the gathered tensor, each rank's input gradient is therefore
``world_size`` times its slice of the single-process gradient, and DDP's gradient averaging
divides that factor out again.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from sslosses._autograd import apply_function
from sslosses._validation import check_bool

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


def _batch_sizes(tensor: Tensor) -> list[int]:
    size = torch.tensor([tensor.shape[0]], dtype=torch.long, device=tensor.device)
    sizes = [torch.empty_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        sizes = _batch_sizes(tensor)
        largest = max(sizes)
        padded = tensor.contiguous()
        if tensor.shape[0] < largest:
            pad = tensor.new_zeros((largest - tensor.shape[0], *tensor.shape[1:]))
            padded = torch.cat([padded, pad])
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        ctx.sizes = sizes
        ctx.rank = dist.get_rank()
        return torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]]


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def gather(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0, with gradient.

    Ranks may hold different batch sizes (dim 0); all other dims must match. Without a process
    group (or with one process) the input is returned unchanged.

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
    return apply_function(_Gather, tensor)


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over ranks, with gradient (the backward sums the gradient over ranks too).

    Use it where every rank then computes the same function of the sum: each rank's input
    gradient is ``world_size`` times the single-process gradient, as with :func:`gather`.
    Without a process group the input is returned unchanged.
    """
    if world_size() == 1:
        return tensor
    return apply_function(_AllReduceSum, tensor)
