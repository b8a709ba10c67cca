"""Autograd-aware collectives for opt-in distributed losses (the public face).

Every function here falls back to single-process behaviour when :mod:`torch.distributed` is not
available or no process group is initialized: :func:`world_size` is 1, :func:`rank` is 0 and
:func:`gather` returns its input unchanged. The losses' own plumbing (the layout of
the global batch over ranks, the share rule and the FSDP probe) is private, in
``sslosses._collectives``; this module is its public face.

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

from torch import Tensor

from sslosses import _collectives
from sslosses._autograd import apply_function

__all__ = ["all_reduce_sum", "gather", "is_available", "is_initialized", "rank", "world_size"]


def is_available() -> bool:
    """Whether :mod:`torch.distributed` is compiled into this PyTorch build."""
    return _collectives.is_available()


def is_initialized() -> bool:
    """Whether a default process group exists."""
    return _collectives.is_initialized()


def world_size() -> int:
    """The number of processes in the default group, or 1 without one."""
    return _collectives.world_size()


def rank() -> int:
    """This process's rank in the default group, or 0 without one."""
    return _collectives.rank()


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
    return _collectives.gather_rows(
        tensor, _collectives.batch_layout(tensor.shape[0], tensor.device)
    )


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over ranks, with gradient (the backward sums the gradient over ranks too).

    Use it where every rank then computes the same function of the sum: each rank's input
    gradient is ``world_size`` times the single-process gradient, as with :func:`gather`. The
    backward is differentiable itself (double backward is exact when every rank runs it).
    Without a process group the input is returned unchanged.
    """
    if world_size() == 1:
        return tensor
    return apply_function(_collectives.AllReduceSum, tensor)
