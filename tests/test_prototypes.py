"""``SwAVPrototypes``: linear scores, in-place normalization, frozen first steps, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from strategies import SEEDS

from sslosses.prototypes import SwAVPrototypes


def test_shapes_and_scores_float64() -> None:
    protos = SwAVPrototypes(8, 5).double()
    assert protos.weight.shape == (5, 8)
    assert [name for name, _ in protos.named_parameters()] == ["weight"]  # bias-free
    x = torch.randn(6, 8, dtype=torch.float64)
    out = protos(x)
    assert out.shape == (6, 5)
    torch.testing.assert_close(out, x @ protos.weight.T, rtol=0, atol=1e-14)
    # any leading dims, like nn.Linear
    assert protos(torch.randn(2, 3, 8, dtype=torch.float64)).shape == (2, 3, 5)


def test_default_size_and_linear_initialization() -> None:
    assert SwAVPrototypes(128).weight.shape == (3000, 128)
    torch.manual_seed(0)
    linear = torch.nn.Linear(16, 40, bias=False)
    torch.manual_seed(0)
    protos = SwAVPrototypes(16, 40)
    assert torch.equal(protos.weight, linear.weight)  # SwAV's nn.Linear(dim, K, bias=False)


def test_gradcheck() -> None:
    protos = SwAVPrototypes(4, 3).double()
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w: torch.nn.functional.linear(x, w), (x, protos.weight)
    )
    assert torch.autograd.gradcheck(protos, (x,))


@given(seed=SEEDS)
def test_normalize_gives_unit_rows_in_the_same_direction(seed: int) -> None:
    torch.manual_seed(seed)
    protos = SwAVPrototypes(6, 7).double()
    with torch.no_grad():
        protos.weight.mul_(torch.rand(7, 1, dtype=torch.float64) * 10 + 0.1)
    before = protos.weight.detach().clone()
    protos.normalize_()
    norms = protos.weight.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(7, dtype=torch.float64), rtol=0, atol=1e-14)
    expected = before / before.norm(dim=1, keepdim=True)  # SwAV: F.normalize(w, dim=1, p=2)
    torch.testing.assert_close(protos.weight.detach(), expected, rtol=0, atol=1e-15)


def test_normalize_leaves_grad_and_graph_alone() -> None:
    protos = SwAVPrototypes(4, 3)
    protos(torch.randn(2, 4)).sum().backward()
    assert protos.weight.grad is not None
    grad = protos.weight.grad.clone()
    protos.normalize_()
    assert protos.weight.is_leaf and protos.weight.requires_grad
    assert protos.weight.grad_fn is None
    assert torch.equal(protos.weight.grad, grad)


def test_normalize_half_precision() -> None:
    protos = SwAVPrototypes(64, 10).to(torch.bfloat16)
    with torch.no_grad():
        protos.weight.mul_(100.0)
    protos.normalize_()
    assert protos.weight.dtype == torch.bfloat16
    norms = protos.weight.float().norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(10), rtol=0, atol=1e-2)


def test_autocast_forward() -> None:
    protos = SwAVPrototypes(8, 4)
    x = torch.randn(3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = protos(x)
    assert out.dtype == torch.bfloat16  # a plain linear layer under autocast
    torch.testing.assert_close(out.float(), x @ protos.weight.detach().T, rtol=2e-2, atol=2e-2)


def test_freeze_steps_cancel_gradients_and_optimizer_skips() -> None:
    protos = SwAVPrototypes(4, 3, freeze_steps=2)
    head = torch.nn.Linear(4, 4)
    opt = torch.optim.SGD([*protos.parameters(), *head.parameters()], lr=0.5, momentum=0.9)
    x = torch.randn(5, 4)
    for step in range(4):
        protos.normalize_()
        w_before = protos.weight.detach().clone()
        head_before = head.weight.detach().clone()
        opt.zero_grad()
        scores = protos(F.normalize(head(x), dim=1))
        scores.logsumexp(dim=1).mean().backward()
        assert protos.weight.grad is not None
        frozen = protos.cancel_gradients_(step)
        assert frozen == (step < 2)
        assert (protos.weight.grad is None) == frozen
        opt.step()
        assert not torch.equal(head.weight, head_before)  # the rest of the model trains
        assert torch.equal(protos.weight, w_before) == frozen  # prototypes only after step 2
    assert protos.cancel_gradients_(100) is False


def test_freeze_steps_zero_never_cancels() -> None:
    protos = SwAVPrototypes(4, 3)
    protos(torch.randn(2, 4)).sum().backward()
    assert protos.cancel_gradients_(0) is False
    assert protos.weight.grad is not None


def test_repr_and_state_dict() -> None:
    protos = SwAVPrototypes(16, 10, freeze_steps=313)
    assert repr(protos) == "SwAVPrototypes(dim=16, n_prototypes=10, freeze_steps=313)"
    assert list(protos.state_dict()) == ["weight"]


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"dim must be an int > 0, got 0"):
        SwAVPrototypes(0)
    with pytest.raises(TypeError, match=r"dim must be an int, got float"):
        SwAVPrototypes(4.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"n_prototypes must be an int > 0, got -3"):
        SwAVPrototypes(4, -3)
    with pytest.raises(ValueError, match=r"freeze_steps must be an int >= 0, got -1"):
        SwAVPrototypes(4, 3, freeze_steps=-1)
    with pytest.raises(TypeError, match=r"freeze_steps must be an int, got bool"):
        SwAVPrototypes(4, 3, freeze_steps=True)
    protos = SwAVPrototypes(4, 3)
    with pytest.raises(ValueError, match=r"x must have shape \(\*, 4\), got \(2, 5\)"):
        protos(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"x must have shape \(\*, 4\), got \(\)"):
        protos(torch.tensor(1.0))
    with pytest.raises(TypeError, match=r"x must have a floating-point dtype"):
        protos(torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor, got list"):
        protos([[1.0] * 4])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"x must have the dtype of weight \(torch.float32\)"):
        protos(torch.randn(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x and weight must be on the same device"):
        protos(torch.randn(2, 4, device="meta"))
    with pytest.raises(ValueError, match=r"step must be an int >= 0, got -1"):
        protos.cancel_gradients_(-1)
    with pytest.raises(TypeError, match=r"step must be an int, got float"):
        protos.cancel_gradients_(1.0)  # type: ignore[arg-type]
