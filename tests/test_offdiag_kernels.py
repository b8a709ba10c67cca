"""The off-diagonal kernels shared by Barlow Twins and VICReg: the PyTorch cores (strips, tiles,
Gram rows; general and symmetric ``B=None``) and the Triton kernels under ``TRITON_INTERPRET=1``
(in a subprocess, as the variable must precede importing Triton)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sslosses.kernels import offdiag_torch, offdiag_triton
from sslosses.kernels.offdiag_torch import (
    dense_loss,
    gram_block,
    gram_frobenius,
    gram_terms,
    strip_height,
    symmetric_product,
    tiled_loss,
)

ROOT = Path(__file__).resolve().parents[1]
LAMBD = 0.3


def _normalized(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    z_a = torch.randn(n, d, generator=gen, dtype=torch.float64)
    z_b = z_a + torch.randn(n, d, generator=gen, dtype=torch.float64)
    bn = torch.nn.functional.batch_norm
    A = bn(z_a, None, None, training=True)
    B = bn(z_b, None, None, training=True)
    return A, B


def _explicit(A: torch.Tensor, B: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Rows [start, stop) of the loss, written out with a (D, D) weight matrix."""
    n, d = A.shape
    c = A.T @ B / n
    eye = torch.eye(d, dtype=A.dtype)
    weight = torch.full((d, d), LAMBD, dtype=A.dtype).fill_diagonal_(1.0)
    return (weight * (c - eye) ** 2)[start:stop].sum()


def _value_and_grads(fn: object, A: torch.Tensor, B: torch.Tensor) -> list[torch.Tensor]:
    a = A.detach().clone().requires_grad_(True)
    b = B.detach().clone().requires_grad_(True)
    value = fn(a, b)  # type: ignore[operator]
    return [value.detach(), *torch.autograd.grad(value, (a, b))]


def _close(xs: list[torch.Tensor], ys: list[torch.Tensor], tol: float = 1e-12) -> None:
    for x, y in zip(xs, ys, strict=True):
        torch.testing.assert_close(x, y, rtol=tol, atol=tol)


@pytest.mark.parametrize("budget", [1, 7 * 3, 10_000])  # one row, three rows, one strip
@pytest.mark.parametrize(("start", "stop"), [(0, 7), (2, 5), (0, 3), (4, 7), (3, 3)])
def test_strip_functions_match_explicit_formula(budget: int, start: int, stop: int) -> None:
    A, B = _normalized(9, 7)
    expected = _value_and_grads(lambda a, b: _explicit(a, b, start, stop), A, B)
    dense = _value_and_grads(lambda a, b: dense_loss(a, b, 9, 1.0, LAMBD, start, stop), A, B)
    tiled = _value_and_grads(
        lambda a, b: tiled_loss(a, b, 9, 1.0, LAMBD, start, stop, budget), A, B
    )
    _close(dense, expected)
    _close(tiled, expected)


def test_strips_partition_the_loss() -> None:
    # Distributed ranks each take a range of rows of C: the pieces add up to the whole.
    A, B = _normalized(6, 11)
    whole = _value_and_grads(lambda a, b: dense_loss(a, b, 6, 1.0, LAMBD, 0, 11), A, B)
    pieces = [
        _value_and_grads(lambda a, b, s=s, t=t: tiled_loss(a, b, 6, 1.0, LAMBD, s, t, 12), A, B)
        for s, t in itertools.pairwise([0, 4, 5, 11])
    ]
    _close([sum(p[i] for p in pieces) for i in range(3)], whole)  # type: ignore[misc]


def test_empty_strip_is_zero_with_zero_gradient() -> None:
    A, B = _normalized(4, 3)
    for fn in (
        lambda a, b: dense_loss(a, b, 4, 1.0, LAMBD, 2, 2),
        lambda a, b: tiled_loss(a, b, 4, 1.0, LAMBD, 2, 2, 100),
        lambda a, b: gram_frobenius(a, b, 4, 1, 1),
    ):
        value, grad_a, grad_b = _value_and_grads(fn, A, B)
        assert float(value) == 0.0
        assert not grad_a.any() and not grad_b.any()


