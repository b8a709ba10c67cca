"""``sslosses.distributed``: gather with gradient, fallbacks, unequal batch sizes."""

from __future__ import annotations

import pytest
import torch

from sslosses import distributed


def _gather_case(rank: int, world: int, sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(rank)
    x = torch.randn(sizes[rank], 3, dtype=torch.float64, requires_grad=True)
    g = distributed.gather(x)
    weights = torch.arange(g.numel(), dtype=torch.float64).reshape(g.shape)
    (g * weights).sum().backward()
    assert x.grad is not None
    return g.detach(), x.grad


@pytest.mark.parametrize("sizes", [[4, 4], [3, 5], [0, 2]])
def test_gather_concatenates_and_sums_gradients(dist_pool, sizes: list[int]) -> None:
    (g0, grad0), (g1, grad1) = dist_pool.run(_gather_case, sizes)
    torch.manual_seed(0)
    x0 = torch.randn(sizes[0], 3, dtype=torch.float64)
    torch.manual_seed(1)
    x1 = torch.randn(sizes[1], 3, dtype=torch.float64)
    assert torch.equal(g0, torch.cat([x0, x1]))
    assert torch.equal(g0, g1)
    assert g0.shape == (sum(sizes), 3)
    weights = torch.arange(g0.numel(), dtype=torch.float64).reshape(g0.shape)
    # every rank's loss depends on all rows: the gradient sums over the 2 ranks
    assert torch.equal(grad0, 2 * weights[: sizes[0]])
    assert torch.equal(grad1, 2 * weights[sizes[0] :])


def test_fallbacks_without_process_group() -> None:
    x = torch.randn(3, 2)
    assert distributed.world_size() == 1
    assert distributed.rank() == 0
    assert distributed.gather(x) is x
    assert distributed.all_reduce_sum(x) is x


def _constructors() -> list[tuple[str, object]]:
    import sslosses

    return [
        ("NTXentLoss", lambda: sslosses.NTXentLoss(gather_distributed=True)),
        ("InfoNCELoss", lambda: sslosses.InfoNCELoss(gather_distributed=True)),
        ("SwAVLoss", lambda: sslosses.SwAVLoss(gather_distributed=True)),
        ("BarlowTwinsLoss", lambda: sslosses.BarlowTwinsLoss(gather_distributed=True)),
        ("MoCoQueue", lambda: sslosses.MoCoQueue(8, 4, gather_distributed=True)),
    ]


@pytest.mark.parametrize(("name", "make"), _constructors())
def test_gather_distributed_without_torch_distributed_fails_at_construction(
    monkeypatch: pytest.MonkeyPatch, name: str, make: object
) -> None:
    monkeypatch.setattr(torch.distributed, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"gather_distributed=True needs torch\.distributed"):
        make()  # type: ignore[operator]


def test_gather_distributed_without_process_group_is_local() -> None:
    """With torch.distributed available but no process group, the losses act locally."""
    import sslosses.functional as SF

    gen = torch.Generator().manual_seed(3)
    a, b = (torch.randn(6, 4, generator=gen, dtype=torch.float64) for _ in range(2))
    scores = [torch.randn(6, 5, generator=gen, dtype=torch.float64) for _ in range(3)]
    pairs = [
        (SF.nt_xent(a, b, gather_distributed=True), SF.nt_xent(a, b)),
        (SF.info_nce(a, b, gather_distributed=True), SF.info_nce(a, b)),
        (SF.swav_loss(scores, gather_distributed=True), SF.swav_loss(scores)),
        (SF.sinkhorn(scores[0], gather_distributed=True), SF.sinkhorn(scores[0])),
        (
            SF.barlow_twins_loss(a, b, gather_distributed=True),
            SF.barlow_twins_loss(a, b),
        ),
    ]
    for distributed_value, local_value in pairs:
        assert torch.equal(distributed_value, local_value)
