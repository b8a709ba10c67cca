"""No custom autograd backward writes into the gradient tensor it is given.

Autograd may hand one gradient tensor to several branches (``y = f(x) + v.view(...)``); a
backward that modifies it in place corrupts the other branches' gradients. The distributed
collectives are checked on gloo in ``test_distributed.py``; here every other custom Function
is called with an incoming gradient that the test keeps a copy of.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from sslosses._chunked_ce import similarity_logsumexp
from sslosses.functional import barlow_twins_loss, vicreg_loss

F64 = torch.float64


def _blockwise_lse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    exclude = torch.arange(a.shape[0])
    return similarity_logsumexp(a, b, scale=3.0, exclude=exclude, chunk_size=2)  # (R,)


def _barlow(algorithm: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return barlow_twins_loss(a, b, lambd=0.3, algorithm=algorithm)  # type: ignore[arg-type]

    return loss


def _vicreg(algorithm: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return vicreg_loss(a, b, algorithm=algorithm)  # type: ignore[arg-type]

    return loss


FUNCTIONS = {
    "blockwise log-sum-exp": _blockwise_lse,
    "barlow dense": _barlow("dense"),
    "barlow gram": _barlow("gram"),
    "barlow fused": _barlow("fused"),
    "vicreg dense": _vicreg("dense"),  # the centring and variance Function
    "vicreg gram": _vicreg("gram"),
}


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_custom_backward_leaves_its_incoming_gradient_alone(name: str) -> None:
    gen = torch.Generator().manual_seed(4)
    a = torch.randn(6, 5, generator=gen, dtype=F64, requires_grad=True)
    b = torch.randn(6, 5, generator=gen, dtype=F64, requires_grad=True)
    out = FUNCTIONS[name](a, b)
    # a sibling branch that receives the very same gradient tensor (as a view)
    sibling = torch.zeros(out.shape, dtype=F64, requires_grad=True)
    total = out + sibling.view(out.shape)
    grad = torch.rand(out.shape, generator=gen, dtype=F64) + 0.5
    kept = grad.clone()
    total.backward(grad)
    assert torch.equal(grad, kept)
    assert sibling.grad is not None and torch.equal(sibling.grad, kept)
    assert a.grad is not None and torch.isfinite(a.grad).all()
