"""``chunk_size="auto"``: the rule that picks the blockwise path, and what it computes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from sslosses import _chunked_ce
from sslosses.functional import resolve_chunk_size
from sslosses.info_nce import info_nce
from sslosses.nt_xent import NTXentLoss, nt_xent

CPU = torch.device("cpu")
META = torch.device("meta")  # stands for "not a CPU" (CUDA, MPS, ...): only .type is read


@pytest.mark.parametrize(
    ("rows", "cols", "expected"),
    [
        (512, 512, None),  # NT-Xent N=256: one 2^20-logit block would hold every row
        (1024, 1024, None),  # N=512: a block is 1024 rows, fewer than two blocks
        (2048, 2048, 512),  # N=1024: 2^20 / 2048
        (8192, 8192, 128),  # N=4096: 2^20 / 8192 = 128, the floor
        (16384, 16384, 128),  # N=8192: the 128-row floor
        (128, 65664, None),  # MoCo N=128, K=65536: one 128-row block
        (256, 65792, 128),  # MoCo N=256, K=65536: two 128-row blocks
        (0, 10, None),
    ],
)
def test_auto_rule_on_cpu(rows: int, cols: int, expected: int | None) -> None:
    assert resolve_chunk_size("auto", rows, cols, CPU) == expected


@pytest.mark.parametrize(
    ("rows", "cols", "expected"),
    [
        (8192, 8192, None),  # 2^26 logits: the plain path on accelerators
        (16383, 16384, None),  # just under 2^28
        (16384, 16384, 1024),  # 2^28 logits: blocks of 2^24 / 16384 rows
        (65536, 65536, 256),
    ],
)
def test_auto_rule_on_other_devices(rows: int, cols: int, expected: int | None) -> None:
    assert resolve_chunk_size("auto", rows, cols, META) == expected


@pytest.mark.parametrize("chunk_size", [None, 1, 7, 4096])
def test_explicit_choices_pass_through(chunk_size: int | None) -> None:
    for device in (CPU, META):
        assert resolve_chunk_size(chunk_size, 16384, 16384, device) == chunk_size


def test_auto_keeps_the_plain_path_while_compiling(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_chunk_size("auto", 16384, 16384, CPU) == 128
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert resolve_chunk_size("auto", 16384, 16384, CPU) is None


def _assert_auto_equals_plain(loss: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> None:
    """``loss(chunk_size, *inputs)`` with ``"auto"`` and ``None``: same value and gradients."""
    results = []
    for chunk_size in ("auto", None):
        leaves = [x.clone().requires_grad_(True) for x in inputs]
        value = loss(chunk_size, *leaves)
        results.append((value.detach(), *torch.autograd.grad(value, leaves)))
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def _spy_blocks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the block size of every blockwise call (the plain path records nothing)."""
    seen: list[int] = []
    original = _chunked_ce._BlockwiseLogSumExp.apply

    def spy(*args: object) -> torch.Tensor:
        seen.append(args[-1])  # type: ignore[arg-type]
        return original(*args)  # type: ignore[no-any-return]

    monkeypatch.setattr(_chunked_ce._BlockwiseLogSumExp, "apply", spy)
    return seen


def test_nt_xent_auto_chunks_a_large_batch_and_equals_the_plain_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = _spy_blocks(monkeypatch)
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(1024, 16, generator=gen, dtype=torch.float64) for _ in range(2))
    _assert_auto_equals_plain(
        lambda chunk_size, a, b: nt_xent(a, b, temperature=0.2, chunk_size=chunk_size), a, b
    )
    assert seen == [512]  # 2N = 2048 rows and columns: 2^20 / 2048 rows per block


def test_default_is_auto_and_small_batches_take_the_plain_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = _spy_blocks(monkeypatch)
    a, b = torch.randn(64, 16), torch.randn(64, 16)
    nt_xent(a, b)
    NTXentLoss()(a, b)
    info_nce(a, b, negatives=torch.randn(4096, 16))
    assert seen == []
    info_nce(a, b, chunk_size=16)
    assert seen == [16]


