r"""SwAV prototypes: a bias-free linear layer of L2-normalized cluster centres."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslosses._autograd import FrozenAtFirst
from sslosses._numerics import compute_dtype, upcast
from sslosses._validation import (
    check_non_negative_int,
    check_positive_int,
    check_same_device,
    check_tensor,
)

__all__ = ["SwAVPrototypes"]


class SwAVPrototypes(FrozenAtFirst, nn.Module):
    r"""The SwAV prototype layer: scores of embeddings against :math:`K` learnable prototypes.

    .. math::
        s_{nk} = \langle z_n, c_k \rangle, \qquad S = Z C^\top,

    a bias-free linear layer with ``weight`` :math:`C` of shape :math:`(K, D)`, initialized
    as :class:`torch.nn.Linear` is (SwAV uses ``nn.Linear(dim, n_prototypes, bias=False)``).
    The forward pass is a plain linear layer (autocast applies as to any
    :class:`~torch.nn.Linear`); :func:`sslosses.functional.swav_loss` computes in float32.

    SwAV keeps the prototypes on the unit sphere by re-normalizing the rows of :math:`C` at the
    start of every training step (:meth:`normalize_`), and keeps them fixed for the first
    ``freeze_steps`` iterations (its ``freeze_prototypes_niters``, 313 in the official
    ImageNet runs, about one epoch) by dropping their gradient after the backward pass and
    before the optimizer step (:meth:`cancel_gradients_`):

    .. code-block:: python

        for step, images in enumerate(loader):
            prototypes.normalize_()
            crops = transform(images)  # swav_transform(): 2 x 224 and 6 x 96 crops
            # one backbone pass per crop size (torch.cat(crops) raises for mixed sizes)
            features = torch.cat(forward_multicrop(backbone, crops))  # (V N, F)
            z = F.normalize(projector(features), dim=1)  # (V N, D)
            scores = list(prototypes(z).split([c.shape[0] for c in crops]))  # V x (N, K)
            loss = swav_loss(scores)
            optimizer.zero_grad()
            loss.backward()
            prototypes.cancel_gradients_(step)  # grad = None while step < freeze_steps
            optimizer.step()

    Optimizers skip a parameter whose ``.grad`` is ``None``, so a frozen step leaves the
    prototypes (and their momentum / weight-decay state) untouched, as in SwAV. Here
    ``transform`` is :func:`sslosses.transforms.swav_transform` and ``forward_multicrop`` is
    :func:`sslosses.transforms.forward_multicrop`; the docs' recipes page has the complete
    step with a feature queue.

    Args:
        dim: the embedding dimension :math:`D`.
        n_prototypes: the number of prototypes :math:`K`. Default: ``3000``.
        freeze_steps: the number of initial steps during which :meth:`cancel_gradients_` drops
            the prototypes' gradient. Default: ``0`` (never).

    Shape:
        - input: :math:`(*, D)`, typically :math:`(N, D)` L2-normalized embeddings.
        - output: :math:`(*, K)`.

    Raises:
        TypeError: if ``dim``, ``n_prototypes`` or ``freeze_steps`` is not an ``int``.
        ValueError: if ``dim <= 0``, ``n_prototypes <= 0`` or ``freeze_steps < 0``.

    Examples:
        >>> import torch
        >>> from sslosses import SwAVPrototypes
        >>> prototypes = SwAVPrototypes(16, 10, freeze_steps=1)
        >>> prototypes
        SwAVPrototypes(dim=16, n_prototypes=10, freeze_steps=1)
        >>> prototypes.normalize_()
        >>> torch.allclose(prototypes.weight.norm(dim=1), torch.ones(10))
        True
        >>> z = torch.nn.functional.normalize(torch.randn(4, 16), dim=1)
        >>> scores = prototypes(z)
        >>> scores.shape
        torch.Size([4, 10])
        >>> scores.sum().backward()
        >>> prototypes.cancel_gradients_(0), prototypes.weight.grad is None
        (True, True)

    References:
        Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster
        Assignments", NeurIPS 2020, arXiv:2006.09882. Official code: facebookresearch/swav,
        ``src/resnet50.py`` (``prototypes``) and ``main_swav.py`` (prototype normalization and
        ``freeze_prototypes_niters``).
    """

    def __init__(self, dim: int, n_prototypes: int = 3000, *, freeze_steps: int = 0) -> None:
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.n_prototypes = check_positive_int("n_prototypes", n_prototypes)
        self.freeze_steps = check_non_negative_int("freeze_steps", freeze_steps)
        self.weight = nn.Parameter(torch.empty(n_prototypes, dim))  # (K, D)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialize ``weight`` as :class:`torch.nn.Linear` does (uniform, fan-in)."""
        # Kaiming-uniform with a = sqrt(5): U(-1/sqrt(D), 1/sqrt(D)), as nn.Linear
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        check_tensor("x", x)
        if x.dim() == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (*, {self.dim}), got {tuple(x.shape)}")
        check_same_device("x", x, "weight", self.weight)
        if x.dtype != self.weight.dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(
                f"x must have the dtype of weight ({self.weight.dtype}) outside autocast, "
                f"got {x.dtype}"
            )
        return F.linear(x, self.weight)  # (*, K)

    @torch.no_grad()
    def normalize_(self) -> None:
        """L2-normalize the rows of ``weight`` in place (under no_grad; ``.grad`` untouched).

        Half-precision weights are normalized in float32 and written back.
        """
        w = upcast(self.weight, compute_dtype(self.weight))  # (K, D)
        self.weight.copy_(F.normalize(w, dim=1, p=2))

    def _frozen_at_first(self) -> Iterable[Tensor]:
        return [self.weight]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, n_prototypes={self.n_prototypes}, freeze_steps={self.freeze_steps}"
