"""SupCon (Khosla et al.): reference, NT-Xent reduction, invariants, blockwise path, anchors
without positives, numerics, distributed, errors."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from helpers import assert_all_close, assert_ranks_match_single_process, value_and_grads
from hypothesis import given
from hypothesis import strategies as st
from strategies import SEEDS
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.references import supcon
from sslosses import SupConLoss
from sslosses.functional import nt_xent, supcon_loss

F64 = torch.float64
TOL = {"rtol": 1e-10, "atol": 1e-10}
TEMPERATURES = st.floats(min_value=0.05, max_value=2.0)
CHUNKS = st.none() | st.integers(min_value=1, max_value=20)
MODES = st.sampled_from(["all", "one"])


def _features(n: int, v: int, d: int, *, seed: int = 0, dtype: torch.dtype = F64) -> torch.Tensor:
    """``(N, V, D)``: views of a sample near a shared centre, so positives matter."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 1, d, generator=gen, dtype=F64)
    return (base + 0.7 * torch.randn(n, v, d, generator=gen, dtype=F64)).to(dtype)


def _labels(n: int, classes: int, *, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed))


@st.composite
def batches(
    draw: st.DrawFn, *, min_v: int = 1, max_v: int = 4, labelled: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A drawn ``(N, V, D)`` batch and labels (``None``, or drawn from a few classes)."""
    n = draw(st.integers(2, 10))
    with_labels = draw(st.booleans()) if labelled is None else labelled
    v = draw(st.integers(min_v if with_labels else max(min_v, 2), max_v))
    d = draw(st.integers(1, 8))
    seed = draw(SEEDS)
    labels = _labels(n, draw(st.integers(1, n)), seed=seed + 1) if with_labels else None
    return 2.0 * _features(n, v, d, seed=seed), labels


# ---------------------------------------------------------------- reference and exactness
@given(batches(), TEMPERATURES, TEMPERATURES, MODES, CHUNKS)
def test_matches_supcontrast_reference(
    batch, temperature: float, base: float, mode: str, chunk_size: int | None
) -> None:
    x, labels = batch
    kwargs = {"temperature": temperature, "base_temperature": base, "contrast_mode": mode}
    ours = value_and_grads(lambda t: supcon_loss(t, labels, chunk_size=chunk_size, **kwargs), x)
    ref = value_and_grads(
        lambda t: supcon(F.normalize(t, dim=2), labels, temperature, mode, base), x
    )
    assert_all_close(ours, ref, **TOL)


@given(batches(), MODES, CHUNKS)
def test_matches_reference_without_normalization(batch, mode: str, chunk_size) -> None:
    x, labels = batch
    x = x / 3  # raw dot products as logits: keep them moderate at temperature 0.5
    ours = value_and_grads(
        lambda t: supcon_loss(
            t, labels, temperature=0.5, contrast_mode=mode, normalize=False, chunk_size=chunk_size
        ),
        x,
    )
    assert_all_close(ours, value_and_grads(lambda t: supcon(t, labels, 0.5, mode, 0.07), x), **TOL)


def test_defaults_are_the_originals() -> None:
    x, labels = _features(6, 2, 4), _labels(6, 3)
    expected = supcon(F.normalize(x, dim=2), labels)  # temperature = base_temperature = 0.07
    torch.testing.assert_close(supcon_loss(x, labels), expected, **TOL)
    assert repr(SupConLoss()) == (
        "SupConLoss(temperature=0.07, base_temperature=0.07, contrast_mode='all', "
        "normalize=True, gather_distributed=False, reduction='mean', chunk_size='auto')"
    )


def test_sequence_and_tensor_layouts_agree() -> None:
    x, labels = _features(5, 3, 4), _labels(5, 2)
    views = list(x.unbind(dim=1))
    for mode in ("all", "one"):
        tensor = supcon_loss(x, labels, contrast_mode=mode, reduction="none")
        listed = supcon_loss(views, labels, contrast_mode=mode, reduction="none")
        torch.testing.assert_close(listed, tensor, rtol=0, atol=0)
    torch.testing.assert_close(supcon_loss(tuple(views), labels), supcon_loss(x, labels))


# ---------------------------------------------------------------- reductions to other losses
@given(batches(min_v=2, max_v=2, labelled=False), TEMPERATURES, CHUNKS)
def test_without_labels_two_views_is_nt_xent(batch, temperature: float, chunk_size) -> None:
    x, _ = batch
    kw = {"temperature": temperature, "chunk_size": chunk_size, "reduction": "none"}
    ours = supcon_loss(list(x.unbind(dim=1)), base_temperature=temperature, **kw)
    torch.testing.assert_close(ours, nt_xent(x[:, 0], x[:, 1], **kw), **TOL)
    grads = [
        value_and_grads(lambda t: supcon_loss(t, temperature=temperature), x)[1],
        value_and_grads(lambda t: nt_xent(t[:, 0], t[:, 1], temperature=temperature), x)[1],
    ]
    torch.testing.assert_close(grads[0] * 0.07 / temperature, grads[1], **TOL)


@given(batches(labelled=False, max_v=4), MODES, CHUNKS)
def test_distinct_labels_equal_no_labels(batch, mode: str, chunk_size: int | None) -> None:
    x, _ = batch
    distinct = 10 * torch.arange(x.shape[0]) - 7  # any distinct integers
    kw = {"contrast_mode": mode, "chunk_size": chunk_size, "reduction": "none"}
    assert_all_close(
        value_and_grads(lambda t: supcon_loss(t, distinct, **kw), x),
        value_and_grads(lambda t: supcon_loss(t, **kw), x),
        **TOL,
    )


@given(batches(), TEMPERATURES, TEMPERATURES, MODES)
def test_base_temperature_scales_the_loss(batch, temperature: float, base: float, mode) -> None:
    x, labels = batch
    kw = {"temperature": temperature, "contrast_mode": mode, "reduction": "none"}
    unscaled = supcon_loss(x, labels, base_temperature=temperature, **kw)
    scaled = supcon_loss(x, labels, base_temperature=base, **kw)
    torch.testing.assert_close(scaled, unscaled * (temperature / base), **TOL)


# ---------------------------------------------------------------- invariants
@given(batches(), SEEDS, MODES, CHUNKS)
def test_invariant_to_sample_permutation(batch, seed: int, mode: str, chunk_size) -> None:
    x, labels = batch
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    kw = {"contrast_mode": mode, "chunk_size": chunk_size, "reduction": "none"}
    per_sample = supcon_loss(x, labels, **kw)
    permuted = supcon_loss(x[perm], None if labels is None else labels[perm], **kw)
    torch.testing.assert_close(permuted, per_sample[perm], **TOL)


@given(batches(labelled=True), SEEDS, MODES)
def test_invariant_to_relabelling(batch, seed: int, mode: str) -> None:
    x, labels = batch
    assert labels is not None
    gen = torch.Generator().manual_seed(seed)
    new_names = torch.randperm(100, generator=gen)[: x.shape[0]] * 37 - 1000  # injective
    relabelled = new_names[labels]
    kw = {"contrast_mode": mode, "reduction": "none"}
    assert_all_close(
        value_and_grads(lambda t: supcon_loss(t, relabelled.to(torch.int32), **kw), x),
        value_and_grads(lambda t: supcon_loss(t, labels, **kw), x),
        **TOL,
    )


@given(batches(min_v=2, labelled=False), SEEDS)
def test_invariant_to_view_order_and_rescaling(batch, seed: int) -> None:
    x, _ = batch
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(x.shape[1], generator=gen)
    scales = torch.rand(x.shape[0], x.shape[1], 1, generator=gen, dtype=F64) * 10 + 0.1
    per_sample = supcon_loss(x, reduction="none")
    torch.testing.assert_close(supcon_loss(x[:, order] * scales, reduction="none"), per_sample)


def test_one_class_all_views_alike_gives_log_ratio() -> None:
    # every embedding the same: each anchor's V N - 1 candidates are all positives
    n, v = 5, 3
    x = torch.full((n, v, 4), 0.3, dtype=F64)
    expected = math.log(n * v - 1)  # log-sum-exp of V N - 1 equal logits minus one of them
    got = supcon_loss(x, torch.zeros(n, dtype=torch.long), temperature=0.1, base_temperature=0.1)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=F64), **TOL)


# ---------------------------------------------------------------- anchors without a positive
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_anchor_without_positive_is_zero_and_finite(chunk_size: int | None) -> None:
    x = _features(5, 1, 4, seed=3)  # one view: a label seen once has no positive
    labels = torch.tensor([0, 1, 0, 2, 2])  # sample 1 alone
    loss, grad = value_and_grads(
        lambda t: supcon_loss(t, labels, reduction="none", chunk_size=chunk_size), x
    )
    assert bool(torch.isfinite(loss).all()) and bool(torch.isfinite(grad).all())
    assert loss[1].item() == 0.0 and bool((loss[[0, 2, 3, 4]] > 0).all())
    # it sends no gradient of its own: the gradient of its row of the loss is zero
    leaf = x.clone().requires_grad_(True)
    (alone,) = torch.autograd.grad(supcon_loss(leaf, labels, reduction="none")[1], [leaf])
    assert alone.abs().max().item() == 0.0
    # it still counts in the mean over anchors, as in the original's current code
    assert_all_close(
        value_and_grads(lambda t: supcon_loss(t, labels, chunk_size=chunk_size), x),
        value_and_grads(lambda t: supcon(F.normalize(t, dim=2), labels), x),
        **TOL,
    )
    torch.testing.assert_close(supcon_loss(x, labels), loss.sum() / 5, **TOL)


def test_no_positive_anywhere_gives_zero() -> None:
    x = _features(4, 1, 3)
    leaf = x.clone().requires_grad_(True)
    loss = supcon_loss(leaf, torch.arange(4))
    (grad,) = torch.autograd.grad(loss, [leaf])
    assert loss.item() == 0.0 and grad.abs().max().item() == 0.0


def test_contrast_mode_one_with_two_views_always_has_a_positive() -> None:
    x, labels = _features(6, 2, 4), torch.arange(6)  # every label once: the other view remains
    per_sample = supcon_loss(x, labels, contrast_mode="one", reduction="none")
    assert bool((per_sample > 0).all())


# ---------------------------------------------------------------- blockwise path
@given(batches(), TEMPERATURES, MODES, st.integers(1, 45), st.booleans())
def test_blockwise_equals_plain(batch, temperature, mode: str, chunk_size: int, normalize) -> None:
    x, labels = batch
    if not normalize:
        x = x / 3

    def loss(chunk: int | None, reduction: str) -> Any:
        return lambda t: supcon_loss(
            t,
            labels,
            temperature=temperature,
            contrast_mode=mode,
            normalize=normalize,
            reduction=reduction,
            chunk_size=chunk,
        )

    for reduction in ("mean", "sum", "none"):
        assert_all_close(
            value_and_grads(loss(chunk_size, reduction), x),
            value_and_grads(loss(None, reduction), x),
            **TOL,
        )


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operation produces."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("mode", ["all", "one"])
def test_blockwise_never_builds_the_logit_matrix(mode: str) -> None:
    n, v, d, chunk = 1024, 2, 16, 64
    x = _features(n, v, d, dtype=torch.float32).requires_grad_(True)
    labels = _labels(n, 10)
    anchors = v * n if mode == "all" else n
    for chunk_size, bound in ((chunk, chunk * v * n), (None, anchors * v * n)):
        spy = _LargestTensor()
        with spy:
            loss = supcon_loss(x, labels, contrast_mode=mode, chunk_size=chunk_size)
            loss.backward()
        # forward and backward: nothing larger than one block of logits (the plain path:
        # the whole anchors-by-candidates matrix)
        assert spy.largest == bound, (chunk_size, spy.largest, bound)
    assert chunk * 16 <= anchors  # one block is at most 1/16 of the matrix


def test_auto_follows_resolve_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    import sslosses.supcon
    from sslosses.functional import resolve_chunk_size

    seen: list[tuple[int, int, Any]] = []
    original = sslosses.supcon.similarity_logsumexp

    def spy(anchors: torch.Tensor, candidates: torch.Tensor, **kw: Any) -> torch.Tensor:
        seen.append((anchors.shape[0], candidates.shape[0], kw["chunk_size"]))
        return original(anchors, candidates, **kw)

    monkeypatch.setattr(sslosses.supcon, "similarity_logsumexp", spy)
    x = _features(600, 2, 3, dtype=torch.float32)
    supcon_loss(x)
    supcon_loss(x, contrast_mode="one", chunk_size=None)
    assert seen == [(1200, 1200, "auto"), (600, 1200, None)]
    assert resolve_chunk_size("auto", 1200, 1200, "cpu") is None  # blocks of 873 rows: 1 block
    assert resolve_chunk_size("auto", 2 * 8192, 2 * 8192, "cpu") == 128


# ---------------------------------------------------------------- reductions, module
def test_reductions() -> None:
    x, labels = _features(7, 3, 5), _labels(7, 3)
    for mode in ("all", "one"):
        none = supcon_loss(x, labels, contrast_mode=mode, reduction="none")
        assert none.shape == (7,)
        mean = supcon_loss(x, labels, contrast_mode=mode)
        total = supcon_loss(x, labels, contrast_mode=mode, reduction="sum")
        assert mean.shape == () and total.shape == ()
        torch.testing.assert_close(none.mean(), mean, **TOL)
        torch.testing.assert_close(none.sum(), total, **TOL)


def test_gather_distributed_without_process_group_is_local() -> None:
    x, labels = _features(5, 2, 3), _labels(5, 2)
    assert not dist.is_initialized()
    for reduction in ("mean", "sum", "none"):
        torch.testing.assert_close(
            supcon_loss(x, labels, gather_distributed=True, reduction=reduction),
            supcon_loss(x, labels, reduction=reduction),
            rtol=0,
            atol=0,
        )


# ------------------------------------------------ dtypes (half, autocast, compile, gradcheck and
# module = function: the SupCon rows of tests/contracts.py)
def test_mixed_precision_views_promote_to_float64() -> None:
    x = _features(4, 2, 3)
    out = supcon_loss([x[:, 0].float(), x[:, 1]])
    assert out.dtype == F64
    torch.testing.assert_close(out, supcon_loss([x[:, 0].float().double(), x[:, 1]]))


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_finite_at_small_temperature_with_large_logits(chunk_size: int | None) -> None:
    x = _features(6, 2, 8, dtype=torch.float32) * 10  # raw logits in the hundreds
    labels = _labels(6, 2)
    u = x.transpose(0, 1).reshape(12, 8)
    assert torch.exp(u @ u.T / 0.01).isinf().any()  # exp overflows float32
    for normalize in (True, False):
        kw = {"temperature": 0.01, "normalize": normalize, "chunk_size": chunk_size}
        ours = supcon_loss(x, labels, **kw)
        ref = supcon_loss(x.double(), labels, temperature=0.01, normalize=normalize)
        assert torch.isfinite(ours)
        torch.testing.assert_close(ours.double(), ref, rtol=1e-4, atol=1e-3)


def test_double_backward_matches_reference() -> None:
    x, labels = _features(5, 2, 3, seed=4).requires_grad_(True), _labels(5, 2)
    penalties = []
    for fn in (
        lambda t: supcon_loss(t, labels, temperature=0.5, chunk_size=3),
        lambda t: supcon(F.normalize(t, dim=2), labels, 0.5),
    ):
        (grad,) = torch.autograd.grad(fn(x), [x], create_graph=True)
        (second,) = torch.autograd.grad(grad.square().sum(), [x])
        penalties.append(second)
    torch.testing.assert_close(penalties[0], penalties[1], rtol=1e-8, atol=1e-8)


# ---------------------------------------------------------------- errors
def test_rejects_bad_inputs() -> None:
    x, labels = _features(4, 2, 3), _labels(4, 2)
    with pytest.raises(ValueError, match=r"one \(N, V, D\) tensor, got a 2-D tensor .*\(4, 2\)"):
        supcon_loss(x[:, :, 0])
    with pytest.raises(ValueError, match=r"got a 4-D tensor with shape \(1, 4, 2, 3\)"):
        supcon_loss(x[None])
    with pytest.raises(ValueError, match=r"views must have at least 1 view and 1 feature"):
        supcon_loss(x[:, :0], labels)
    with pytest.raises(ValueError, match="views must have a batch size of at least 2, got 1"):
        supcon_loss(x[:1])
    with pytest.raises(ValueError, match=r"views\[0\] must have a batch size of at least 2"):
        supcon_loss([x[:1, 0], x[:1, 1]])
    with pytest.raises(ValueError, match="views must hold at least 1 crop"):
        supcon_loss([], labels)
    with pytest.raises(ValueError, match=r"views\[0\] with shape \(4, 3\) and views\[1\]"):
        supcon_loss([x[:, 0], x[:, 1, :2]])
    with pytest.raises(ValueError, match=r"views\[1\] must be a 2-D tensor, got 3-D"):
        supcon_loss([x[:, 0], x])
    with pytest.raises(TypeError, match=r"views must have a floating-point dtype, got torch\.int"):
        supcon_loss(x.long())
    with pytest.raises(TypeError, match=r"views must be a list or tuple of tensors .*got dict"):
        supcon_loss({"a": x})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same device, got cpu and meta"):
        supcon_loss([x[:, 0], x[:, 1].to("meta")])
    with pytest.raises(ValueError, match=r"labels=None needs at least 2 views .*got 1 view"):
        supcon_loss(x[:, :1])
    with pytest.raises(TypeError, match=r"labels must have an integer dtype, got torch\.float64"):
        supcon_loss(x, labels.double())
    with pytest.raises(TypeError, match=r"labels must be a torch\.Tensor or None, got list"):
        supcon_loss(x, [0, 1, 0, 1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\) = \(4,\), .*got \(3,\)"):
        supcon_loss(x, labels[:3])
    with pytest.raises(ValueError, match=r"labels must have shape .*got \(4, 1\)"):
        supcon_loss(x, labels[:, None])
    with pytest.raises(ValueError, match="labels and views must be on the same device"):
        supcon_loss(x, labels.to("meta"))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"temperature": 0.0}, ValueError, "temperature must be a finite number > 0, got 0.0"),
        ({"temperature": math.inf}, ValueError, "temperature must be a finite number > 0"),
        ({"temperature": "0.1"}, TypeError, "temperature must be a float, got str"),
        ({"base_temperature": -1.0}, ValueError, "base_temperature must be a finite number > 0"),
        ({"base_temperature": None}, TypeError, "base_temperature must be a float, got NoneType"),
        ({"contrast_mode": "first"}, ValueError, "contrast_mode must be one of 'all', 'one'"),
        ({"contrast_mode": 1}, ValueError, "contrast_mode must be one of 'all', 'one', got 1"),
        ({"reduction": "avg"}, ValueError, "reduction must be one of 'none', 'mean', 'sum'"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be an int > 0, got 0"),
        ({"chunk_size": 2.0}, TypeError, "chunk_size must be an int, got float"),
        ({"normalize": 1}, TypeError, "normalize must be a bool, got int"),
        ({"gather_distributed": "yes"}, TypeError, "gather_distributed must be a bool, got str"),
    ],
)
def test_rejects_bad_options(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    x, labels = _features(4, 2, 3), _labels(4, 2)
    with pytest.raises(error, match=message):
        supcon_loss(x, labels, **kwargs)
    with pytest.raises(error, match=message):
        SupConLoss(**kwargs)


# ---------------------------------------------------------------- distributed (W = 2 and 3)
SIZES = {2: [3, 5], 3: [3, 1, 4]}  # unequal per-rank batch sizes, rank 0's rows first
OPTIONS = [
    (mode, labelled, reduction, chunk)
    for mode in ("all", "one")
    for labelled in (True, False)
    for reduction, chunk in (("mean", None), ("mean", 2), ("sum", None), ("none", 3))
]


def _global_batch(world: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = sum(SIZES[world])
    # 3 classes over the global batch: most positives of a row live on another rank
    return _features(n, 2, 5, seed=123), torch.tensor([0, 1, 2, 1, 0, 2, 2, 1])[:n]


def _slice(rank: int, sizes: list[int]) -> slice:
    return slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))


def _weights(rows: slice) -> torch.Tensor:
    return torch.linspace(0.5, 1.5, 16, dtype=F64)[rows]  # by global row: each row's grad counts


def _dist_case(rank: int, world: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    rows = _slice(rank, SIZES[world])
    x_all, labels_all = _global_batch(world)
    x, labels = x_all[rows], labels_all[rows]
    out = []
    for mode, labelled, reduction, chunk in OPTIONS:
        fn = SupConLoss(
            temperature=0.3,
            contrast_mode=mode,
            gather_distributed=True,
            reduction=reduction,
            chunk_size=chunk,
        )
        lab = labels if labelled else None
        if reduction == "none":
            out.append(value_and_grads(lambda t, f=fn, y=lab: f(t, y) * _weights(rows), x))
        else:
            out.append(value_and_grads(lambda t, f=fn, y=lab: f(t, y), x))
    return out


def test_distributed_matches_single_process(dist_pool_w: Any) -> None:
    world = dist_pool_w.world_size
    sizes = SIZES[world]
    results = dist_pool_w.run(_dist_case)
    x, labels = _global_batch(world)
    everything = slice(0, sum(sizes))
    for i, (mode, labelled, reduction, chunk) in enumerate(OPTIONS):
        lab = labels if labelled else None
        kw = {"temperature": 0.3, "contrast_mode": mode, "reduction": reduction}
        what = f"{mode}, labels={labelled}, {reduction}, chunk_size={chunk}"
        if reduction == "none":
            single = value_and_grads(
                lambda t, y=lab, k=kw: supcon_loss(t, y, **k) * _weights(everything), x
            )
        else:
            single = value_and_grads(lambda t, y=lab, k=kw: supcon_loss(t, y, **k), x)
        assert_ranks_match_single_process(
            [r[i] for r in results], single, sizes, per_row=reduction == "none", msg=what, **TOL
        )


def _local_labels_case(rank: int, world: int) -> torch.Tensor:
    """The loss when each rank only knows its own labels: the positives of other ranks lost."""
    rows = _slice(rank, SIZES[world])
    x_all, labels_all = _global_batch(world)
    return supcon_loss(x_all[rows], labels_all[rows], gather_distributed=True)


def test_labels_of_all_ranks_define_the_positives(dist_pool_w: Any) -> None:
    world = dist_pool_w.world_size
    x, labels = _global_batch(world)
    results = dist_pool_w.run(_local_labels_case)
    mean = torch.stack(results).mean()
    torch.testing.assert_close(mean, supcon_loss(x, labels), **TOL)
    # a rank's labels alone would make them wrong: the global labels are not all local
    offset_labels = labels + 10 * torch.cat(
        [torch.full((s,), r) for r, s in enumerate(SIZES[world])]
    )
    assert not torch.allclose(supcon_loss(x, offset_labels), supcon_loss(x, labels))