@pytest.mark.parametrize(("start", "stop"), [(0, 8), (0, 3), (3, 8), (2, 6)])
def test_gram_rows_match_frobenius_of_cross_correlation(start: int, stop: int) -> None:
    A, B = _normalized(8, 5)

    def explicit(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return ((a[start:stop] @ a.T) * (b[start:stop] @ b.T)).sum() / a.shape[0] ** 2

    ours = _value_and_grads(lambda a, b: gram_frobenius(a, b, 8, start, stop), A, B)
    _close(ours, _value_and_grads(explicit, A, B))
    if (start, stop) == (0, 8):  # all rows: the squared Frobenius norm of C
        c = A.T @ B / 8
        torch.testing.assert_close(ours[0], (c**2).sum(), rtol=1e-12, atol=0)


def test_gradcheck_partial_ranges() -> None:
    A, B = _normalized(5, 6)
    a = A.detach().requires_grad_(True)
    b = B.detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, y: dense_loss(x, y, 5, 1.0, LAMBD, 1, 4), (a, b))
    assert torch.autograd.gradcheck(lambda x, y: tiled_loss(x, y, 5, 1.0, LAMBD, 1, 6, 12), (a, b))
    assert torch.autograd.gradcheck(lambda x, y: gram_frobenius(x, y, 5, 1, 4), (a, b))


def _explicit_general(
    A: torch.Tensor, B: torch.Tensor, divisor: float, on: float, off: float, start: int, stop: int
) -> torch.Tensor:
    """The weighted loss with a (D, D) weight matrix, any divisor and diagonal weight."""
    d = A.shape[1]
    c = A.T @ B / divisor
    weight = torch.full((d, d), off, dtype=A.dtype).fill_diagonal_(on)
    return (weight * (c - torch.eye(d, dtype=A.dtype)) ** 2)[start:stop].sum()


@pytest.mark.parametrize(("start", "stop"), [(0, 7), (2, 5)])
@pytest.mark.parametrize("on", [0.0, 0.7])
def test_symmetric_and_weighted_cores_match_explicit_formula(
    start: int, stop: int, on: float
) -> None:
    # B=None is B=A (a covariance, VICReg): the gradient collects both factors' contributions.
    A, _ = _normalized(9, 7)
    A = A - A.mean(0)
    divisor, off = 8.0, 1 / 7

    def sym(fn: object) -> list[torch.Tensor]:
        a = A.detach().clone().requires_grad_(True)
        value = fn(a)  # type: ignore[operator]
        return [value.detach(), *torch.autograd.grad(value, (a,))]

    expected = sym(lambda a: _explicit_general(a, a, divisor, on, off, start, stop))
    _close(sym(lambda a: dense_loss(a, None, divisor, on, off, start, stop)), expected)
    for budget in (7, 3 * 7, 10_000):
        _close(
            sym(lambda a, k=budget: tiled_loss(a, None, divisor, on, off, start, stop, k)), expected
        )
    frob = sym(lambda a: ((a.T @ a) ** 2).sum() / divisor**2)
    _close(sym(lambda a: gram_frobenius(a, None, divisor, 0, 9)), frob)
    rows = sym(lambda a: ((a[2:6] @ a.T) ** 2).sum() / divisor**2)
    _close(sym(lambda a: gram_frobenius(a, None, divisor, 2, 6)), rows)


@pytest.mark.parametrize("block", [1, 2, 3, 7, 256])
@pytest.mark.parametrize("on", [0.0, 0.7])
def test_whole_covariance_from_upper_blocks_matches_explicit_formula(
    monkeypatch: pytest.MonkeyPatch, block: int, on: float
) -> None:
    # One strip holding all of a covariance (B=None) is built from its upper block triangle
    # and mirrored: blocks of 1, 2 and 3 rows (uneven last block), one block, and the default.
    monkeypatch.setattr(offdiag_torch, "SYMMETRIC_BLOCK", block)
    A, _ = _normalized(9, 7)
    A = A - A.mean(0)
    a = A.detach().clone().requires_grad_(True)
    expected = _explicit_general(a, a, 8.0, on, 1 / 7, 0, 7)
    value = tiled_loss(a, None, 8.0, on, 1 / 7, 0, 7, 10_000)
    _close(
        [value.detach(), *torch.autograd.grad(value, (a,))],
        [expected.detach(), *torch.autograd.grad(expected, (a,))],
    )


@pytest.mark.parametrize(("B_none", "start", "stop"), [(True, 0, 7), (True, 2, 5), (False, 0, 7)])
def test_kept_strip_survives_a_second_backward(B_none: bool, start: int, stop: int) -> None:
    # One strip is kept from the forward for the backward: a backward must leave it intact, so
    # a second backward through the same graph (retain_graph) gives the same gradient.
    A, B = _normalized(9, 7)
    a = A.detach().clone().requires_grad_(True)
    b = B.detach().clone().requires_grad_(True)
    value = tiled_loss(a, None if B_none else b, 8.0, 0.7, 0.3, start, stop, 10_000)
    inputs = (a,) if B_none else (a, b)
    first = torch.autograd.grad(value, inputs, retain_graph=True)
    second = torch.autograd.grad(value, inputs)
    _close(list(second), list(first), tol=0.0)
    other = a if B_none else b
    expected = _explicit_general(a, other, 8.0, 0.7, 0.3, start, stop)
    _close(list(first), list(torch.autograd.grad(expected, inputs)))


