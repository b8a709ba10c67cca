"""EMA and ``gather_distributed`` losses with FSDP2 (``fully_shard``) on gloo, W = 2 and W = 3.

FSDP2 shards every parameter along dim 0 into a DTensor; the layers below have 7 output rows so
the shards are uneven at both W. The references are the same model trained without sharding:
on the global batch in one process (EMA) and under DDP (losses), in float64 to 1e-10.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from sslosses import EMA
from sslosses.functional import barlow_twins_loss, ema_update_, nt_xent

fsdp = pytest.importorskip(
    "torch.distributed.fsdp", reason="FSDP2 needs torch.distributed.fsdp (torch >= 2.6)"
)
if not hasattr(fsdp, "fully_shard"):  # pragma: no cover - torch 2.4/2.5
    pytest.skip("torch.distributed.fsdp.fully_shard needs torch >= 2.6", allow_module_level=True)
if not hasattr(torch.cpu.Stream(), "record_event"):  # pragma: no cover - torch 2.6 on CPU
    # FSDP2's all-gather records an event on the current stream; torch 2.6's CPU stream has no
    # record_event, so fully_shard cannot run on CPU/gloo there (it can on CUDA). These tests run
    # wherever it can (torch 2.13 and 2.14.1 here).
    pytest.skip(
        "this torch's FSDP2 cannot run on CPU (torch.cpu.Stream has no record_event)",
        allow_module_level=True,
    )

F64 = torch.float64
TOL = {"rtol": 1e-10, "atol": 1e-10}
STEPS = 4
N_PER_RANK = 3  # equal local batches: the mean of the local means is the global mean
SIZES = {2: [3, 5], 3: [3, 1, 4]}  # unequal per-rank batch sizes for the losses


def _model() -> nn.Sequential:
    torch.manual_seed(3)  # the same initial weights on every rank and in every case
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 7)).to(F64)


def _shard(model: nn.Module) -> nn.Module:
    """FSDP2 the usual way: each block, then the root."""
    for layer in model.children():
        if isinstance(layer, nn.Linear):
            fsdp.fully_shard(layer)
    fsdp.fully_shard(model)
    return model


def _full(module: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters gathered from the shards (every rank gets the whole tensors)."""
    out = {}
    for name, p in module.named_parameters():
        full = p.full_tensor() if hasattr(p, "full_tensor") else p
        out[name] = full.detach().clone()
    return out


def _close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], **TOL, msg=name)


# --------------------------------------------------------------------------------- EMA
def _global_batches(world: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(11)
    return [torch.randn(world * N_PER_RANK, 5, generator=gen, dtype=F64) for _ in range(STEPS)]


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor) -> None:
    opt.zero_grad()
    model(x).pow(2).mean().backward()
    opt.step()


def _ema_case(rank: int, world: int) -> dict[str, Any]:
    rows = slice(rank * N_PER_RANK, (rank + 1) * N_PER_RANK)
    batches = _global_batches(world)
    kwargs: dict[str, Any] = {"momentum": 0.7, "final_momentum": 0.95, "total_steps": STEPS}
    # the reference: one process, the whole global batch, no sharding
    ref = _model()
    ref_ema = EMA(ref, **kwargs)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.3)
    # sharded: EMA built from the unsharded model, then both sharded the same way
    online = _model()
    ema = EMA(online, **kwargs)
    _shard(online)
    _shard(ema.module)
    opt = torch.optim.SGD(online.parameters(), lr=0.3)
    for x in batches[:-1]:
        _train_step(ref, ref_opt, x)
        ref_ema.update(ref)
        _train_step(online, opt, x[rows])
        ema.update(online)
    out: dict[str, Any] = {
        "sharded": all(type(p).__name__ == "DTensor" for p in ema.module.parameters()),
        "online": (_full(online), _full(ref)),
        "ema": (_full(ema.module), _full(ref_ema.module)),
        "step": ema.step,
    }
    with torch.no_grad():
        out["forward"] = (ema(batches[0][rows]), ref_ema(batches[0][rows]))
    # state_dict round trip: a fresh sharded EMA (other weights) loads the sharded state ...
    state = ema.state_dict()
    out["state_is_sharded"] = all(
        type(v).__name__ == "DTensor" for k, v in state.items() if k != "_extra_state"
    )
    torch.manual_seed(100 + rank)
    fresh = EMA(nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 7)).to(F64), **kwargs)
    _shard(fresh.module)
    fresh.load_state_dict(state)
    out["loaded"] = (_full(fresh.module), _full(ema.module), fresh.step)
    # the full (unsharded) state dict, e.g. to evaluate the teacher on one device, loads into a
    # plain EMA
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(ema, options=StateDictOptions(full_state_dict=True))
    plain = EMA(nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 7)).to(F64), **kwargs)
    plain.load_state_dict(full)
    out["full_state"] = (_full(plain.module), _full(ref_ema.module), plain.step)
    # ... and continues exactly like the uninterrupted EMA and the unsharded reference
    _train_step(ref, ref_opt, batches[-1])
    ref_ema.update(ref)
    _train_step(online, opt, batches[-1][rows])
    ema.update(online)
    fresh.update(online)
    out["continued"] = (_full(fresh.module), _full(ema.module), _full(ref_ema.module))
    return out


