"""Private helpers shared by the transforms' colour, blur and crop modules.

Batch handling, per-sample parameters, output ownership and the CPU chunking rule. The public
face is :mod:`sslosses.transforms.functional`; the names here are the package's private API
(callers use them as ``_kernels.name`` so that a test can patch one place).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sslosses._validation import check_real, is_real


def unbatch(images: Tensor, unbatched: bool) -> Tensor:
    return images.squeeze(0) if unbatched else images


CHUNK_BYTES = 4 << 20  # temporaries of a batched op are kept below this size, when possible


def cache_tuned(device: torch.device) -> bool:
    """Whether to work in cache-sized pieces (CPU) rather than one launch per operation."""
    return device.type == "cpu"


def chunk_rows(n: int, row_bytes: int, device: torch.device) -> int:
    """Rows per chunk so that a chunk's temporaries (``row_bytes`` per row) fit CHUNK_BYTES.

    Only where :func:`cache_tuned`; on other devices one chunk of all ``n`` rows, so that the
    batch stays one kernel launch per operation.
    """
    if not cache_tuned(device):
        return max(1, n)
    return max(1, min(n, CHUNK_BYTES // max(1, row_bytes)))


def per_sample(
    name: str, value: float | Tensor, images: Tensor, *, low: float | None = None
) -> Tensor:
    """A scalar or ``(N,)`` parameter as an ``(N, 1, 1, 1)`` tensor in ``images``' dtype/device.

    A number must be finite (and ``>= low`` when given); a tensor is not read (no device
    synchronization).
    """
    n = images.shape[0]
    if isinstance(value, Tensor):
        if value.dim() != 1 or value.shape[0] != n:
            raise ValueError(
                f"{name} must be a number or a tensor of shape ({n},), got shape "
                f"{tuple(value.shape)}"
            )
        return value.to(device=images.device, dtype=images.dtype).view(n, 1, 1, 1)
    if not is_real(value):
        raise TypeError(f"{name} must be a float or a Tensor, got {type(value).__name__}")
    number = check_real(name, value, low=low)
    return torch.full((n, 1, 1, 1), number, dtype=images.dtype, device=images.device)


def own(out: Tensor, images: Tensor) -> Tensor:
    """``out``, copied if it shares memory with the caller's ``images`` (outputs never alias)."""
    shared = out.untyped_storage().data_ptr() == images.untyped_storage().data_ptr()
    return out.clone() if shared else out
