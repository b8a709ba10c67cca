"""Log-sum-exp over similarity logits, plain or in row blocks (private; InfoNCE, NT-Xent, DCL,
uniformity).

Both contrastive losses are cross-entropies over similarity logits
``scale * <anchor_i, candidate_j>``: the loss of row ``i`` is the log-sum-exp of its logits minus
its positive logit. :func:`similarity_logsumexp` computes that log-sum-exp either from the full
``(R, M)`` logit matrix with plain autograd, or in blocks of ``chunk_size`` rows through
:class:`_BlockwiseLogSumExp`, a custom autograd Function that keeps only the ``(R,)``
log-sum-exp between forward and backward and recomputes each block's softmax in the backward, so
the extra memory is ``O(chunk_size * M)`` instead of ``O(R * M)``. Both paths give the same value
and gradient up to floating-point rounding. :func:`resolve_chunk_size` is also the ``"auto"``
rule of :func:`~sslosses.functional.koleo_loss`'s blockwise nearest-neighbour search.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.autograd.forward_ad as forward_ad
from torch import Tensor

from sslosses._autograd import apply_function
from sslosses._validation import check_chunk_size, check_non_negative_int
from sslosses.typing import ChunkSize

CPU_BLOCK_ELEMENTS = 1 << 20
"""``"auto"`` on CPU: a block holds about this many logits (4 MiB in float32) ..."""
CPU_MIN_BLOCK_ROWS = 128
"""... and at least this many rows; chunking starts when there are two such blocks."""
ACCELERATOR_MIN_ELEMENTS = 1 << 28
"""``"auto"`` on other devices (CUDA): chunk only from this many logits (1 GiB in float32) ..."""
ACCELERATOR_BLOCK_ELEMENTS = 1 << 24
"""... in blocks of about this many logits (64 MiB in float32), so launches stay few."""


def resolve_chunk_size(
    chunk_size: ChunkSize, rows: int, cols: int, device: torch.device | str
) -> int | None:
    r"""The rows per block that ``chunk_size`` means for an ``(rows, cols)`` logit matrix.

    :func:`~sslosses.functional.nt_xent` and :func:`~sslosses.functional.info_nce` call this
    to decide between the plain path (``None``: the full logit matrix, plain autograd) and the
    blockwise path (an integer :math:`B`: row blocks reduced to their log-sum-exp in the
    forward and recomputed in the backward, :math:`O(B \cdot \text{cols})` extra memory). An
    integer or ``None`` is returned as given. ``"auto"``, the losses' default, is the rule:

    .. math::
        B = \begin{cases}
        \max\bigl(128,\ \lfloor 2^{20} / \text{cols} \rfloor\bigr)
            & \text{on CPU,} \\
        \max\bigl(1,\ \lfloor 2^{24} / \text{cols} \rfloor\bigr)
            & \text{elsewhere, if } \text{rows} \cdot \text{cols} \ge 2^{28},
        \end{cases}

    used only when :math:`\text{rows} \ge 2B` (at least two blocks); otherwise, and on a
    non-CPU device below :math:`2^{28}` logits (1 GiB in float32), the plain path. On CPU the
    blockwise path is faster than the plain path from about a million logits on (its backward
    works in place on one block instead of several full-size temporaries) and slower on small
    matrices, hence blocks of about :math:`2^{20}` logits. On other devices the threshold
    keeps per-block kernel launches from dominating. Under :func:`torch.compile` tracing
    ``"auto"`` keeps the plain path; so do the losses under :mod:`torch.func` transforms and
    forward-mode AD (the blockwise autograd Function has neither a vmap nor a forward-mode
    rule: pass ``chunk_size=None`` there, not an integer). A double backward
    (``create_graph=True``) is exact on both paths; through the blockwise one, that second
    backward builds the full matrix.

    For NT-Xent over :math:`N` pairs, ``rows = cols = 2N`` (on CPU ``"auto"`` chunks from
    :math:`N = 724`); for InfoNCE with :math:`N` queries and :math:`K` queue negatives,
    ``rows = N`` and ``cols = N + K`` (with :math:`K = 65536`, from :math:`N = 256`). The
    measurements behind the rule are in :ref:`benchmarks-chunk-size`.
    :func:`~sslosses.functional.koleo_loss` applies the same rule to the inner products of its
    nearest-neighbour search, ``rows = N`` and ``cols =`` the rows searched (:math:`N`, or the
    global :math:`N_g` with ``gather_distributed``; on CPU from :math:`N = 1448`, in blocks of
    :math:`\max(128, \lfloor 2^{20} / N \rfloor)` rows).
    :func:`~sslosses.functional.nearest_neighbours` (NNCLR) applies it to the similarities of
    its queries with a support set, in blocks of support rows: ``rows = K`` support rows,
    ``cols = N`` queries (on CPU with :math:`N = 8192` and :math:`K = 65536`, 128 support rows
    per block).
    :func:`~sslosses.functional.dcl_loss` and :func:`~sslosses.functional.dclw_loss` call it
    as NT-Xent does (``rows = cols = 2N``), :func:`~sslosses.functional.uniformity_loss` with
    ``rows = N`` and ``cols =`` :math:`N_g` (on CPU from :math:`N = 1448`, as KoLeo).

    Args:
        chunk_size: rows per block (an integer > 0), ``None`` for the plain path, or
            ``"auto"``.
        rows: rows of the logit matrix (anchors or queries).
        cols: columns of the logit matrix (candidates: the positive and the negatives).
        device: the device the logits are computed on.

    Returns:
        The rows per block, or ``None`` for the plain path.

    Raises:
        TypeError: if ``chunk_size``, ``rows`` or ``cols`` has the wrong type, or ``device`` is
            not a :class:`torch.device` or string.
        ValueError: if ``chunk_size`` is not > 0 or ``"auto"``, or ``rows`` or ``cols`` is
            negative.

    Examples:
        >>> import torch
        >>> from sslosses.functional import resolve_chunk_size
        >>> resolve_chunk_size("auto", 2 * 1024, 2 * 1024, torch.device("cpu"))  # NT-Xent, N=1024
        512
        >>> resolve_chunk_size("auto", 2 * 256, 2 * 256, "cpu") is None  # small: plain path
        True
        >>> resolve_chunk_size(64, 2 * 256, 2 * 256, "cpu")
        64
    """
    chunk_size = check_chunk_size(chunk_size)
    rows = check_non_negative_int("rows", rows)
    cols = check_non_negative_int("cols", cols)
    if not isinstance(device, (torch.device, str)):
        raise TypeError(f"device must be a torch.device or str, got {type(device).__name__}")
    return _resolve(chunk_size, rows, cols, torch.device(device))


def _resolve(chunk_size: ChunkSize, rows: int, cols: int, device: torch.device) -> int | None:
    """:func:`resolve_chunk_size` on checked arguments."""
    if chunk_size != "auto":
        return chunk_size
    if torch.compiler.is_compiling():
        return None
    if device.type == "cpu":
        block = max(CPU_MIN_BLOCK_ROWS, CPU_BLOCK_ELEMENTS // max(cols, 1))
    elif rows * cols >= ACCELERATOR_MIN_ELEMENTS:
        block = max(1, ACCELERATOR_BLOCK_ELEMENTS // max(cols, 1))
    else:
        return None
    return block if rows >= 2 * block else None


def similarity_logsumexp(
    anchors: Tensor,
    candidates: Tensor,
    *,
    scale: float,
    exclude: Tensor | None = None,
    chunk_size: ChunkSize = None,
) -> Tensor:
    r"""Row-wise :math:`\log \sum_{j \ne e_i} \exp(s \langle a_i, c_j \rangle)`.

    Args:
        anchors: :math:`a`, shape ``(R, D)``.
        candidates: :math:`c`, shape ``(M, D)``.
        scale: :math:`s` (the inverse temperature).
        exclude: ``(R,)`` long tensor, the column :math:`e_i` left out of row ``i`` (its logit
            is ``-inf``), or ``(R, E)``, the :math:`E` columns left out of row ``i`` (DCL leaves
            out the anchor itself and its positive), or ``None`` to keep every column. Each row
            must keep one column.
        chunk_size: rows per block for the blockwise path, ``None`` for the plain path, or
            ``"auto"`` (:func:`resolve_chunk_size`).

    Returns:
        Shape ``(R,)``.
    """
    auto = chunk_size == "auto"
    chunk_size = _resolve(chunk_size, anchors.shape[0], candidates.shape[0], anchors.device)
    if auto and chunk_size is not None and _transformed(anchors, candidates):
        chunk_size = None  # the blockwise Function has no vmap rule and no forward-mode AD
    if chunk_size is not None:
        return apply_function(_BlockwiseLogSumExp, anchors, candidates, scale, exclude, chunk_size)
    logits = _block_logits(anchors * scale, candidates, exclude, 0, anchors.shape[0])  # (R, M)
    return torch.logsumexp(logits, dim=1)  # (R,)


def _transformed(*tensors: Tensor) -> bool:
    """Whether :mod:`torch.func` transforms or forward-mode AD act on any of ``tensors``."""
    wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    unpack_dual: Any = forward_ad.unpack_dual  # typed in some torch releases, not in others
    for t in tensors:
        if wrapped is not None and bool(wrapped(t)):
            return True
        if unpack_dual(t).tangent is not None:
            return True
    return False


def _block_logits(
    scaled: Tensor, candidates: Tensor, exclude: Tensor | None, start: int, stop: int
) -> Tensor:
    """Rows ``start:stop`` of the logits, each row's excluded column(s) set to ``-inf``.

    The mask is written in place on the matmul output, whose backward does not need it, so this
    also serves differentiable (plain-path and double-backward) computations.
    """
    logits = scaled[start:stop] @ candidates.T  # (B, M)
    if exclude is not None:
        columns = exclude[start:stop]  # (B,) or (B, E)
        rows = torch.arange(stop - start, device=logits.device)  # (B,)
        logits[rows.view(-1, *([1] * (columns.dim() - 1))), columns] = float("-inf")
    return logits


class _BlockwiseLogSumExp(torch.autograd.Function):
    """:func:`similarity_logsumexp` in row blocks; the backward recomputes each block."""

    @staticmethod
    def forward(
        ctx: Any,
        anchors: Tensor,
        candidates: Tensor,
        scale: float,
        exclude: Tensor | None,
        chunk_size: int,
    ) -> Tensor:
        with torch.autocast(device_type=anchors.device.type, enabled=False):
            scaled = anchors * scale  # (R, D)
            lse = anchors.new_empty(anchors.shape[0])  # (R,)
            for start in range(0, anchors.shape[0], chunk_size):
                stop = min(start + chunk_size, anchors.shape[0])
                logits = _block_logits(scaled, candidates, exclude, start, stop)  # (B, M)
                lse[start:stop] = torch.logsumexp(logits, dim=1)
        ctx.save_for_backward(anchors, candidates, lse, exclude)
        ctx.scale = scale
        ctx.chunk_size = chunk_size
        return lse

    @staticmethod
    def backward(ctx: Any, grad_lse: Tensor) -> tuple[Tensor | None, ...]:
        anchors, candidates, lse, exclude = ctx.saved_tensors
        scale: float = ctx.scale
        chunk_size: int = ctx.chunk_size
        if torch.is_grad_enabled():  # create_graph=True: a differentiable (full-size) backward
            grad_a, grad_c = _differentiable_grads(anchors, candidates, grad_lse, scale, exclude)
            return grad_a, grad_c, None, None, None
        return _blockwise_grads(
            anchors,
            candidates,
            lse,
            grad_lse,
            scale,
            exclude,
            chunk_size,
            *ctx.needs_input_grad[:2],
        )


def _blockwise_grads(
    anchors: Tensor,
    candidates: Tensor,
    lse: Tensor,
    grad_lse: Tensor,
    scale: float,
    exclude: Tensor | None,
    chunk_size: int,
    need_anchors: bool,
    need_candidates: bool,
) -> tuple[Tensor | None, ...]:
    """First-order gradients, one recomputed block of logits at a time (in place, no graph)."""
    grad_anchors = torch.empty_like(anchors) if need_anchors else None
    grad_candidates = torch.zeros_like(candidates) if need_candidates else None
    with torch.autocast(device_type=anchors.device.type, enabled=False):
        scaled = anchors * scale  # (R, D)
        for start in range(0, anchors.shape[0], chunk_size):
            stop = min(start + chunk_size, anchors.shape[0])
            logits = _block_logits(scaled, candidates, exclude, start, stop)  # (B, M)
            # d lse_i / d logit_ij = softmax_ij; excluded columns give exp(-inf) = 0
            weights = logits.sub_(lse[start:stop, None]).exp_()
            weights.mul_(grad_lse[start:stop, None])  # d loss / d logits, (B, M)
            if grad_anchors is not None:
                torch.mm(weights, candidates, out=grad_anchors[start:stop])
            if grad_candidates is not None:
                grad_candidates.addmm_(weights.T, anchors[start:stop], alpha=scale)
    if grad_anchors is not None:
        grad_anchors.mul_(scale)
    return grad_anchors, grad_candidates, None, None, None


def _differentiable_grads(
    anchors: Tensor, candidates: Tensor, grad_lse: Tensor, scale: float, exclude: Tensor | None
) -> tuple[Tensor, Tensor]:
    """The same gradients from the full logit matrix with differentiable ops (double backward).

    Used only when the backward itself is recorded (``create_graph=True``, e.g. a gradient
    penalty); it needs the memory of the plain path.
    """
    with torch.autocast(device_type=anchors.device.type, enabled=False):
        logits = _block_logits(anchors * scale, candidates, exclude, 0, anchors.shape[0])
        weights = torch.softmax(logits, dim=1) * grad_lse[:, None]  # d loss / d logits
        return (weights @ candidates) * scale, (weights.T @ anchors) * scale
