r"""Exponential moving average of a network: BYOL's target, MoCo's key encoder, DINO's teacher.

:class:`EMA` holds a frozen copy of a model and moves it towards the model with
:func:`ema_update_` (one fused ``torch._foreach_lerp_`` over all parameters per step); its
momentum follows :func:`cosine_schedule`. The schedules (``cosine_schedule``,
``linear_warmup_schedule``) are defined in ``sslosses/schedules.py`` and re-exported here.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, get_args

import torch
from torch import Tensor, nn

from sslosses import _collectives
from sslosses._validation import (
    check_choice,
    check_positive_int,
    check_real,
)
from sslosses.schedules import cosine_schedule, linear_warmup_schedule
from sslosses.typing import BufferPolicy

__all__ = ["EMA", "cosine_schedule", "ema_update_", "linear_warmup_schedule"]

_BUFFER_POLICIES: tuple[BufferPolicy, ...] = get_args(BufferPolicy)


def _check_pairs(
    kind: str, target: Sequence[Tensor], online: Sequence[Tensor], names: Sequence[str]
) -> None:
    if len(target) != len(online):
        raise ValueError(
            f"target and online must have the same number of {kind}, "
            f"got {len(target)} and {len(online)}"
        )
    for name, t, o in zip(names, target, online, strict=True):
        if t.shape != o.shape:
            raise ValueError(
                f"{kind[:-1]} {name} must have the same shape in target and online, "
                f"got {tuple(t.shape)} and {tuple(o.shape)}"
            )
        if t.dtype != o.dtype:
            raise TypeError(
                f"{kind[:-1]} {name} must have the same dtype in target and online, "
                f"got {t.dtype} and {o.dtype}"
            )
        if t.device != o.device:
            raise ValueError(
                f"{kind[:-1]} {name} must be on the same device in target and online, "
                f"got {t.device} and {o.device}"
            )


def _refuse_fsdp(model: nn.Module) -> None:
    """EMA deep-copies its model, which FSDP2 forbids: say what to do instead."""
    fsdp = _collectives.sharded_types()[1]
    if fsdp and any(isinstance(m, fsdp) for m in model.modules()):
        raise ValueError(
            "model is wrapped with FSDP (torch.distributed.fsdp.fully_shard), which cannot be "
            "deep-copied: build EMA(model) from the unsharded model first, then apply the same "
            "fully_shard calls to ema.module as to model"
        )


def _check_sharding(
    kind: str, target: Sequence[Tensor], online: Sequence[Tensor], names: Sequence[str]
) -> None:
    """A sharded (DTensor) tensor averages only with one sharded the same way."""
    dtensor = _collectives.sharded_types()[0]
    if not dtensor:
        return
    for name, t, o in zip(names, target, online, strict=True):
        t_sharded, o_sharded = isinstance(t, dtensor), isinstance(o, dtensor)
        if t_sharded != o_sharded:
            which = "target" if t_sharded else "online"
            raise ValueError(
                f"{kind[:-1]} {name} is sharded (a DTensor, e.g. by FSDP fully_shard) in "
                f"{which} only: shard target (ema.module) with the same fully_shard calls as "
                "online, or neither"
            )
        if t_sharded and (
            t.placements != o.placements  # type: ignore[attr-defined]
            or t.device_mesh != o.device_mesh  # type: ignore[attr-defined]
        ):
            raise ValueError(
                f"{kind[:-1]} {name} is sharded differently in target and online (FSDP "
                f"placements {t.placements} and {o.placements}): shard both with the same "  # type: ignore[attr-defined]
                "fully_shard calls and mesh"
            )


def _tensor_list(name: str, value: Sequence[object]) -> list[Tensor]:
    out: list[Tensor] = []
    for i, t in enumerate(value):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}[{i}] must be a torch.Tensor, got {type(t).__name__}")
        out.append(t)
    return out


@torch.no_grad()
def _lerp_(target: list[Tensor], online: list[Tensor], weight: float) -> None:
    if target:
        torch._foreach_lerp_(target, online, weight)


@torch.no_grad()
def _copy_(target: list[Tensor], online: list[Tensor]) -> None:
    if target:
        torch._foreach_copy_(target, online)


def _check_direction(target: Sequence[Tensor], online: Sequence[Tensor]) -> None:
    """Refuse an update whose ``target`` is trained while ``online`` is frozen: swapped roles."""
    if any(t.requires_grad for t in target) and not any(o.requires_grad for o in online):
        raise ValueError(
            "target has parameters that require gradient while online has none: target and "
            "online look swapped. target is the moving-average copy (frozen) and online the "
            "trained network: lightly's update_momentum(model, model_ema, m) is "
            "ema_update_(target=model_ema, online=model, momentum=m). If they are not swapped, "
            "freeze the target first (target.requires_grad_(False)): a moving-average copy is "
            "not trained by gradient"
        )


def ema_update_(
    *,
    target: nn.Module | Sequence[Tensor],
    online: nn.Module | Sequence[Tensor],
    momentum: float,
    buffers: BufferPolicy = "keep",
) -> None:
    r"""Move ``target`` towards ``online`` in place: one exponential-moving-average step.

    .. math::
        \theta_\text{target} \leftarrow m \, \theta_\text{target} + (1 - m) \, \theta_\text{online}

    (the BYOL / MoCo convention: ``momentum=0.996`` keeps 99.6% of the target). All tensors are
    updated by one fused ``torch._foreach_lerp_(target, online, 1 - momentum)`` under
    :class:`torch.no_grad`; ``momentum=1`` leaves the target unchanged and ``momentum=0`` copies
    ``online`` exactly.

    **Argument order.** ``target`` and ``online`` are keyword-only, because the libraries
    disagree on the order: lightly's ``update_momentum(model, model_ema, m)`` names the trained
    network first and is ``ema_update_(target=model_ema, online=model, momentum=m)`` here.
    As a second guard, a ``target`` with parameters (tensors) that require gradient next to an
    ``online`` with none that do is refused as swapped.

    For modules, the floating-point parameters are averaged (paired by position in
    ``.parameters()``; the rare integer parameter is copied) and the buffers (paired by
    position in ``.buffers()``) follow ``buffers``:

    - ``"keep"`` (the default): no buffer is touched; the target's buffers change only through
      its own forward passes. This is what the original methods do: MoCo's
      ``_momentum_update_key_encoder``, BYOL's target update and DINO's teacher update average
      the parameters only (MoCo and BYOL run the target in training mode, so its BatchNorm
      statistics follow its own batches).
    - ``"copy"``: every buffer is copied from ``online`` (BatchNorm running statistics track
      the online network's, as timm's ``ModelEmaV3``).
    - ``"average"``: floating-point buffers are averaged like the parameters; integer and bool
      buffers (BatchNorm's ``num_batches_tracked``) are copied, never averaged.

    For sequences of tensors every tensor is averaged; all must be floating-point and
    ``buffers`` is not used.

    Args:
        target: the module (or tensors) updated in place.
        online: the module (or tensors) it moves towards, with the same structure.
        momentum: the weight :math:`m \in [0, 1]` kept from ``target``.
        buffers: ``"keep"`` | ``"copy"`` | ``"average"``, for modules. Default: ``"keep"``.

    Returns:
        ``None``; ``target`` is modified in place.

    Raises:
        TypeError: if ``target`` and ``online`` are not both modules or both sequences of
            tensors, a sequence holds a non-tensor or a non-floating tensor, a pair's dtypes
            differ, or ``momentum`` is not a real number.
        ValueError: if the numbers of parameters (buffers, tensors) differ, a pair's shapes or
            devices differ, one of a pair is sharded by FSDP (a DTensor) and the other is not
            or is sharded differently, ``momentum`` is outside :math:`[0, 1]`, ``buffers`` is
            unknown, or ``target`` requires gradient while ``online`` does not (swapped
            arguments).

    Examples:
        >>> import torch
        >>> from sslosses.functional import ema_update_
        >>> online, target = torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)
        >>> ema_update_(target=target, online=online, momentum=0.0)  # momentum 0: a copy
        >>> torch.equal(target.weight, online.weight)
        True
        >>> t, o = [torch.zeros(3)], [torch.ones(3)]
        >>> ema_update_(target=t, online=o, momentum=0.75)
        >>> t[0]
        tensor([0.2500, 0.2500, 0.2500])

    References:
        Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, arXiv:2006.07733.
        He et al., "Momentum Contrast", CVPR 2020, arXiv:1911.05722; official code:
        facebookresearch/moco, ``moco/builder.py`` (``_momentum_update_key_encoder``).
    """
    momentum = check_real("momentum", momentum, low=0, high=1)
    buffers = check_choice("buffers", buffers, _BUFFER_POLICIES)
    weight = 1.0 - momentum
    if isinstance(target, nn.Module) and isinstance(online, nn.Module):
        named = list(target.named_parameters())
        t_params: list[Tensor] = [p for _, p in named]
        o_params: list[Tensor] = list(online.parameters())
        _check_pairs("parameters", t_params, o_params, [n for n, _ in named])
        _check_sharding("parameters", t_params, o_params, [n for n, _ in named])
        _check_direction(t_params, o_params)
        to_lerp: list[Tensor] = []
        from_lerp: list[Tensor] = []
        to_copy: list[Tensor] = []
        from_copy: list[Tensor] = []
        for t, o in zip(t_params, o_params, strict=True):
            if t.is_floating_point():
                to_lerp.append(t)
                from_lerp.append(o)
            else:  # integer parameters cannot be averaged
                to_copy.append(t)
                from_copy.append(o)
        if buffers != "keep":
            named_bufs = list(target.named_buffers())
            t_bufs = [b for _, b in named_bufs]
            o_bufs = list(online.buffers())
            _check_pairs("buffers", t_bufs, o_bufs, [n for n, _ in named_bufs])
            _check_sharding("buffers", t_bufs, o_bufs, [n for n, _ in named_bufs])
            for t, o in zip(t_bufs, o_bufs, strict=True):
                if buffers == "average" and t.is_floating_point():
                    to_lerp.append(t)
                    from_lerp.append(o)
                else:
                    to_copy.append(t)
                    from_copy.append(o)
        _lerp_(to_lerp, from_lerp, weight)
        _copy_(to_copy, from_copy)
        return
    if (
        isinstance(target, (nn.Module, Tensor))
        or isinstance(online, (nn.Module, Tensor))
        or not isinstance(target, Sequence)
        or not isinstance(online, Sequence)
    ):
        raise TypeError(
            "target and online must both be nn.Module or both sequences of tensors, "
            f"got {type(target).__name__} and {type(online).__name__}"
        )
    t_list = _tensor_list("target", target)
    o_list = _tensor_list("online", online)
    for i, t in enumerate(t_list):
        if not t.is_floating_point():
            raise TypeError(f"target[{i}] must have a floating-point dtype, got {t.dtype}")
    _check_pairs("tensors", t_list, o_list, [str(i) for i in range(len(t_list))])
    _check_sharding("tensors", t_list, o_list, [str(i) for i in range(len(t_list))])
    _check_direction(t_list, o_list)
    _lerp_(t_list, o_list, weight)


class EMA(nn.Module):
    r"""A frozen copy of a model that follows it by exponential moving average.

    The BYOL target network, MoCo's key (momentum) encoder and DINO's teacher. At construction
    ``model`` is deep-copied into ``module``, whose parameters get ``requires_grad=False``;
    each :meth:`update` then moves the copy towards ``model``:

    .. math::
        \theta_\text{ema} \leftarrow m_k \, \theta_\text{ema} + (1 - m_k) \, \theta_\text{model},
        \qquad m_k = \begin{cases}
            \text{momentum} & \text{total\_steps is None} \\
            \operatorname{cosine\_schedule}(k, K, \text{momentum}, \text{final\_momentum})
            & \text{otherwise}
        \end{cases}

    where :math:`k` is the number of updates done so far. The update is
    :func:`sslosses.functional.ema_update_`: one fused ``torch._foreach_lerp_`` over all
    floating-point parameters, under :class:`torch.no_grad`.

    **Which tensors are averaged** (``buffers``): parameters always; buffers by policy.
    ``"keep"`` (default) leaves the buffers to the copy's own forward passes, as the original
    MoCo, BYOL and DINO code does (their momentum update touches parameters only; MoCo and BYOL
    run the target in training mode, so its BatchNorm statistics follow its own batches);
    ``"copy"`` copies every buffer from ``model`` (BatchNorm running statistics are
    the online network's, as timm's ``ModelEmaV3``); ``"average"`` averages floating-point
    buffers with the same momentum. Integer buffers such as ``num_batches_tracked`` are copied
    under ``"copy"`` and ``"average"``, never averaged.

    **State**: :meth:`~torch.nn.Module.state_dict` holds the copy's weights and buffers (keys
    ``module.*``) and the update counter (``_extra_state``), so loading a checkpoint into a fresh
    ``EMA`` and continuing reproduces an uninterrupted run bit for bit. The counter is a Python
    ``int``: no device synchronization per step.

    **Gradients and optimizers**: the copy's parameters do not require gradient, but they are
    still :class:`torch.nn.Parameter` s, so an ``EMA`` registered inside a wrapper module shows up
    in ``wrapper.parameters()``. They never get a ``.grad``, so optimizers skip them; to keep them
    out of the optimizer altogether, pass ``[p for p in wrapper.parameters() if p.requires_grad]``
    (or keep the ``EMA`` outside the module given to the optimizer and to DDP).

    **Mode and distributed**: the copy keeps ``model``'s training mode (MoCo and BYOL run their
    target in training mode); ``ema.eval()`` switches it as for any module. Every rank holds its
    own copy; with DDP the online weights agree across ranks, so the copies do too. With FSDP
    (``fully_shard``), build the ``EMA`` from the unsharded model and shard ``module`` the
    same way as ``model``; each rank then averages its own shards.
    ``forward`` simply calls ``module``.

    Args:
        model: the online network to copy and follow.
        momentum: the momentum :math:`m \in [0, 1]` kept from the copy (the schedule's start
            when ``total_steps`` is given). Default: ``0.996``.
        final_momentum: the momentum reached after ``total_steps`` updates; used only when
            ``total_steps`` is given. Default: ``1.0``.
        total_steps: the length of the cosine schedule (the number of training steps), or
            ``None`` for a constant ``momentum``. Default: ``None``.
        buffers: ``"keep"`` | ``"copy"`` | ``"average"``, see above. Default: ``"keep"``.

    Raises:
        TypeError: if ``model`` is not a :class:`torch.nn.Module` or a hyperparameter has the
            wrong type.
        ValueError: if ``momentum`` or ``final_momentum`` is outside :math:`[0, 1]`,
            ``total_steps <= 0``, ``buffers`` is unknown, or ``model`` is already wrapped with
            FSDP (``fully_shard``), which cannot be deep-copied.

    Examples:
        >>> import torch
        >>> from sslosses import EMA
        >>> online = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.BatchNorm1d(4))
        >>> target = EMA(online, momentum=0.99, total_steps=1000)
        >>> target.momentum
        0.99
        >>> any(p.requires_grad for p in target.parameters())
        False
        >>> opt = torch.optim.SGD(online.parameters(), lr=0.1)
        >>> x = torch.randn(16, 8)
        >>> loss = online(x).pow(2).mean()
        >>> loss.backward()
        >>> opt.step()
        >>> target.update(online)  # after the optimizer step
        >>> target.step, target.momentum > 0.99
        (1, True)
        >>> with torch.no_grad():
        ...     z = target(x)  # forward through the copy
        >>> z.shape
        torch.Size([16, 4])

    References:
        Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, arXiv:2006.07733; official
        code: google-deepmind/deepmind-research, ``byol/byol_experiment.py``.
        He et al., "Momentum Contrast", CVPR 2020, arXiv:1911.05722; official code:
        facebookresearch/moco, ``moco/builder.py``.
        timm ``ModelEmaV3`` (huggingface/pytorch-image-models, ``timm/utils/model_ema.py``).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        momentum: float = 0.996,
        final_momentum: float = 1.0,
        total_steps: int | None = None,
        buffers: BufferPolicy = "keep",
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        _refuse_fsdp(model)
        self.base_momentum = check_real("momentum", momentum, low=0, high=1)
        self.final_momentum = check_real("final_momentum", final_momentum, low=0, high=1)
        self.total_steps = (
            None if total_steps is None else check_positive_int("total_steps", total_steps)
        )
        self.buffers_policy: BufferPolicy = check_choice("buffers", buffers, _BUFFER_POLICIES)
        self._step = 0
        self.module = copy.deepcopy(model)
        for p in self.module.parameters():
            p.requires_grad_(False)
            p.grad = None

    @property
    def step(self) -> int:
        """The number of :meth:`update` calls so far.

        Restored by :meth:`~torch.nn.Module.load_state_dict`.
        """
        return self._step

    @property
    def momentum(self) -> float:
        """The momentum the next :meth:`update` uses, as a Python ``float``."""
        if self.total_steps is None:
            return self.base_momentum
        return cosine_schedule(
            self._step, self.total_steps, self.base_momentum, self.final_momentum
        )

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the copy one step towards ``model`` and advance the schedule.

        Call it after the optimizer step. ``model`` must have the architecture that was copied
        (the same parameters and buffers, in order, with equal shapes, dtypes and devices).

        Raises:
            TypeError: if ``model`` is not a module or a dtype differs from the copy's.
            ValueError: if the parameters or buffers do not match the copy's in number, shape
                or device, or one of a pair is sharded by FSDP (a DTensor) and the other is
                not or is sharded differently.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        ema_update_(
            target=self.module, online=model, momentum=self.momentum, buffers=self.buffers_policy
        )
        self._step += 1

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Call the averaged copy: ``ema(x)`` is ``ema.module(x)``."""
        return self.module(*args, **kwargs)

    def get_extra_state(self) -> dict[str, int]:
        """Return the step count, saved in :meth:`~torch.nn.Module.state_dict`."""
        return {"step": self._step}

    def set_extra_state(self, state: Any) -> None:
        """Restore the step count (called by :meth:`~torch.nn.Module.load_state_dict`)."""
        step = state.get("step") if isinstance(state, dict) else None
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(
                f"EMA extra state must be a dict with an int 'step' >= 0, got {state!r}"
            )
        self._step = step

    def extra_repr(self) -> str:
        return (
            f"momentum={self.base_momentum}, final_momentum={self.final_momentum}, "
            f"total_steps={self.total_steps}, buffers={self.buffers_policy!r}, step={self._step}"
        )
