"""The empty-rank rule of every ``gather_distributed`` entry point, at W = 2 and W = 3 (gloo).

The rule (``docs/guides/distributed.rst``): with ``gather_distributed=True`` and W > 1 a rank
may hold no rows. It contributes nothing, and the result is exact: the mean over ranks of a
loss equals the single-process loss on the global batch, each rank's gradient divided by W is
its slice of the single-process gradient, and a component's state is the single-process state.
The batch-size minimum applies to the global batch and is checked right after the exchange of
batch sizes, so when the global batch is too small every rank raises the same ``ValueError``
(none is left waiting in a collective, which under NCCL hangs the job).

Each entry below maps row-aligned inputs (every tensor has the global batch's rows; a rank gets
its slice) to a value. ``kind`` says how the ranks' values combine: ``"mean"`` (a loss: the
mean over ranks), ``"rows"`` (per-sample: the ranks' rows concatenated) or ``"state"`` (a
component's state: the same on every rank).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

import sslosses
from sslosses.functional import (
    alignment_loss,
    barlow_twins_loss,
    dcl_loss,
    dclw_loss,
    dino_loss,
    ibot_patch_loss,
    info_nce,
    koleo_loss,
    lejepa_loss,
    mmcr_loss,
    nnclr_loss,
    nt_xent,
    sigreg_loss,
    sinkhorn,
    supcon_loss,
    swav_loss,
    tico_loss,
    uniformity_loss,
    vicreg_loss,
    vicreg_terms,
)

F64 = torch.float64
TOL = {"rtol": 1e-10, "atol": 1e-10}
SIZES = {2: [0, 3], 3: [2, 0, 3]}  # an empty rank first (offsets) and in the middle
K = 6  # prototypes / classes / feature dimension of every case


def _nt_xent(x: list[torch.Tensor], gather: bool, reduction: str = "mean") -> torch.Tensor:
    return nt_xent(x[0], x[1], temperature=0.5, gather_distributed=gather, reduction=reduction)


def _info_nce(x: list[torch.Tensor], gather: bool, **kw: Any) -> torch.Tensor:
    return info_nce(x[0], x[1], temperature=0.5, gather_distributed=gather, **kw)


def _queue() -> torch.Tensor:
    return torch.randn(4, K, generator=torch.Generator().manual_seed(3), dtype=F64)


def _swav(x: list[torch.Tensor], gather: bool) -> torch.Tensor:
    return swav_loss(x[:3], queue_scores=x[3:], epsilon=0.5, gather_distributed=gather)


def _dino(x: list[torch.Tensor], gather: bool) -> torch.Tensor:
    center = torch.linspace(-0.5, 0.5, K, dtype=F64)
    return dino_loss(x[:3], x[3:], center=center, gather_distributed=gather)


def _dino_sinkhorn(x: list[torch.Tensor], gather: bool) -> torch.Tensor:
    return dino_loss(x[:3], x[3:], centering="sinkhorn", gather_distributed=gather)


P = 3  # patches per image of the iBOT cases: K = 6 columns of a row are P = 3 patches x 2


def _ibot(x: list[torch.Tensor], gather: bool, mode: str, layout: str) -> torch.Tensor:
    """iBOT on rows (B, 6) read as (B, P=3, 2): scores of 3 patches, 2 outputs."""
    student, teacher = (t.reshape(-1, P, K // P) for t in x[:2])  # (B, P, 2)
    masks = x[2].reshape(-1, P, K // P)[..., 0] > 0  # (B, P)
    if layout == "rows":
        student, teacher = student[masks], teacher[masks]
    center = torch.tensor([0.25, -0.25], dtype=F64) if mode == "center" else None
    return ibot_patch_loss(
        student, teacher, masks, center=center, centering=mode, gather_distributed=gather
    )


def _center_patches(x: list[torch.Tensor], gather: bool) -> torch.Tensor:
    center = sslosses.DINOCenter(K // P, momentum=0.5, gather_distributed=gather, dtype=F64)
    center.update(x[0].reshape(-1, P, K // P))  # (B, P, K) patch tokens
    return center.center


def _center(x: list[torch.Tensor], gather: bool) -> torch.Tensor:
    center = sslosses.DINOCenter(K, momentum=0.5, gather_distributed=gather, dtype=F64)
    center.update(list(x[:2]))  # crops
    center.update(x[2])  # one (M, K) tensor
    return center.center


def _queue_push(x: list[torch.Tensor], gather: bool) -> torch.Tensor:
    queue = sslosses.MoCoQueue(4, K, gather_distributed=gather, dtype=F64)
    queue.push(x[0])
    return queue.features()


def _tico_covariance(x: list[torch.Tensor], gather: bool) -> torch.Tensor:
    covariance = sslosses.TiCoCovariance(K, beta=0.5, gather_distributed=gather, dtype=F64)
    covariance.update(x[0])
    covariance.update(x[1])
    return covariance.covariance


def _tico(x: list[torch.Tensor], gather: bool, reduction: str = "mean") -> torch.Tensor:
    running = torch.linspace(0.0, 0.1, K * K, dtype=F64).reshape(K, K)
    return tico_loss(x[0], x[1], running, gather_distributed=gather, reduction=reduction)


def _directions() -> torch.Tensor:
    a = torch.randn(K, 4, generator=torch.Generator().manual_seed(5), dtype=F64)
    return a / a.norm(dim=0)


def _supcon(x: list[torch.Tensor], gather: bool, **kw: Any) -> torch.Tensor:
    """SupCon on 2 views with labels read off a third row-aligned input (3 classes)."""
    labels = (x[2][:, 0].detach() > 0).long() + (x[2][:, 1].detach() > 0).long()
    return supcon_loss(x[:2], labels, temperature=0.5, gather_distributed=gather, **kw)


Case = tuple[Callable[[list[torch.Tensor], bool], torch.Tensor], int, int, str]
# name: (function, number of row-aligned inputs, minimum global batch, kind)
CASES: dict[str, Case] = {
    "nt_xent": (_nt_xent, 2, 2, "mean"),
    "nt_xent sum": (lambda x, g: _nt_xent(x, g, "sum"), 2, 2, "mean"),
    "nt_xent none": (lambda x, g: _nt_xent(x, g, "none"), 2, 2, "rows"),
    "info_nce in-batch": (_info_nce, 2, 2, "mean"),
    "info_nce queue": (lambda x, g: _info_nce(x, g, negatives=_queue()), 2, 1, "mean"),
    "info_nce queue only": (
        lambda x, g: _info_nce(x, g, negatives=_queue(), in_batch_negatives=False),
        2,
        1,
        "mean",
    ),
    "sinkhorn": (lambda x, g: sinkhorn(x[0], epsilon=0.5, gather_distributed=g), 1, 1, "rows"),
    "swav_loss + queue": (_swav, 5, 1, "mean"),
    "barlow_twins_loss": (
        lambda x, g: barlow_twins_loss(x[0], x[1], gather_distributed=g),
        2,
        2,
        "mean",
    ),
    "vicreg_loss": (lambda x, g: vicreg_loss(x[0], x[1], gather_distributed=g), 2, 2, "mean"),
    "vicreg_terms": (
        lambda x, g: vicreg_terms(x[0], x[1], gather_distributed=g).covariance,
        2,
        2,
        "mean",
    ),
    "dino_loss": (_dino, 5, 1, "mean"),
    "koleo_loss": (lambda x, g: koleo_loss(x[0], gather_distributed=g), 1, 2, "mean"),
    "koleo_loss chunked sum": (
        lambda x, g: koleo_loss(x[0], gather_distributed=g, reduction="sum", chunk_size=1),
        1,
        2,
        "mean",
    ),
    "koleo_loss none": (
        lambda x, g: koleo_loss(x[0], gather_distributed=g, reduction="none"),
        1,
        2,
        "rows",
    ),
    "dino_loss sinkhorn": (_dino_sinkhorn, 5, 1, "mean"),
    "ibot_patch_loss center": (lambda x, g: _ibot(x, g, "center", "patches"), 3, 1, "mean"),
    "ibot_patch_loss sinkhorn": (lambda x, g: _ibot(x, g, "sinkhorn", "patches"), 3, 1, "mean"),
    "ibot_patch_loss sinkhorn rows": (lambda x, g: _ibot(x, g, "sinkhorn", "rows"), 3, 1, "mean"),
    "supcon_loss": (_supcon, 3, 2, "mean"),
    "supcon_loss one chunked sum": (
        lambda x, g: _supcon(x, g, contrast_mode="one", chunk_size=1, reduction="sum"),
        3,
        2,
        "mean",
    ),
    "supcon_loss none no labels": (
        lambda x, g: supcon_loss(x[:2], gather_distributed=g, reduction="none"),
        2,
        2,
        "rows",
    ),
    "DINOCenter.update patches": (_center_patches, 1, 1, "state"),
    "DINOCenter.update": (_center, 3, 1, "state"),
    "MoCoQueue.push": (_queue_push, 1, 0, "state"),
    "sigreg_loss": (
        lambda x, g: sigreg_loss(x[0], projections=_directions(), gather_distributed=g),
        1,
        1,
        "mean",
    ),
    "sigreg_loss drawn": (
        lambda x, g: sigreg_loss(
            x[0], num_slices=3, generator=torch.Generator().manual_seed(2), gather_distributed=g
        ),
        1,
        1,
        "mean",
    ),
    "lejepa_loss": (
        lambda x, g: lejepa_loss(x[:2], x[2:], projections=_directions(), gather_distributed=g),
        3,
        1,
        "mean",
    ),
    "tico_loss": (_tico, 2, 1, "mean"),
    "tico_loss sum": (lambda x, g: _tico(x, g, "sum"), 2, 1, "mean"),
    "tico_loss none": (lambda x, g: _tico(x, g, "none"), 2, 1, "rows"),
    "TiCoCovariance.update": (_tico_covariance, 2, 1, "state"),
    "mmcr_loss": (
        lambda x, g: mmcr_loss(x[:2], target_views=x[2:], lambd=0.1, gather_distributed=g),
        3,
        1,
        "mean",
    ),
    "nnclr_loss": (lambda x, g: nnclr_loss(*x, _queue(), gather_distributed=g), 4, 2, "mean"),
    "nnclr_loss asymmetric none": (
        lambda x, g: nnclr_loss(
            *x, _queue(), symmetric=False, gather_distributed=g, reduction="none", chunk_size=1
        ),
        4,
        2,
        "rows",
    ),
    "dcl_loss": (
        lambda x, g: dcl_loss(x[0], x[1], temperature=0.5, gather_distributed=g),
        2,
        2,
        "mean",
    ),
    "dcl_loss chunked none": (
        lambda x, g: dcl_loss(x[0], x[1], gather_distributed=g, reduction="none", chunk_size=1),
        2,
        2,
        "rows",
    ),
    "dclw_loss": (
        lambda x, g: dclw_loss(x[0], x[1], sigma=0.3, gather_distributed=g),
        2,
        2,
        "mean",
    ),
    "dclw_loss sum": (
        lambda x, g: dclw_loss(x[0], x[1], gather_distributed=g, reduction="sum"),
        2,
        2,
        "mean",
    ),
    "alignment_loss": (lambda x, g: alignment_loss(x[0], x[1], gather_distributed=g), 2, 1, "mean"),
    "alignment_loss sum": (
        lambda x, g: alignment_loss(x[0], x[1], alpha=1.5, gather_distributed=g, reduction="sum"),
        2,
        1,
        "mean",
    ),
    "uniformity_loss": (lambda x, g: uniformity_loss(x[0], gather_distributed=g), 1, 2, "mean"),
    "uniformity_loss chunked": (
        lambda x, g: uniformity_loss(x[0], t=1.0, gather_distributed=g, chunk_size=1),
        1,
        2,
        "mean",
    ),
}


def _inputs(n_inputs: int, n_rows: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(11)
    base = torch.randn(n_rows, K, generator=gen, dtype=F64)
    return [base + 0.5 * torch.randn(n_rows, K, generator=gen, dtype=F64) for _ in range(n_inputs)]


def _run(
    name: str, inputs: list[torch.Tensor], gather: bool, rows: slice
) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """The value and the input gradients; a ``"rows"`` value is weighted by its global row."""
    fn, _, _, kind = CASES[name]
    leaves = [x.detach().clone().requires_grad_(kind != "state") for x in inputs]
    out = fn(leaves, gather)
    if out.requires_grad:
        objective = out
        if kind == "rows":
            weights = torch.linspace(0.5, 1.5, 64, dtype=F64)[rows]  # by global row index
            objective = (out * weights.reshape(-1, *[1] * (out.dim() - 1))).sum()
        objective.backward()
    return out.detach(), [leaf.grad for leaf in leaves]


def _rows(rank: int, sizes: list[int]) -> slice:
    return slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))


def _empty_rank_case(rank: int, world: int, sizes: list[int]) -> dict[str, Any]:
    rows = _rows(rank, sizes)
    results: dict[str, Any] = {}
    for name, (_, n_inputs, _, _) in CASES.items():
        inputs = [x[rows] for x in _inputs(n_inputs, sum(sizes))]
        results[name] = _run(name, inputs, gather=True, rows=rows)
    return results


def _too_small_case(rank: int, world: int) -> dict[str, str]:
    """Each case on a global batch one row short of its minimum: the error each rank raised."""
    errors: dict[str, str] = {}
    for name, (fn, n_inputs, minimum, _) in CASES.items():
        sizes = [0] * world
        sizes[1] = max(minimum - 1, 0)  # rank 1 holds every row there is; the others none
        inputs = [x[_rows(rank, sizes)] for x in _inputs(n_inputs, sum(sizes))]
        try:
            fn(inputs, True)
        except ValueError as error:
            errors[name] = str(error)
        else:
            errors[name] = "no error"
    return errors


def test_empty_rank_contributes_nothing_and_the_result_is_exact(dist_pool_w: Any) -> None:
    world = dist_pool_w.world_size
    sizes = SIZES[world]
    n_global = sum(sizes)
    results = dist_pool_w.run(_empty_rank_case, sizes)
    for name, (_, n_inputs, _, kind) in CASES.items():
        inputs = _inputs(n_inputs, n_global)
        expected, expected_grads = _run(name, inputs, gather=False, rows=slice(0, n_global))
        outs = [results[r][name][0] for r in range(world)]
        if kind == "mean":
            torch.testing.assert_close(torch.stack(outs).mean(), expected, **TOL)
        elif kind == "rows":
            torch.testing.assert_close(torch.cat(outs), expected, **TOL)
        else:
            for out in outs:
                torch.testing.assert_close(out, expected, **TOL)
        # a loss: rank r's gradient / W is its slice; per-sample rows: the slice itself
        scale = world if kind == "mean" else 1
        for r in range(world):
            for i, want in enumerate(expected_grads):
                got = results[r][name][1][i]
                assert (got is None) == (want is None), (name, r, i)
                if want is not None and got is not None:
                    torch.testing.assert_close(
                        got / scale, want[_rows(r, sizes)], **TOL, msg=f"{name}, rank {r}"
                    )


def test_every_gather_distributed_entry_point_is_in_the_table() -> None:
    covered = {name.split()[0] for name in CASES}
    for attr in sslosses.functional.__all__:
        if "gather_distributed" in inspect.signature(getattr(sslosses.functional, attr)).parameters:
            assert attr in covered, f"{attr} takes gather_distributed but has no empty-rank case"
    components = (
        (sslosses.DINOCenter, "update"),
        (sslosses.MoCoQueue, "push"),
        (sslosses.TiCoCovariance, "update"),
    )
    for cls, method in components:
        assert f"{cls.__name__}.{method}" in covered


def test_a_global_batch_below_the_minimum_raises_on_every_rank(dist_pool_w: Any) -> None:
    world = dist_pool_w.world_size
    results = dist_pool_w.run(_too_small_case)
    for name, (_, _, minimum, _) in CASES.items():
        messages = {results[r][name] for r in range(world)}
        if minimum == 0:  # pushing no rows anywhere is a no-op, as in one process
            assert messages == {"no error"}, name
            continue
        assert len(messages) == 1, (name, messages)  # the same error, on every rank
        (message,) = messages
        assert "global batch" in message and f"at least {minimum}" in message, (name, message)