def test_info_nce_auto_chunks_a_long_queue_and_equals_the_plain_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = _spy_blocks(monkeypatch)
    gen = torch.Generator().manual_seed(1)
    q, k = (torch.randn(256, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    u = torch.randn(8192, 8, generator=gen, dtype=torch.float64)
    _assert_auto_equals_plain(
        lambda chunk_size, q: info_nce(
            q, k, negatives=u, in_batch_negatives=False, chunk_size=chunk_size
        ),
        q,
    )
    assert seen == [128]  # 256 rows x 8192 columns: 2^20 / 8192 = 128 rows, two blocks


@pytest.mark.parametrize("loss", [nt_xent, info_nce])
def test_rejects_unknown_chunk_size_strings(loss) -> None:
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    message = "chunk_size must be an int > 0, 'auto' or None, got 'fast'"
    with pytest.raises(ValueError, match=message):
        loss(a, b, chunk_size="fast")


def _gradient_penalty(chunk_size: int | str | None, a: torch.Tensor, b: torch.Tensor):
    """The loss, its input gradient (create_graph) and the gradient of ||grad||^2."""
    a = a.clone().requires_grad_(True)
    b = b.clone().requires_grad_(True)
    loss = nt_xent(a, b, temperature=0.3, chunk_size=chunk_size)
    (grad_a,) = torch.autograd.grad(loss, [a], create_graph=True)
    penalty = grad_a.square().sum()
    return (loss.detach(), grad_a.detach(), *torch.autograd.grad(penalty, [a, b]))


@pytest.mark.parametrize("chunk_size", [2, "auto"])
def test_double_backward_equals_the_plain_path(chunk_size: int | str) -> None:
    # "auto" chunks at N=1024 on CPU; the gradient of a gradient penalty must still be exact
    n = 5 if chunk_size == 2 else 1024
    gen = torch.Generator().manual_seed(4)
    a, b = (torch.randn(n, 6, generator=gen, dtype=torch.float64) for _ in range(2))
    got, want = _gradient_penalty(chunk_size, a, b), _gradient_penalty(None, a, b)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_blockwise_gradgradcheck() -> None:
    gen = torch.Generator().manual_seed(5)
    q, k = (torch.randn(5, 3, generator=gen, dtype=torch.float64) for _ in range(2))
    u = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    q.requires_grad_(True)
    u.requires_grad_(True)
    assert torch.autograd.gradgradcheck(
        lambda q, u: info_nce(q, k, negatives=u, temperature=0.5, chunk_size=2), (q, u)
    )


def test_auto_keeps_the_plain_path_under_torch_func_and_forward_ad(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = _spy_blocks(monkeypatch)
    gen = torch.Generator().manual_seed(6)
    a, b = (torch.randn(1024, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    grad = torch.func.grad(lambda x: nt_xent(x, b))(a)
    plain_a = a.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(nt_xent(plain_a, b, chunk_size=None), [plain_a])
    torch.testing.assert_close(grad, want, rtol=1e-10, atol=1e-12)
    tangent = torch.randn(1024, 8, generator=gen, dtype=torch.float64)
    _, jvp = torch.func.jvp(lambda x: nt_xent(x, b), (a,), (tangent,))
    torch.testing.assert_close(jvp, (want * tangent).sum(), rtol=1e-9, atol=1e-12)
    assert seen == []  # neither transform reached the blockwise Function
    nt_xent(a, b)  # without a transform, "auto" chunks this batch
    assert seen == [512]


def test_public_resolver_accepts_a_device_string() -> None:
    assert resolve_chunk_size("auto", 2048, 2048, "cpu") == 512
    assert resolve_chunk_size("auto", 2048, 2048, "meta") is None


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("auto", -1, 10, CPU), ValueError, "rows"),
        (("auto", 10, 2.5, CPU), TypeError, "cols"),
        ((0, 10, 10, CPU), ValueError, "chunk_size"),
        (("fast", 10, 10, CPU), ValueError, "chunk_size"),
        (("auto", 10, 10, 0), TypeError, "device must be a torch.device or str, got int"),
    ],
)
def test_public_resolver_rejects_bad_arguments(
    args: tuple[object, ...], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        resolve_chunk_size(*args)  # type: ignore[arg-type]
