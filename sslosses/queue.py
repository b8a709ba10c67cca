r"""A first-in-first-out feature queue: MoCo's negatives and SwAV's feature queue."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from sslosses import _collectives, distributed
from sslosses._validation import check_bool, check_positive_int, check_same_device, check_tensor

__all__ = ["MoCoQueue"]


class MoCoQueue(nn.Module):
    r"""A ring buffer of the last ``size`` feature vectors, saved in checkpoints.

    :meth:`push` appends a batch of features (detached, cast to the queue's ``dtype``),
    overwriting the oldest entries once the queue is full; :meth:`features` returns the filled
    entries, oldest first and newest last. Any batch size works: batches need not divide
    ``size``, and a batch larger than the queue keeps its newest (last) ``size`` rows. Before the
    queue is full, only the pushed rows are returned: there is no random initial content (the
    original MoCo starts from random unit vectors, SwAV from zeros that it skips).

    The contents (buffer ``queue``), the write position and the fill count (``_extra_state``)
    are in :meth:`~torch.nn.Module.state_dict`, so a run resumed from a checkpoint continues bit
    for bit. A checkpoint of another ``size`` or ``dim`` is refused with a size-mismatch error,
    and a load that fails leaves the queue exactly as it was (contents, write position and fill
    count). The queue changes only through :meth:`push`; it has no ``forward``.

    **Non-finite features.** A NaN or infinite row stays among the negatives for the next
    ``size`` pushes. Usually the loss of the step that produced it is non-finite too and a
    training loop that stops on a non-finite loss stops there; a loop that skips such steps
    and goes on (e.g. with :class:`torch.amp.GradScaler`) should build the queue with
    ``check_finite=True``: :meth:`push` then raises a :class:`ValueError` and stores nothing
    when a row is not finite. The check reads a flag back from the device, so on an
    accelerator it synchronizes once per push; it is off by default so that :meth:`push`
    never synchronizes.

    With ``gather_distributed=True`` and a process group of ``W > 1`` ranks, :meth:`push`
    first gathers the features of all ranks (rank 0's rows first; ranks may push different
    batch sizes) without gradient, so every rank's queue holds the same contents, equal to a
    single process pushing the concatenated batch; MoCo enqueues its keys this way. Every rank
    must then call :meth:`push` at the same points. Without a process group it acts locally.
    Keep the queue outside a module wrapped in
    :class:`~torch.nn.parallel.DistributedDataParallel`: DDP's default ``broadcast_buffers``
    would overwrite every rank's queue with rank 0's.

    Usage with the losses (MoCo v2 negatives; one queue per assignment crop for SwAV):

    .. code-block:: python

        loss = info_nce(q, k, negatives=queue.features(), in_batch_negatives=False)
        queue.push(k)  # after computing the loss

        # SwAV: one local queue per assignment crop (gather_distributed=False: each rank keeps
        # its own, as the official code does); used once full, as main_swav.py does.
        with torch.no_grad():
            queue_scores = [prototypes(qu.features()) for qu in queues]  # (Q_i, K) each
        use_queue = all(qu.is_full for qu in queues)
        loss = swav_loss(scores, queue_scores=queue_scores if use_queue else None)
        for qu, z in zip(queues, assignment_embeddings):
            qu.push(z)

    Args:
        size: the capacity :math:`K` (number of feature vectors kept).
        dim: the feature dimension :math:`D`.
        gather_distributed: gather the pushed features from all ranks. Default: ``False``.
        dtype: the floating-point dtype of the stored features. Default: ``torch.float32``.
        device: where the buffer is allocated (``.to(device)`` moves it later). Default:
            ``None`` (the default device).
        check_finite: make :meth:`push` refuse NaN and infinite features (one device
            synchronization per push on an accelerator). Default: ``False``.

    Shape:
        - push input: :math:`(N, D)`, any :math:`N \ge 0`.
        - :meth:`features` output: :math:`(\min(K, \text{pushed}), D)`.

    Raises:
        TypeError: if ``size`` or ``dim`` is not an ``int``, ``gather_distributed`` or
            ``check_finite`` is not a ``bool`` or ``dtype`` is not a floating-point
            ``torch.dtype``.
        ValueError: if ``size <= 0`` or ``dim <= 0``, or ``gather_distributed=True`` without
            :mod:`torch.distributed`.

    Examples:
        >>> import torch
        >>> from sslosses import MoCoQueue
        >>> queue = MoCoQueue(5, 2)
        >>> len(queue), queue.features().shape  # empty: no random initial content
        (0, torch.Size([0, 2]))
        >>> queue.push(torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]))
        >>> queue.push(torch.tensor([[3.0, 3.0], [4.0, 4.0], [5.0, 5.0]]))  # wraps around
        >>> len(queue)
        5
        >>> queue.features()[:, 0]  # oldest first: row 0 was overwritten
        tensor([1., 2., 3., 4., 5.])

    References:
        He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020,
        arXiv:1911.05722; official code: facebookresearch/moco, ``moco/builder.py``
        (``_dequeue_and_enqueue``). Caron et al., "Unsupervised Learning of Visual Features by
        Contrasting Cluster Assignments", NeurIPS 2020, arXiv:2006.09882; official code:
        facebookresearch/swav, ``main_swav.py`` (the feature queue).
    """

    queue: Tensor

    def __init__(
        self,
        size: int,
        dim: int,
        *,
        gather_distributed: bool = False,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        check_finite: bool = False,
    ) -> None:
        super().__init__()
        self.size = check_positive_int("size", size)
        self.dim = check_positive_int("dim", dim)
        self.gather_distributed = _collectives.check_gather_distributed(gather_distributed)
        self.check_finite = check_bool("check_finite", check_finite)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
        self.register_buffer("queue", torch.zeros(size, dim, dtype=dtype, device=device))
        self._ptr = 0  # the next row to write
        self._count = 0  # the number of filled rows

    def __len__(self) -> int:
        return self._count

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the stored features."""
        return self.queue.dtype

    @property
    def is_full(self) -> bool:
        """Whether ``size`` features have been pushed."""
        return self._count == self.size

    @torch.no_grad()
    def push(self, features: Tensor) -> None:
        """Append ``features`` (detached and cast to :attr:`dtype`), overwriting the oldest.

        With ``gather_distributed=True`` the features of all ranks are gathered first (a
        collective: every rank must call it). With ``check_finite=True`` the (gathered)
        features are checked before anything is written, so every rank raises together.

        Args:
            features: a floating-point tensor of shape :math:`(N, D)` on the queue's device.

        Raises:
            TypeError: if ``features`` is not a floating-point tensor.
            ValueError: if ``features`` is not 2-D, its last dimension is not ``dim``, it is
                on another device than the queue, or (with ``check_finite=True``) a row holds
                NaN or infinity.
        """
        check_tensor("features", features, ndim=2)
        if features.shape[1] != self.dim:
            raise ValueError(
                f"features must have shape (N, {self.dim}), got {tuple(features.shape)}"
            )
        check_same_device("features", features, "the queue", self.queue)
        keys = features.detach().to(self.queue.dtype)  # (N, D)
        if self.gather_distributed:
            keys = distributed.gather(keys)  # (N_global, D), rank 0's rows first
        n = keys.shape[0]
        if n == 0:
            return
        if self.check_finite:
            bad = (~torch.isfinite(keys).all(dim=1)).nonzero().flatten()  # syncs on a device
            if bad.numel():
                which = "gathered rows" if self.gather_distributed else "rows"
                raise ValueError(
                    f"features must be finite (check_finite=True), got {bad.numel()} of {n} "
                    f"{which} with NaN or inf (first: row {int(bad[0])}); nothing was pushed"
                )
        if n >= self.size:  # only the newest `size` rows survive
            self.queue.copy_(keys[n - self.size :])
            self._ptr = 0
            self._count = self.size
            return
        first = min(n, self.size - self._ptr)  # rows written before wrapping around
        self.queue[self._ptr : self._ptr + first] = keys[:first]
        if first < n:
            self.queue[: n - first] = keys[first:]
        self._ptr = (self._ptr + n) % self.size
        self._count = min(self._count + n, self.size)

    def features(self) -> Tensor:
        r"""The filled entries, oldest first and newest last, as a new tensor.

        The result is a copy (like MoCo's ``queue.clone().detach()``): later pushes do not
        change it, so it can enter an autograd graph that is backpropagated after the next
        :meth:`push`.

        Returns:
            A tensor of shape :math:`(\min(K, \text{pushed}), D)` without gradient.
        """
        if self._count < self.size:  # never wrapped: rows [0, count) in push order
            return self.queue[: self._count].clone()
        return torch.cat([self.queue[self._ptr :], self.queue[: self._ptr]])

    def get_extra_state(self) -> dict[str, int]:
        """Return the write position and fill count (in :meth:`~torch.nn.Module.state_dict`)."""
        return {"ptr": self._ptr, "count": self._count}

    def set_extra_state(self, state: Any) -> None:
        """Restore the write position and fill count (:meth:`~torch.nn.Module.load_state_dict`)."""
        self._ptr, self._count = self._parse_extra_state(state)

    def _parse_extra_state(self, state: Any) -> tuple[int, int]:
        """The write position and fill count of a saved extra state, checked against ``size``."""
        ptr = state.get("ptr") if isinstance(state, dict) else None
        count = state.get("count") if isinstance(state, dict) else None
        if (
            not isinstance(ptr, int)
            or not isinstance(count, int)
            or isinstance(ptr, bool)
            or isinstance(count, bool)
            or not 0 <= count <= self.size
            or not 0 <= ptr < self.size
            or (count < self.size and ptr != count)
        ):
            raise ValueError(
                "MoCoQueue extra state must be a dict with ints 'ptr' and 'count' consistent "
                f"with size={self.size} (0 <= ptr < size, ptr == count unless full), got {state!r}"
            )
        return ptr, count

    def _load_from_state_dict(
        self,
        state_dict: Mapping[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # All or nothing: check the buffer's shape and the extra state before torch writes
        # either (it would copy the buffer, then apply the extra state, then report sizes).
        saved = state_dict.get(prefix + "queue")
        if isinstance(saved, Tensor) and saved.shape != self.queue.shape:
            error_msgs.append(
                f"size mismatch for {prefix}queue: the checkpoint holds a queue of shape "
                f"{tuple(saved.shape)}, this MoCoQueue has size={self.size}, dim={self.dim} "
                f"(shape {tuple(self.queue.shape)}); build the queue with the checkpoint's "
                "size and dim to load it. Nothing was loaded into this queue"
            )
            return
        keys = (prefix + "queue", prefix + "_extra_state")
        present = [key in state_dict for key in keys]
        if strict and present[0] != present[1]:  # the load fails: do not write the other one
            missing_keys.append(keys[present.index(False)])
            return
        if present[1]:
            self._parse_extra_state(state_dict[keys[1]])  # raises before anything is written
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, dim={self.dim}, dtype={self.queue.dtype}, "
            f"gather_distributed={self.gather_distributed}, filled={self._count}"
            + (", check_finite=True" if self.check_finite else "")
        )