def test_gradcheck_symmetric() -> None:
    A, _ = _normalized(5, 6)
    a = A.detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: tiled_loss(x, None, 4, 0.0, 0.5, 1, 6, 12), (a,))
    assert torch.autograd.gradcheck(lambda x: gram_frobenius(x, None, 4, 1, 4), (a,))


@pytest.mark.parametrize("block", [1, 2, 3, 9, 32])
@pytest.mark.parametrize("B_none", [False, True])
@pytest.mark.parametrize(("start", "stop"), [(0, 9), (2, 6)])
def test_gram_terms_match_explicit_formula_for_both_outputs(
    monkeypatch: pytest.MonkeyPatch, block: int, B_none: bool, start: int, stop: int
) -> None:
    # Both outputs (a share of ||C||_F^2 and the whole diagonal of C) with independent upstream
    # gradients; whole Gram matrices are built from upper row blocks of 1, 2, 3 (an uneven last
    # block), 9 (one block) and 32 rows (the default, more than N).
    monkeypatch.setattr(offdiag_torch, "GRAM_BLOCK", block)
    A, B = _normalized(9, 7)
    divisor, w_frob = 8.0, 0.7
    w_diag = torch.linspace(-1.0, 2.0, 7, dtype=A.dtype)

    def ours(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        frob, diag = gram_terms(a, None if B_none else b, divisor, start, stop)
        return w_frob * frob + (w_diag * diag).sum()

    def explicit(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        other = a if B_none else b
        frob = ((a[start:stop] @ a.T) * (other[start:stop] @ other.T)).sum() / divisor**2
        diag = (a.T @ other).diagonal() / divisor
        return w_frob * frob + (w_diag * diag).sum()

    def value_and_grads(fn: object) -> list[torch.Tensor]:
        a = A.detach().clone().requires_grad_(True)
        b = B.detach().clone().requires_grad_(True)
        value = fn(a, b)  # type: ignore[operator]
        grads = torch.autograd.grad(value, (a, b), allow_unused=True, materialize_grads=True)
        return [value.detach(), *grads]  # B=None: b unused, its gradient zero

    _close(value_and_grads(ours), value_and_grads(explicit))


@pytest.mark.parametrize("B_none", [False, True])
@pytest.mark.parametrize(("start", "stop"), [(0, 9), (2, 6)])
def test_gram_terms_batch_norm_inside_matches_f_batch_norm_outside(
    B_none: bool, start: int, stop: int
) -> None:
    # Barlow Twins hands raw embeddings and eps: the Function normalizes them itself and takes
    # the gradient back through the normalization in place
    gen = torch.Generator().manual_seed(5)
    z_a = 2.0 * torch.randn(9, 7, generator=gen, dtype=torch.float64) + 1.0
    z_b = z_a + torch.randn(9, 7, generator=gen, dtype=torch.float64)
    w_diag = torch.linspace(-1.0, 2.0, 7, dtype=torch.float64)
    eps = 0.3  # large, so that a misplaced eps shows

    def weighted(frob: torch.Tensor, diag: torch.Tensor) -> torch.Tensor:
        return 0.7 * frob + (w_diag * diag).sum()

    def inside(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return weighted(*gram_terms(a, None if B_none else b, 9.0, start, stop, eps))

    def outside(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        bn = torch.nn.functional.batch_norm
        A = bn(a, None, None, training=True, eps=eps)
        B = None if B_none else bn(b, None, None, training=True, eps=eps)
        return weighted(*gram_terms(A, B, 9.0, start, stop))

    def value_and_grads(fn: object) -> list[torch.Tensor]:
        a = z_a.clone().requires_grad_(True)
        b = z_b.clone().requires_grad_(True)
        value = fn(a, b)  # type: ignore[operator]
        grads = torch.autograd.grad(value, (a, b), allow_unused=True, materialize_grads=True)
        return [value.detach(), *grads]

    _close(value_and_grads(inside), value_and_grads(outside), tol=1e-10)


@pytest.mark.parametrize("block", [1, 4, 5, 16])
def test_symmetric_product_is_the_full_product(block: int) -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(11, 16, generator=gen, dtype=torch.float64)
    gram = symmetric_product(x.t(), x.new_empty(11, 11), block)  # X X^T from its upper half
    torch.testing.assert_close(gram, x @ x.T, rtol=1e-12, atol=1e-12)


def test_gram_block() -> None:
    assert gram_block(8) == 32  # at least GRAM_BLOCK rows
    assert gram_block(256) == 32
    assert gram_block(2048) == 128  # N // 16 beyond 512 rows


def test_strip_height() -> None:
    assert strip_height(8192) == 512  # 2**22 elements of C per strip
    assert strip_height(10, budget=35) == 3
    assert strip_height(10, budget=5) == 1  # at least one row
    assert strip_height(0) >= 1


def test_triton_usable_only_on_cuda_float32_or_float16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offdiag_triton, "HAS_TRITON", True)
    cuda = torch.device("cuda")
    assert offdiag_triton.usable(cuda, torch.float32)
    assert offdiag_triton.usable(cuda, torch.float16)
    assert not offdiag_triton.usable(cuda, torch.float64)
    assert not offdiag_triton.usable(torch.device("cpu"), torch.float32)
    monkeypatch.setattr(offdiag_triton, "HAS_TRITON", False)
    assert not offdiag_triton.usable(cuda, torch.float32)


_TRITON_SCRIPT = textwrap.dedent(
    """
    import json, os
    assert os.environ["TRITON_INTERPRET"] == "1"
    import torch
    from sslosses.kernels import offdiag_triton as T
    from sslosses.kernels.offdiag_torch import dense_loss

    assert T.HAS_TRITON
    bn = torch.nn.functional.batch_norm
    results = {}
    configs = {
        # name: n, d, dtype, start, stop, strip budget (elements), upstream gradient
        "fp32_whole": (10, 40, torch.float32, 0, 40, 10**6, 1.0),
        "fp32_rows_strips": (37, 21, torch.float32, 5, 19, 3 * 21, 2.5),
        "fp16_whole": (10, 40, torch.float16, 0, 40, 10**6, 1.0),
    }
    for name, (n, d, dtype, start, stop, budget, upstream) in configs.items():
        gen = torch.Generator().manual_seed(0)
        z_a = torch.randn(n, d, generator=gen)
        z_b = z_a + torch.randn(n, d, generator=gen)
        A = bn(z_a, None, None, training=True).to(dtype)
        B = bn(z_b, None, None, training=True).to(dtype)
        a, b = A.clone().requires_grad_(), B.clone().requires_grad_()
        out = T.triton_loss(a, b, n, 1.0, 0.3, start, stop, budget, (16, 16, 16))
        (out * upstream).backward()
        a64, b64 = A.double().requires_grad_(), B.double().requires_grad_()
        ref = dense_loss(a64, b64, n, 1.0, 0.3, start, stop)
        (ref * upstream).backward()
        rel = lambda x, y: float((x.double() - y).abs().max() / y.abs().max())
        results[name] = {
            "dtype": str(out.dtype),
            "value": rel(out.detach(), ref.detach()),
            "grad_a": rel(a.grad, a64.grad),
            "grad_b": rel(b.grad, b64.grad),
            "grad_dtype": str(a.grad.dtype),
        }
    # VICReg's use: B=None (A^T A), divisor N - 1, no diagonal term, off weight 1/D; all rows
    # (the backward's one-product symmetric path) and a range of rows (both factors)
    gen = torch.Generator().manual_seed(1)
    Z = torch.randn(37, 21, generator=gen)
    Z = Z - Z.mean(0)
    for name, (start, stop) in {"fp32_symmetric": (3, 21), "fp32_symmetric_whole": (0, 21)}.items():
        a = Z.clone().requires_grad_()
        out = T.triton_loss(a, None, 36, 0.0, 1 / 21, start, stop, 4 * 21, (16, 16, 16))
        out.backward()
        a64 = Z.double().requires_grad_()
        ref = dense_loss(a64, None, 36, 0.0, 1 / 21, start, stop)
        ref.backward()
        rel = lambda x, y: float((x.double() - y).abs().max() / y.abs().max())
        results[name] = {
            "dtype": str(out.dtype),
            "value": rel(out.detach(), ref.detach()),
            "grad_a": rel(a.grad, a64.grad),
            "grad_b": rel(a.grad, a64.grad),
        }
    print(json.dumps(results))
    """
)


def test_triton_kernels_under_interpreter_match_dense() -> None:
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", _TRITON_SCRIPT],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout.strip().splitlines()[-1])
    cases = (
        ("fp32_whole", 1e-5),
        ("fp32_rows_strips", 1e-5),
        ("fp16_whole", 2e-3),
        ("fp32_symmetric", 1e-5),
        ("fp32_symmetric_whole", 1e-5),
    )
    for name, tol in cases:
        r = results[name]
        assert r["dtype"] == "torch.float32", name  # partial sums accumulate in float32
        assert r["value"] < tol, (name, r)
        assert r["grad_a"] < tol, (name, r)
        assert r["grad_b"] < tol, (name, r)
    assert results["fp16_whole"]["grad_dtype"] == "torch.float16"
