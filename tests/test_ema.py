"""``EMA`` and ``ema_update_``: formula, schedule, buffers, state, errors."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from sslosses.ema import EMA, ema_update_
from sslosses.schedules import cosine_schedule


def _net(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(5, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 3, bias=False)
    ).to(dtype)


def _train_step(model: nn.Module, seed: int) -> None:
    """Change the weights and the BatchNorm statistics of ``model`` (a fake optimizer step)."""
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 5, generator=gen, dtype=torch.float64))  # updates running stats
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def _state_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys():
        return False
    return all(
        torch.equal(sa[k], sb[k]) if isinstance(sa[k], torch.Tensor) else sa[k] == sb[k] for k in sa
    )


# ------------------------------------------------------------------------------ ema_update_
def _loop_ema(target: list[torch.Tensor], online: list[torch.Tensor], m: float) -> None:
    """The textbook per-parameter loop (MoCo ``_momentum_update_key_encoder``)."""
    for t, o in zip(target, online, strict=True):
        t.copy_(t * m + o * (1.0 - m))


@given(seed=st.integers(0, 2**31 - 1), m=st.floats(0.0, 1.0))
def test_ema_update_matches_loop_formula_float64(seed: int, m: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (4,), (), (2, 2, 2)]
    target = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    online = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    expected = [t.clone() for t in target]
    _loop_ema(expected, online, m)
    online_before = [o.clone() for o in online]
    ema_update_(target=target, online=online, momentum=m)
    for t, e in zip(target, expected, strict=True):
        torch.testing.assert_close(t, e, rtol=0, atol=1e-14)
    for o, b in zip(online, online_before, strict=True):
        assert torch.equal(o, b)  # online untouched


def test_ema_update_uses_one_foreach_lerp_and_equals_per_tensor_lerp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target, online = _net(0), _net(1)
    expected = [p.detach().clone() for p in target.parameters()]
    for e, o in zip(expected, online.parameters(), strict=True):
        e.lerp_(o.detach(), 1 - 0.9)
    calls: list[int] = []
    real = torch._foreach_lerp_

    def spy(a: list[torch.Tensor], b: list[torch.Tensor], w: float) -> None:
        calls.append(len(a))
        real(a, b, w)

    monkeypatch.setattr(torch, "_foreach_lerp_", spy)
    ema_update_(target=target, online=online, momentum=0.9, buffers="copy")
    assert calls == [len(list(target.parameters()))]  # one fused call over all parameters
    for p, e in zip(target.parameters(), expected, strict=True):
        assert torch.equal(p, e)  # bit-identical to the per-tensor lerp


def test_ema_update_extreme_momenta() -> None:
    target, online = _net(0), _net(1)
    before = copy.deepcopy(target)
    ema_update_(target=target, online=online, momentum=1.0, buffers="keep")
    assert _state_equal(target, before)  # momentum 1: unchanged
    ema_update_(target=target, online=online, momentum=0.0, buffers="copy")
    assert _state_equal(target, online)  # momentum 0: an exact copy


def test_ema_update_does_not_track_gradient() -> None:
    online = nn.Linear(3, 2)
    target = nn.Linear(3, 2)  # requires_grad=True parameters
    ema_update_(target=target, online=online, momentum=0.5)
    assert target.weight.grad_fn is None
    assert target.weight.is_leaf


def test_ema_update_errors() -> None:
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\], got 1.5"):
        ema_update_(target=a, online=b, momentum=1.5)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\], got -0.1"):
        ema_update_(target=a, online=b, momentum=-0.1)
    with pytest.raises(ValueError, match=r"momentum must be a finite number, got nan"):
        ema_update_(target=a, online=b, momentum=math.nan)
    with pytest.raises(TypeError, match=r"momentum must be a float, got Tensor"):
        ema_update_(target=a, online=b, momentum=torch.tensor(0.5))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"buffers must be one of 'copy', 'average', 'keep'"):
        ema_update_(target=a, online=b, momentum=0.5, buffers="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"same number of parameters, got 2 and 1"):
        ema_update_(target=a, online=nn.Linear(3, 2, bias=False), momentum=0.5)
    with pytest.raises(ValueError, match=r"parameter weight must have the same shape .* \(2, 3\)"):
        ema_update_(target=a, online=nn.Linear(4, 2), momentum=0.5)
    with pytest.raises(
        TypeError,
        match=r"parameter weight must have the same dtype .* got torch.float32 and torch.float64",
    ):
        ema_update_(target=a, online=nn.Linear(3, 2).double(), momentum=0.5)
    with pytest.raises(ValueError, match=r"parameter weight must be on the same device .* meta"):
        ema_update_(target=a, online=nn.Linear(3, 2, device="meta"), momentum=0.5)
    with pytest.raises(ValueError, match=r"same number of buffers, got 3 and 0"):
        ema_update_(
            target=nn.BatchNorm1d(3, affine=False),
            online=nn.Identity(),
            momentum=0.5,
            buffers="copy",
        )
    with pytest.raises(ValueError, match=r"buffer running_mean must have the same shape"):
        ema_update_(
            target=nn.BatchNorm1d(3, affine=False),
            online=nn.BatchNorm1d(4, affine=False),
            momentum=0.5,
            buffers="average",
        )
    # with buffers="keep" (the default) the buffers are neither checked nor touched
    ema_update_(target=nn.BatchNorm1d(3, affine=False), online=nn.Identity(), momentum=0.5)
    with pytest.raises(
        TypeError, match=r"both be nn.Module or both sequences of tensors, got Linear"
    ):
        ema_update_(target=a, online=[torch.zeros(2, 3)], momentum=0.5)
    with pytest.raises(TypeError, match=r"both be nn.Module or both sequences .* got Tensor"):
        ema_update_(target=torch.zeros(3), online=torch.zeros(3), momentum=0.5)
    with pytest.raises(TypeError, match=r"both be nn.Module or both sequences .* got int"):
        ema_update_(target=3, online=4, momentum=0.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"online\[1\] must be a torch.Tensor, got float"):
        ema_update_(
            target=[torch.zeros(1), torch.zeros(1)], online=[torch.ones(1), 1.0], momentum=0.5
        )  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"target\[0\] must have a floating-point dtype"):
        ema_update_(target=[torch.zeros(2, dtype=torch.long)], online=[torch.ones(2)], momentum=0.5)
    with pytest.raises(ValueError, match=r"same number of tensors, got 1 and 2"):
        ema_update_(target=[torch.zeros(2)], online=[torch.ones(2), torch.ones(2)], momentum=0.5)
    with pytest.raises(ValueError, match=r"tensor 0 must have the same shape .* \(2,\) and \(3,\)"):
        ema_update_(target=[torch.zeros(2)], online=[torch.ones(3)], momentum=0.5)


def test_ema_update_takes_target_and_online_by_keyword_only() -> None:
    """Issue 10.6: lightly's positional order ``update_momentum(model, model_ema, m)`` silently
    pulled the online network towards the copy; positional arguments are a TypeError now."""
    model, model_ema = nn.Linear(3, 2), nn.Linear(3, 2)
    before = copy.deepcopy(model)
    with pytest.raises(TypeError, match=r"takes 0 positional arguments but 2"):
        ema_update_(model, model_ema, momentum=0.5)  # type: ignore[misc]
    assert _state_equal(model, before)


def test_ema_update_refuses_a_trained_target_next_to_a_frozen_online() -> None:
    """Issue 10.6: the roles swapped by keyword (``target`` the trained network, ``online``
    the frozen copy, as lightly's argument order suggests) raise instead of pulling the
    trained network towards the copy."""
    model = _net(0)
    model_ema = copy.deepcopy(model).requires_grad_(False)
    _train_step(model, seed=1)
    before = copy.deepcopy(model)
    with pytest.raises(ValueError, match=r"target and online look swapped.*ema_update_\(target="):
        ema_update_(target=model, online=model_ema, momentum=0.5)
    assert _state_equal(model, before)  # nothing was written
    params, frozen = list(model.parameters()), [p.detach() for p in model_ema.parameters()]
    with pytest.raises(ValueError, match=r"target and online look swapped"):
        ema_update_(target=params, online=frozen, momentum=0.5)
    assert _state_equal(model, before)
    # the right roles: the copy moves towards the trained network
    ema_update_(target=model_ema, online=model, momentum=0.0)
    assert all(
        torch.equal(e, o) for e, o in zip(model_ema.parameters(), model.parameters(), strict=True)
    )
    # both trainable (e.g. an unfrozen deepcopy) or both frozen: allowed, as before
    ema_update_(target=nn.Linear(3, 2), online=nn.Linear(3, 2), momentum=0.5)
    ema_update_(
        target=nn.Linear(3, 2).requires_grad_(False),
        online=nn.Linear(3, 2).requires_grad_(False),
        momentum=0.5,
    )


@pytest.mark.parametrize("momentum", [0.9, 0.5])
def test_default_buffers_reproduce_the_original_moco_update(momentum: float) -> None:
    """Issue 10.7: the default buffer policy reproduces MoCo / BYOL over several steps with
    BatchNorm. facebookresearch/moco ``_momentum_update_key_encoder`` averages parameters only
    (``param_k.mul_(m).add_(param_q.mul(1 - m))``); the key encoder runs in training mode, so
    its running statistics come from its own forward passes (BYOL: ``target_state`` is
    returned by the target's own ``forward.apply(..., is_training=True)``)."""
    online = _net(0)
    key = copy.deepcopy(online).requires_grad_(False)  # the original's key encoder
    ema = EMA(online, momentum=momentum)  # default buffers
    for step in range(6):
        _train_step(online, seed=step)  # optimizer step + the online network's statistics
        with torch.no_grad():  # the original's update, then the key forward in training mode
            for q, k in zip(online.parameters(), key.parameters(), strict=True):
                k.mul_(momentum).add_(q.mul(1.0 - momentum))
        ema.update(online)
        x = torch.randn(
            8, 5, generator=torch.Generator().manual_seed(50 + step), dtype=torch.float64
        )
        with torch.no_grad():
            key.train()(x)
            ema.train()(x)
    ours, original = ema.module.state_dict(), key.state_dict()
    assert ours.keys() == original.keys()
    for name in original:
        torch.testing.assert_close(ours[name], original[name], rtol=1e-13, atol=1e-14)
    # ... which the online network's statistics (the previous default "copy") are not
    assert not torch.allclose(ours["1.running_mean"], online.state_dict()["1.running_mean"])
    assert int(ours["1.num_batches_tracked"]) == 6  # the copy's own 6 forward passes


# ------------------------------------------------------------------------------ EMA
def test_ema_copy_is_frozen_and_independent() -> None:
    online = _net(0)
    online(torch.randn(4, 5, dtype=torch.float64)).sum().backward()
    ema = EMA(online)
    assert ema.module is not online
    assert _state_equal(ema.module, online)
    assert all(not p.requires_grad and p.grad is None for p in ema.parameters())
    assert all(p.requires_grad for p in online.parameters())  # the online model is untouched
    assert all(
        p.data_ptr() != q.data_ptr()
        for p, q in zip(ema.parameters(), online.parameters(), strict=True)
    )
    # a backward pass through the online network leaves the copy without gradient
    x = torch.randn(4, 5, dtype=torch.float64)
    (online(x) - ema(x)).pow(2).sum().backward()
    assert all(p.grad is None for p in ema.parameters())
    # forward delegates to the copy
    ema.eval()
    assert torch.equal(ema(x), ema.module(x))
    assert not ema.module.training


def test_ema_update_matches_loop_with_schedule() -> None:
    online = _net(0)
    K = 5
    ema = EMA(online, momentum=0.9, final_momentum=0.99, total_steps=K, buffers="keep")
    expected = [p.detach().clone() for p in online.parameters()]
    for k in range(K + 2):
        m = ema.momentum
        assert m == cosine_schedule(k, K, 0.9, 0.99)
        assert ema.step == k
        _train_step(online, seed=k)
        ema.update(online)
        _loop_ema(expected, [p.detach() for p in online.parameters()], m)
        for p, e in zip(ema.parameters(), expected, strict=True):
            torch.testing.assert_close(p, e, rtol=0, atol=1e-14)
    assert ema.momentum == 0.99  # clamped at the end of the schedule
    assert ema.step == K + 2


def test_ema_constant_momentum_and_functional_equality() -> None:
    online = _net(0)
    ema = EMA(online, momentum=0.8)
    twin = copy.deepcopy(online)
    for k in range(3):
        assert ema.momentum == 0.8
        _train_step(online, seed=k)
        ema.update(online)
        ema_update_(target=twin, online=online, momentum=0.8)
    assert _state_equal(ema.module, twin)


def test_ema_buffers_copy() -> None:
    online = _net(0)
    ema = EMA(online, momentum=0.5, buffers="copy")
    _train_step(online, seed=1)
    ema.update(online)
    bn_e, bn_o = ema.module[1], online[1]
    assert torch.equal(bn_e.running_mean, bn_o.running_mean)
    assert torch.equal(bn_e.running_var, bn_o.running_var)
    assert bn_e.num_batches_tracked.dtype == torch.long
    assert int(bn_e.num_batches_tracked) == int(bn_o.num_batches_tracked) == 1
    # parameters are averaged, not copied
    assert not torch.equal(ema.module[0].weight, online[0].weight)


def test_ema_buffers_average() -> None:
    online = _net(0)
    ema = EMA(online, momentum=0.75, buffers="average")
    mean0 = ema.module[1].running_mean.clone()
    var0 = ema.module[1].running_var.clone()
    _train_step(online, seed=1)
    _train_step(online, seed=2)
    ema.update(online)
    bn_e, bn_o = ema.module[1], online[1]
    torch.testing.assert_close(
        bn_e.running_mean, 0.75 * mean0 + 0.25 * bn_o.running_mean, rtol=0, atol=1e-15
    )
    torch.testing.assert_close(
        bn_e.running_var, 0.75 * var0 + 0.25 * bn_o.running_var, rtol=0, atol=1e-15
    )
    # the integer counter is copied, never averaged (0.75 * 0 + 0.25 * 2 would be 0.5)
    assert bn_e.num_batches_tracked.dtype == torch.long
    assert int(bn_e.num_batches_tracked) == 2


def test_ema_buffers_keep() -> None:
    online = _net(0)
    ema = EMA(online, momentum=0.5, buffers="keep")
    before = {k: v.clone() for k, v in ema.module.named_buffers()}
    _train_step(online, seed=1)
    ema.update(online)
    for name, buf in ema.module.named_buffers():
        assert torch.equal(buf, before[name])  # untouched, integer counter included
    # ... while the copy's own forward in training mode still updates them (MoCo / BYOL)
    ema.module.train()
    with torch.no_grad():
        ema(torch.randn(8, 5, dtype=torch.float64))
    assert int(ema.module[1].num_batches_tracked) == 1


def test_ema_state_dict_round_trip_is_bit_identical() -> None:
    K, k, more = 10, 4, 5

    def run(ema: EMA, online: nn.Module, steps: range) -> None:
        for s in steps:
            _train_step(online, seed=100 + s)
            ema.update(online)

    # uninterrupted
    online_a = _net(0)
    ema_a = EMA(online_a, momentum=0.9, total_steps=K, buffers="average")
    run(ema_a, online_a, range(k + more))

    # interrupted after k updates, resumed from a serialized checkpoint into fresh objects
    online_b = _net(0)
    ema_b = EMA(online_b, momentum=0.9, total_steps=K, buffers="average")
    run(ema_b, online_b, range(k))
    buf = io.BytesIO()
    torch.save({"ema": ema_b.state_dict(), "online": online_b.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    assert "_extra_state" in ckpt["ema"] and ckpt["ema"]["_extra_state"] == {"step": k}
    assert any(key.startswith("module.") for key in ckpt["ema"])
    online_c = _net(7)  # different initial weights, overwritten by the checkpoint
    online_c.load_state_dict(ckpt["online"])
    ema_c = EMA(online_c, momentum=0.9, total_steps=K, buffers="average")
    assert ema_c.step == 0
    ema_c.load_state_dict(ckpt["ema"])
    assert ema_c.step == k
    assert ema_c.momentum == ema_b.momentum
    run(ema_c, online_c, range(k, k + more))

    assert ema_c.step == ema_a.step == k + more
    assert _state_equal(ema_c, ema_a)
    assert _state_equal(online_c, online_a)


def test_ema_half_precision_model() -> None:
    online = nn.Linear(4, 3).to(torch.bfloat16)
    ema = EMA(online, momentum=0.5)
    before = ema.module.weight.double()
    with torch.no_grad():
        online.weight.add_(1.0)
    ema.update(online)
    assert ema.module.weight.dtype == torch.bfloat16
    # the lerp is computed in bfloat16: one rounding away from the exact midpoint
    exact = 0.5 * before + 0.5 * online.weight.double()
    err = (ema.module.weight.double() - exact).abs() / exact.abs().clamp_min(1e-3)
    assert err.max() <= 2**-8


def test_ema_repr() -> None:
    ema = EMA(nn.Linear(2, 2), momentum=0.99, total_steps=100)
    assert "momentum=0.99, final_momentum=1.0, total_steps=100, buffers='keep', step=0" in repr(ema)


def test_ema_errors() -> None:
    model = nn.Linear(3, 2)
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module, got Tensor"):
        EMA(torch.zeros(3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\], got 1.1"):
        EMA(model, momentum=1.1)
    with pytest.raises(ValueError, match=r"final_momentum must be in \[0, 1\], got -1.0"):
        EMA(model, final_momentum=-1.0)
    with pytest.raises(ValueError, match=r"total_steps must be an int > 0, got 0"):
        EMA(model, total_steps=0)
    with pytest.raises(TypeError, match=r"total_steps must be an int, got float"):
        EMA(model, total_steps=10.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"buffers must be one of 'copy', 'average', 'keep'"):
        EMA(model, buffers="none")  # type: ignore[arg-type]
    ema = EMA(model)
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module, got list"):
        ema.update([torch.zeros(2, 3)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"parameter weight must have the same shape"):
        ema.update(nn.Linear(4, 2))
    assert ema.step == 0  # a failed update does not advance the schedule
    state = ema.state_dict()
    state["_extra_state"] = {"step": -1}
    with pytest.raises(ValueError, match=r"EMA extra state must be a dict with an int 'step'"):
        ema.load_state_dict(state)