def test_sharded_ema_matches_unsharded(dist_pool_w: Any) -> None:
    for out in dist_pool_w.run(_ema_case):
        assert out["sharded"] and out["state_is_sharded"]
        assert out["step"] == STEPS - 1
        _close(*out["online"])  # the training itself agrees (FSDP averages gradients)
        _close(*out["ema"])
        torch.testing.assert_close(*out["forward"], **TOL)
        loaded, original, step = out["loaded"]
        _close(loaded, original)
        assert step == STEPS - 1
        unsharded, reference, step = out["full_state"]
        _close(unsharded, reference)
        assert step == STEPS - 1
        resumed, uninterrupted, reference = out["continued"]
        _close(resumed, uninterrupted)
        _close(uninterrupted, reference)


def _fsdp_errors_case(rank: int, world: int) -> list[str]:
    messages = []
    try:
        EMA(_shard(_model()))
    except ValueError as e:
        messages.append(str(e))
    online = _shard(_model())
    plain = _model().requires_grad_(False)
    pairs: list[tuple[Any, Any]] = [
        (plain, online),
        ([p.detach() for p in plain.parameters()], [p.detach() for p in online.parameters()]),
    ]
    # weights sharded along dim 1 instead of dim 0 (4 columns: even shards at W = 2)
    from torch.distributed.tensor import Shard

    other = nn.Sequential(nn.Linear(4, 6)).to(F64).requires_grad_(False)
    fsdp.fully_shard(other, shard_placement_fn=lambda p: Shard(p.ndim - 1))
    pairs.append((other, _shard(nn.Sequential(nn.Linear(4, 6)).to(F64))))
    for target, source in pairs:
        try:
            ema_update_(target=target, online=source, momentum=0.9)
        except ValueError as e:
            messages.append(str(e))
    return messages


def test_fsdp_misuse_raises_naming_fsdp(dist_pool: Any) -> None:
    for messages in dist_pool.run(_fsdp_errors_case):
        assert len(messages) == 4
        assert "wrapped with FSDP" in messages[0] and "ema.module" in messages[0]
        sharded = "is sharded (a DTensor, e.g. by FSDP fully_shard) in online only"
        assert f"parameter 0.weight {sharded}" in messages[1]
        assert f"tensor 0 {sharded}" in messages[2]
        assert "parameter 0.weight is sharded differently in target and online" in messages[3]
        assert "Shard(dim=1)" in messages[3] and "Shard(dim=0)" in messages[3]


# ------------------------------------------------------- losses inside FSDP vs DDP
def _loss(name: str, za: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
    if name == "nt_xent":
        return nt_xent(za, zb, temperature=0.5, gather_distributed=True)
    return barlow_twins_loss(za, zb, lambd=0.05, gather_distributed=True)


def _fsdp_vs_ddp_case(rank: int, world: int, name: str) -> dict[str, Any]:
    sizes = SIZES[world]
    start = sum(sizes[:rank])
    rows = slice(start, start + sizes[rank])
    gen = torch.Generator().manual_seed(5)
    views = [
        (
            torch.randn(sum(sizes), 5, generator=gen, dtype=F64),
            torch.randn(sum(sizes), 5, generator=gen, dtype=F64),
        )
        for _ in range(3)
    ]
    ddp = nn.parallel.DistributedDataParallel(_model())
    sharded = _shard(_model())
    opts = [torch.optim.SGD(m.parameters(), lr=0.2) for m in (ddp, sharded)]
    losses: list[tuple[float, float]] = []
    for xa, xb in views:
        step_losses = []
        for model, opt in zip((ddp, sharded), opts, strict=True):
            opt.zero_grad()
            loss = _loss(name, model(xa[rows]), model(xb[rows]))
            loss.backward()
            opt.step()
            step_losses.append(loss.item())
        losses.append((step_losses[0], step_losses[1]))
    return {"params": (_full(sharded), _full(ddp.module)), "losses": losses}


@pytest.mark.parametrize("name", ["nt_xent", "barlow_twins"])
def test_gathered_loss_trains_identically_under_fsdp_and_ddp(dist_pool_w: Any, name: str) -> None:
    for out in dist_pool_w.run(_fsdp_vs_ddp_case, name):
        for ddp_loss, fsdp_loss in out["losses"]:
            assert abs(ddp_loss - fsdp_loss) <= 1e-10 * max(1.0, abs(ddp_loss))
        fsdp_params, ddp_params = out["params"]
        _close(fsdp_params, ddp_params)
        moved = _full(_model())
        assert any(not torch.allclose(ddp_params[k], moved[k]) for k in moved)  # it trained


def test_unsharded_ema_is_untouched_by_the_fsdp_check() -> None:
    """Without a process group nothing is a DTensor: the plain path is unchanged."""
    online, target = _model(), _model().requires_grad_(False)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    expected = [
        0.25 * t + 0.75 * o for t, o in zip(target.parameters(), online.parameters(), strict=True)
    ]
    ema_update_(target=target, online=online, momentum=0.25)
    for t, e in zip(target.parameters(), expected, strict=True):
        torch.testing.assert_close(t, e, **TOL)
