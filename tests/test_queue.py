"""``MoCoQueue``: ring-buffer order, any batch size, checkpoints, dtypes, errors, distributed."""

from __future__ import annotations

import io

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sslosses.queue import MoCoQueue


def _rows(start: int, n: int, dim: int = 3, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Rows whose entries are their global index: row i is [i, i, ..., i]."""
    return torch.arange(start, start + n, dtype=dtype).unsqueeze(1).expand(n, dim).contiguous()


def _push_all(queue: MoCoQueue, sizes: list[int], dim: int = 3) -> torch.Tensor:
    pushed = []
    start = 0
    for n in sizes:
        batch = _rows(start, n, dim)
        queue.push(batch)
        pushed.append(batch)
        start += n
    return torch.cat(pushed) if pushed else torch.empty(0, dim, dtype=torch.float64)


@given(
    size=st.integers(1, 12),
    sizes=st.lists(st.integers(0, 30), max_size=8),
)
def test_features_are_the_newest_rows_oldest_first(size: int, sizes: list[int]) -> None:
    queue = MoCoQueue(size, 3, dtype=torch.float64)
    everything = _push_all(queue, sizes)
    expected = everything[max(0, everything.shape[0] - size) :]  # the last `size` rows, in order
    feats = queue.features()
    assert torch.equal(feats, expected)
    assert len(queue) == feats.shape[0] == min(size, sum(sizes))
    assert queue.is_full == (sum(sizes) >= size)


def test_wrap_around_with_batches_not_dividing_size() -> None:
    queue = MoCoQueue(10, 3, dtype=torch.float64)
    queue.push(_rows(0, 3))
    assert len(queue) == 3
    assert torch.equal(queue.features()[:, 0], torch.arange(3.0, dtype=torch.float64))
    queue.push(_rows(3, 4))
    queue.push(_rows(7, 4))  # 11 rows pushed: wraps, row 0 overwritten
    assert len(queue) == 10
    assert torch.equal(queue.features()[:, 0], torch.arange(1.0, 11.0, dtype=torch.float64))
    queue.push(_rows(11, 7))
    assert torch.equal(queue.features()[:, 0], torch.arange(8.0, 18.0, dtype=torch.float64))
    # newest last
    assert queue.features()[-1, 0] == 17.0


def test_push_larger_than_size_keeps_newest() -> None:
    queue = MoCoQueue(4, 3, dtype=torch.float64)
    queue.push(_rows(0, 2))
    queue.push(_rows(2, 9))
    assert torch.equal(queue.features(), _rows(7, 4))
    queue.push(_rows(11, 1))
    assert torch.equal(queue.features(), _rows(8, 4))


def test_empty_queue_and_empty_push() -> None:
    queue = MoCoQueue(4, 3)
    assert len(queue) == 0
    assert queue.features().shape == (0, 3)
    queue.push(torch.empty(0, 3))
    assert len(queue) == 0
    assert torch.equal(queue.queue, torch.zeros(4, 3))  # no random initial content


def test_features_is_a_detached_copy_usable_across_pushes() -> None:
    queue = MoCoQueue(6, 3, dtype=torch.float64)
    keys = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    queue.push(keys * 2)
    negatives = queue.features()
    assert not negatives.requires_grad
    query = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    loss = (query @ negatives.T).sum()
    queue.push(torch.randn(5, 3, dtype=torch.float64))  # in-place writes to the buffer
    loss.backward()  # would fail if negatives were a view of the buffer
    assert query.grad is not None
    torch.testing.assert_close(query.grad, (2 * keys.detach()).sum(0).expand(2, 3))
    assert keys.grad is None
    full = queue.features()
    queue.push(torch.zeros(1, 3, dtype=torch.float64))
    assert not torch.equal(full, queue.features())  # the earlier result did not change


def test_state_dict_round_trip_is_bit_identical() -> None:
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, 8, generator=gen) for n in (5, 3, 7, 2, 6, 9, 4)]
    uninterrupted = MoCoQueue(16, 8)
    for b in batches:
        uninterrupted.push(b)

    interrupted = MoCoQueue(16, 8)
    for b in batches[:3]:
        interrupted.push(b)
    buf = io.BytesIO()
    torch.save(interrupted.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert set(state) == {"queue", "_extra_state"}
    assert state["_extra_state"] == {"ptr": 15, "count": 15}
    resumed = MoCoQueue(16, 8)
    resumed.load_state_dict(state)
    assert len(resumed) == 15
    assert torch.equal(resumed.features(), interrupted.features())
    for b in batches[3:]:
        resumed.push(b)
    assert torch.equal(resumed.queue, uninterrupted.queue)
    assert torch.equal(resumed.features(), uninterrupted.features())
    assert resumed.state_dict()["_extra_state"] == uninterrupted.state_dict()["_extra_state"]


@pytest.mark.parametrize(
    ("queue_dtype", "input_dtype"),
    [
        (torch.float32, torch.float16),
        (torch.float32, torch.bfloat16),
        (torch.float32, torch.float64),
        (torch.float64, torch.float32),
        (torch.float16, torch.float32),
    ],
)
def test_features_are_cast_to_queue_dtype(
    queue_dtype: torch.dtype, input_dtype: torch.dtype
) -> None:
    queue = MoCoQueue(4, 3, dtype=queue_dtype)
    x = torch.randn(3, 3).to(input_dtype)
    queue.push(x)
    assert queue.dtype == queue_dtype
    assert queue.features().dtype == queue_dtype
    assert torch.equal(queue.features(), x.to(queue_dtype))


def test_repr() -> None:
    queue = MoCoQueue(8, 2)
    queue.push(torch.randn(3, 2))
    assert repr(queue) == (
        "MoCoQueue(size=8, dim=2, dtype=torch.float32, gather_distributed=False, filled=3)"
    )


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"size must be an int > 0, got 0"):
        MoCoQueue(0, 3)
    with pytest.raises(ValueError, match=r"dim must be an int > 0, got -2"):
        MoCoQueue(4, -2)
    with pytest.raises(TypeError, match=r"size must be an int, got float"):
        MoCoQueue(4.0, 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"gather_distributed must be a bool, got int"):
        MoCoQueue(4, 3, gather_distributed=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"dtype must be a floating-point torch.dtype, got "):
        MoCoQueue(4, 3, dtype=torch.int64)
    with pytest.raises(TypeError, match=r"dtype must be a floating-point torch.dtype, got "):
        MoCoQueue(4, 3, dtype="float32")  # type: ignore[arg-type]
    queue = MoCoQueue(4, 3)
    with pytest.raises(ValueError, match=r"features must have shape \(N, 3\), got \(2, 5\)"):
        queue.push(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"features must be a 2-D tensor, got 1-D"):
        queue.push(torch.randn(3))
    with pytest.raises(ValueError, match=r"features must be a 2-D tensor, got 3-D"):
        queue.push(torch.randn(2, 2, 3))
    with pytest.raises(TypeError, match=r"features must have a floating-point dtype, got"):
        queue.push(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match=r"features must be a torch.Tensor, got list"):
        queue.push([[1.0, 2.0, 3.0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"features and the queue must be on the same device"):
        queue.push(torch.randn(2, 3, device="meta"))
    assert len(queue) == 0  # failed pushes change nothing
    state = queue.state_dict()
    state["_extra_state"] = {"ptr": 2, "count": 1}
    with pytest.raises(ValueError, match=r"MoCoQueue extra state must be a dict with ints"):
        queue.load_state_dict(state)
    state["_extra_state"] = {"ptr": 0, "count": 5}
    with pytest.raises(ValueError, match=r"consistent with size=4"):
        queue.load_state_dict(state)
    with pytest.raises(NotImplementedError):
        queue(torch.randn(2, 3))  # no forward: mutation only through push


def _snapshot(queue: MoCoQueue) -> tuple[torch.Tensor, int, int]:
    return queue.queue.clone(), queue._ptr, len(queue)


def _unchanged(queue: MoCoQueue, snapshot: tuple[torch.Tensor, int, int]) -> bool:
    contents, ptr, count = snapshot
    return torch.equal(queue.queue, contents) and queue._ptr == ptr and len(queue) == count


@pytest.mark.parametrize(("saved_size", "size"), [(8, 4), (4, 8)])
def test_loading_another_size_is_a_size_mismatch_and_changes_nothing(
    saved_size: int, size: int
) -> None:
    """Issue 10.13: a larger checkpoint raised the extra-state error instead of the size
    mismatch; a smaller one raised but left the write position and fill count changed."""
    saved = MoCoQueue(saved_size, 3, dtype=torch.float64)
    saved.push(_rows(100, 6))  # ptr 6 of 8 (over size 4), or wrapped in size 4 (ptr 2, full)
    queue = MoCoQueue(size, 3, dtype=torch.float64)
    queue.push(_rows(0, 3))
    before = _snapshot(queue)
    state = saved.state_dict()
    with pytest.raises(
        RuntimeError,
        match=rf"size mismatch for queue: the checkpoint holds a queue of shape "
        rf"\({saved_size}, 3\), this MoCoQueue has size={size}, dim=3",
    ):
        queue.load_state_dict(state)
    assert _unchanged(queue, before)
    assert torch.equal(queue.features(), _rows(0, 3))
    with pytest.raises(RuntimeError, match=r"size mismatch"):  # strict=False still refuses
        queue.load_state_dict(state, strict=False)
    assert _unchanged(queue, before)
    # inside a larger model: the prefix is named
    outer, outer_saved = torch.nn.Module(), torch.nn.Module()
    outer.queue, outer_saved.queue = queue, saved
    with pytest.raises(RuntimeError, match=r"size mismatch for queue.queue: the checkpoint"):
        outer.load_state_dict(outer_saved.state_dict())
    assert _unchanged(queue, before)
    # another dim is refused the same way
    with pytest.raises(RuntimeError, match=r"size mismatch for queue: .* \(4, 5\), this"):
        MoCoQueue(4, 3).load_state_dict(MoCoQueue(4, 5).state_dict())


def test_failed_loads_leave_the_queue_as_it_was() -> None:
    queue = MoCoQueue(4, 3, dtype=torch.float64)
    queue.push(_rows(0, 3))
    before = _snapshot(queue)
    other = MoCoQueue(4, 3, dtype=torch.float64)
    other.push(_rows(10, 1))
    state = other.state_dict()
    state["_extra_state"] = {"ptr": 3, "count": 1}  # inconsistent: the buffer is not copied
    with pytest.raises(ValueError, match=r"MoCoQueue extra state must be a dict with ints"):
        queue.load_state_dict(state)
    assert _unchanged(queue, before)
    only_buffer = {"queue": other.state_dict()["queue"]}
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) .*"_extra_state"'):
        queue.load_state_dict(only_buffer)
    assert _unchanged(queue, before)
    only_extra = {"_extra_state": {"ptr": 1, "count": 1}}
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) .*"queue"'):
        queue.load_state_dict(only_extra)
    assert _unchanged(queue, before)
    queue.load_state_dict(other.state_dict())  # a good checkpoint still loads
    assert torch.equal(queue.features(), _rows(10, 1)) and queue._ptr == 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_check_finite_refuses_non_finite_rows(bad: float) -> None:
    """Issue 10.14: NaN/inf rows were stored silently and stayed among the negatives."""
    queue = MoCoQueue(4, 3, dtype=torch.float64, check_finite=True)
    queue.push(_rows(0, 2))
    before = _snapshot(queue)
    batch = _rows(10, 5)
    batch[3, 1] = bad
    batch[4, 0] = bad
    with pytest.raises(
        ValueError,
        match=r"features must be finite \(check_finite=True\), got 2 of 5 rows with NaN or "
        r"inf \(first: row 3\); nothing was pushed",
    ):
        queue.push(batch)
    assert _unchanged(queue, before)
    queue.push(_rows(10, 3))  # finite rows still go in
    assert torch.equal(queue.features(), torch.cat([_rows(0, 2), _rows(10, 3)])[-4:])
    assert "check_finite=True" in repr(queue)
    # off by default: stored as given (the documented behaviour without the check)
    unchecked = MoCoQueue(4, 3, dtype=torch.float64)
    unchecked.push(batch)
    assert torch.isnan(unchecked.features()).any() or torch.isinf(unchecked.features()).any()
    with pytest.raises(TypeError, match=r"check_finite must be a bool, got int"):
        MoCoQueue(4, 3, check_finite=1)  # type: ignore[arg-type]


def test_gather_distributed_without_torch_distributed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.distributed, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"gather_distributed=True needs torch.distributed"):
        MoCoQueue(4, 3, gather_distributed=True)


def test_gather_distributed_without_process_group_acts_locally() -> None:
    queue = MoCoQueue(4, 3, gather_distributed=True, dtype=torch.float64)
    queue.push(_rows(0, 3))
    assert torch.equal(queue.features(), _rows(0, 3))


# ------------------------------------------------------------------------------ distributed
def _rank_batches(rank: int, sizes: list[list[int]]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + rank)
    return [torch.randn(n[rank], 4, generator=gen, dtype=torch.float64) for n in sizes]


def _queue_case(
    rank: int, world: int, size: int, sizes: list[list[int]], gather: bool
) -> tuple[torch.Tensor, int, dict[str, int]]:
    queue = MoCoQueue(size, 4, gather_distributed=gather, dtype=torch.float64)
    for batch in _rank_batches(rank, sizes):
        queue.push(batch.to(torch.float32) if rank == 1 else batch)  # dtypes may differ by rank
    return queue.features(), len(queue), queue.get_extra_state()


@pytest.mark.parametrize(
    "sizes",
    [
        [[3, 3], [3, 3], [3, 3]],  # equal batches
        [[2, 5], [4, 1], [0, 3], [6, 6]],  # unequal, an empty rank, more than the queue
    ],
)
def test_gather_distributed_push_matches_single_process(
    dist_pool: object, sizes: list[list[int]]
) -> None:
    size = 10
    (f0, n0, s0), (f1, n1, s1) = dist_pool.run(_queue_case, size, sizes, True)  # type: ignore[attr-defined]
    assert torch.equal(f0, f1)  # identical contents on every rank
    assert n0 == n1 and s0 == s1
    single = MoCoQueue(size, 4, dtype=torch.float64)
    per_rank = [_rank_batches(r, sizes) for r in range(2)]
    for step in range(len(sizes)):
        r1 = per_rank[1][step].to(torch.float32).to(torch.float64)
        single.push(torch.cat([per_rank[0][step], r1]))  # rank 0's rows first
    assert torch.equal(f0, single.features())
    assert n0 == len(single)


def test_no_gather_keeps_queues_local(dist_pool: object) -> None:
    sizes = [[2, 3], [1, 4]]
    (f0, n0, _), (f1, n1, _) = dist_pool.run(_queue_case, 10, sizes, False)  # type: ignore[attr-defined]
    assert (n0, n1) == (3, 7)
    assert torch.equal(f0, torch.cat(_rank_batches(0, sizes)))
    expected1 = torch.cat([b.to(torch.float32).to(torch.float64) for b in _rank_batches(1, sizes)])
    assert torch.equal(f1, expected1)
