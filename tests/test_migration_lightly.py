"""The migration guide's claims, side by side with lightly (docs/guides/migration.rst).

Each test is one row of the guide: the lightly call and the sslosses call it maps to compute the
same value (float64), or differ exactly as the guide says. Skipped when lightly is not installed;
CI does not need it.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import sslosses.functional as SF
from sslosses import EMA, MoCoQueue, SwAVPrototypes, TiCoCovariance, cosine_schedule

lightly_loss = pytest.importorskip("lightly.loss")
lightly_utils = pytest.importorskip("lightly.models.utils")
lightly_heads = pytest.importorskip("lightly.models.modules.heads")
lightly_scheduler = pytest.importorskip("lightly.utils.scheduler")

TOL = {"rtol": 1e-12, "atol": 1e-12}


def _pair(n: int = 6, d: int = 5, *, grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.randn(n, d, dtype=torch.float64, requires_grad=grad)
    b = torch.randn(n, d, dtype=torch.float64, requires_grad=grad)
    return a, b


def test_ntxent_same_value_at_lightly_temperature() -> None:
    a, b = _pair()
    expected = lightly_loss.NTXentLoss(temperature=0.5)(a, b)
    torch.testing.assert_close(SF.nt_xent(a, b, temperature=0.5), expected, **TOL)
    assert lightly_loss.NTXentLoss().temperature == 0.5  # the guide's default row


def test_ntxent_memory_bank_is_info_nce_with_a_queue() -> None:
    n, d, k = 4, 3, 7  # k != d so the bank's layout is unambiguous
    loss = lightly_loss.NTXentLoss(temperature=0.5, memory_bank_size=(k, d)).double()
    loss(*_pair(n, d, grad=True))  # lightly fills its bank with random vectors on first use
    buffer = next(b for name, b in loss.named_buffers() if name.endswith("bank"))
    with torch.no_grad():  # its random rows are unit-norm in float32 only; make them exact
        buffer.copy_(nn.functional.normalize(buffer, dim=1 if buffer.shape == (k, d) else 0))
    bank = (buffer.T if buffer.shape == (d, k) else buffer).detach().clone()  # (k, d)
    a, b = _pair(n, d, grad=True)
    expected = loss(a, b)
    queue = MoCoQueue(k, d, dtype=torch.float64)
    queue.push(bank)  # lightly's random start, pushed explicitly
    got = SF.info_nce(a, b, negatives=queue.features(), in_batch_negatives=False, temperature=0.5)
    torch.testing.assert_close(got, expected, **TOL)


def test_ntxent_batch_of_one() -> None:
    a, b = _pair(1)
    assert lightly_loss.NTXentLoss()(a, b).item() == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        SF.nt_xent(a, b)


def test_barlow_twins_lambda_param_is_lambd() -> None:
    a, b = _pair(8, 4)
    expected = lightly_loss.BarlowTwinsLoss(lambda_param=5e-3)(a, b)
    torch.testing.assert_close(SF.barlow_twins_loss(a, b, lambd=5e-3), expected, **TOL)
    assert lightly_loss.BarlowTwinsLoss().lambda_param == 5e-3


def test_negative_cosine_similarity_without_stop_gradient() -> None:
    p, z = _pair(grad=True)
    expected = lightly_loss.NegativeCosineSimilarity()(p, z)
    got = SF.negative_cosine_similarity(p, z, stop_gradient=False)
    torch.testing.assert_close(got, expected, **TOL)
    (gp_l, gz_l) = torch.autograd.grad(expected, (p, z))
    (gp, gz) = torch.autograd.grad(got, (p, z))
    torch.testing.assert_close((gp, gz), (gp_l, gz_l), **TOL)
    # the default stops the gradient on the target, as lightly's examples do with z.detach()
    (gz_default,) = torch.autograd.grad(
        SF.negative_cosine_similarity(p, z), z, allow_unused=True, materialize_grads=True
    )
    assert torch.count_nonzero(gz_default) == 0


def test_byol_loss_gradient_is_twice_negative_cosine() -> None:
    p, z = _pair(grad=True)
    (g_lightly,) = torch.autograd.grad(lightly_loss.NegativeCosineSimilarity()(p, z.detach()), p)
    (g_ours,) = torch.autograd.grad(SF.byol_loss(p, z), p)
    torch.testing.assert_close(g_ours, 2 * g_lightly, **TOL)
    (g_half,) = torch.autograd.grad(0.5 * SF.byol_loss(p, z), p)
    torch.testing.assert_close(g_half, g_lightly, **TOL)


def test_update_momentum_is_ema_with_buffers_kept() -> None:
    online = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).double()
    online(torch.randn(5, 4, dtype=torch.float64))  # running statistics differ from the copy's
    target_l, target_ours = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).double(), None
    target_ours = copy.deepcopy(target_l)
    lightly_utils.update_momentum(online, target_l, m=0.9)  # (online, target, m)
    SF.ema_update_(target=target_ours, online=online, momentum=0.9, buffers="keep")
    for x, y in zip(target_ours.state_dict().values(), target_l.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, **TOL)
    ema = EMA(target_l, momentum=0.9, buffers="keep")  # the module form
    ema.update(online)
    lightly_utils.update_momentum(online, target_l, m=0.9)
    for x, y in zip(ema.module.state_dict().values(), target_l.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, **TOL)


def test_cosine_schedule_lightly_uses_k_over_k_minus_1() -> None:
    total = 11
    for k in range(total - 1):
        expected = lightly_scheduler.cosine_schedule(k, total, 0.996, 1.0)
        assert cosine_schedule(k, total - 1, 0.996, 1.0) == pytest.approx(expected, abs=1e-15)
    assert cosine_schedule(5, total, 0.996, 1.0) != pytest.approx(
        lightly_scheduler.cosine_schedule(5, total, 0.996, 1.0), abs=1e-9
    )


def test_swav_loss_high_and_low_resolution_lists_and_queue() -> None:
    g = torch.Generator().manual_seed(0)
    high = [torch.randn(6, 10, dtype=torch.float64, generator=g) for _ in range(2)]
    low = [torch.randn(6, 10, dtype=torch.float64, generator=g) for _ in range(3)]
    queue = [torch.randn(12, 10, dtype=torch.float64, generator=g) for _ in range(2)]
    criterion = lightly_loss.SwaVLoss(temperature=0.1, sinkhorn_epsilon=0.05)
    torch.testing.assert_close(
        SF.swav_loss([*high, *low], temperature=0.1, epsilon=0.05),
        criterion(high, low).reshape(()),
        **TOL,
    )
    torch.testing.assert_close(
        SF.swav_loss([*high, *low], queue_scores=queue),
        criterion(high, low, queue_outputs=queue).reshape(()),
        **TOL,
    )


def test_swav_prototypes_have_no_bias() -> None:
    theirs = lightly_heads.SwaVPrototypes(8, 5).double()
    linear = theirs.heads[0]
    assert linear.bias is not None  # lightly's prototype layer has a bias
    ours = SwAVPrototypes(8, 5).double()
    assert not any(name.endswith("bias") for name, _ in ours.named_parameters())
    with torch.no_grad():
        ours.weight.copy_(linear.weight)
        linear.bias.zero_()  # lightly's behaviour with its bias at zero is ours
    x = torch.randn(4, 8, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(x), **TOL)


def test_frozen_prototypes_forward_step_is_cancel_gradients() -> None:
    theirs = lightly_heads.SwaVPrototypes(8, 5, n_steps_frozen_prototypes=2).double()
    ours = SwAVPrototypes(8, 5, freeze_steps=2).double()
    x = torch.randn(4, 8, dtype=torch.float64)
    for step, frozen in [(0, True), (1, True), (2, False)]:
        theirs.zero_grad(set_to_none=True)
        ours.zero_grad(set_to_none=True)
        out = theirs(x, step)
        if out.requires_grad:
            out.sum().backward()
        ours(x).sum().backward()
        assert ours.cancel_gradients_(step) is frozen
        assert (theirs.heads[0].weight.grad is None) is frozen
        assert (ours.weight.grad is None) is frozen


def test_dino_teacher_temperature_is_rounded_to_float32_in_lightly() -> None:
    gen = torch.Generator().manual_seed(0)
    student = [torch.randn(5, 8, generator=gen, dtype=torch.float64) for _ in range(4)]
    teacher = [torch.randn(5, 8, generator=gen, dtype=torch.float64) for _ in range(2)]
    loss = lightly_loss.DINOLoss(output_dim=8).double()
    expected = loss(teacher, student, teacher_temp=0.04)  # lightly: teacher first
    center = torch.zeros(8, dtype=torch.float64)
    rounded = float(torch.tensor(0.04))  # what lightly divides by
    got = SF.dino_loss(student, teacher, center=center, teacher_temperature=rounded)
    torch.testing.assert_close(got, expected, rtol=1e-14, atol=1e-14)
    exact = SF.dino_loss(student, teacher, center=center, teacher_temperature=0.04)
    torch.testing.assert_close(exact, expected, rtol=1e-7, atol=1e-7)
    assert exact.item() != got.item()  # the rounding is visible in float64


def test_koleo_same_value_and_gradient() -> None:
    x = torch.randn(9, 5, dtype=torch.float64, requires_grad=True)
    expected = lightly_loss.KoLeoLoss()(x)
    got = SF.koleo_loss(x)
    torch.testing.assert_close(got, expected, **TOL)
    (g_lightly,) = torch.autograd.grad(expected, x)
    (g_ours,) = torch.autograd.grad(got, x)
    torch.testing.assert_close(g_ours, g_lightly, **TOL)


def test_koleo_batch_of_one() -> None:
    x = torch.randn(1, 384, dtype=torch.float64)
    expected = -torch.log(torch.tensor(1e-8 * 384**0.5 + 1e-8, dtype=torch.float64))
    torch.testing.assert_close(lightly_loss.KoLeoLoss()(x), expected, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="at least 2"):
        SF.koleo_loss(x)


def test_mmcr_same_value_and_gradient_without_normalization() -> None:
    online = torch.randn(6, 3, 5, dtype=torch.float64, requires_grad=True)  # (B, k, D)
    momentum = torch.randn(6, 3, 5, dtype=torch.float64, requires_grad=True)
    expected = lightly_loss.MMCRLoss(lmda=5e-3)(online, momentum)
    views = list(online.unbind(1)) + list(momentum.unbind(1))
    got = SF.mmcr_loss(views, lambd=5e-3, normalize=False)
    torch.testing.assert_close(got, expected, **TOL)
    grads = torch.autograd.grad(got, [online, momentum])
    for g, w in zip(grads, torch.autograd.grad(expected, [online, momentum]), strict=True):
        torch.testing.assert_close(g, w, **TOL)
    assert lightly_loss.MMCRLoss().lmda == 5e-3  # the guide's default row


def test_tico_same_values_over_steps_and_the_same_state() -> None:
    theirs = lightly_loss.TiCoLoss(beta=0.9, rho=8.0)
    ours = TiCoCovariance(5, beta=0.9, dtype=torch.float64)
    for _ in range(3):
        a, b = _pair(6, 5, grad=True)
        expected = theirs(a, b)
        ours.update(a)
        got = SF.tico_loss(a, b, ours.covariance, rho=8.0)
        torch.testing.assert_close(got, expected, **TOL)
        for g, w in zip(
            torch.autograd.grad(got, [a, b]), torch.autograd.grad(expected, [a, b]), strict=True
        ):
            torch.testing.assert_close(g, w, **TOL)
        torch.testing.assert_close(ours.covariance, theirs.C, **TOL)
    assert (theirs.beta, theirs.rho) == (0.9, 8.0)  # the guide's default row


def test_wmse_same_value_and_gradient_with_the_same_draws() -> None:
    views = [t.requires_grad_(True) for t in _pair(16, 3)]
    criterion = lightly_loss.WMSELoss(embedding_dim=3, w_size=8, w_iter=2, num_samples=2)
    torch.manual_seed(5)  # lightly draws torch.randperm(bs) from the global generator
    expected = criterion(torch.cat(views))
    torch.manual_seed(5)
    got = SF.wmse_loss(views, w_size=8, w_iter=2)  # generator=None: the same global draws
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)
    for g, w in zip(
        torch.autograd.grad(got, views), torch.autograd.grad(expected, views), strict=True
    ):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10)
    default = lightly_loss.WMSELoss()
    assert (default.w_size, default.w_iter, default.whitening.eps) == (256, 1, 0.0)


# lightly keeps SIGReg's frequency grid and weights as float32 buffers: 1e-9 apart in float64
GRID_TOL = {"rtol": 1e-7, "atol": 1e-9}


def test_sigreg_and_lejepa_same_value_and_gradient_with_the_same_draws() -> None:
    x = torch.randn(3, 8, 5, dtype=torch.float64, requires_grad=True)  # (V, N, D)
    torch.manual_seed(3)  # lightly draws its directions with torch.randn from the global generator
    expected = lightly_loss.SIGReg(num_vectors=16)(x)
    torch.manual_seed(3)
    got = SF.sigreg_loss(x, num_slices=16)  # generator=None: the same draw
    torch.testing.assert_close(got, expected, **GRID_TOL)
    for g, w in zip(torch.autograd.grad(got, x), torch.autograd.grad(expected, x), strict=True):
        torch.testing.assert_close(g, w, **GRID_TOL)
    global_proj, local_proj = x[:2], x[2:]
    torch.manual_seed(4)
    expected = lightly_loss.LeJEPALoss(sigreg_num_vectors=16)(
        local_proj=local_proj, global_proj=global_proj
    )
    torch.manual_seed(4)
    got = SF.lejepa_loss(list(global_proj), list(local_proj), num_slices=16)
    torch.testing.assert_close(got, expected, **GRID_TOL)
    default = lightly_loss.LeJEPALoss()
    assert (default.lambda_param, default.sigreg.num_vectors) == (0.05, 1024)


def _filled_bank_and_queue(k: int, d: int) -> tuple[nn.Module, MoCoQueue]:
    """lightly's NNMemoryBankModule and a MoCoQueue fed the same batches until both are full."""
    memory = pytest.importorskip("lightly.models.modules.nn_memory_bank")
    bank = memory.NNMemoryBankModule(size=(k, d)).double()
    queue = MoCoQueue(k, d, dtype=torch.float64)
    for _ in range(k // 4):  # batches of 4 fill k exactly: lightly's slots = queue order
        batch = torch.randn(4, d, dtype=torch.float64)
        bank(batch, update=True)
        queue.push(batch)
    return bank, queue


def test_nn_memory_bank_is_nearest_neighbours_of_the_queue() -> None:
    bank, queue = _filled_bank_and_queue(12, 5)
    z = torch.randn(7, 5, dtype=torch.float64)
    expected = bank(z, update=False)
    for chunk_size in (None, 5):
        got = SF.nearest_neighbours(z, queue.features(), chunk_size=chunk_size)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="support must hold at least 1 row"):
        SF.nearest_neighbours(z, MoCoQueue(12, 5, dtype=torch.float64).features())


def test_nnclr_example_is_nt_xent_of_the_neighbours() -> None:
    bank, queue = _filled_bank_and_queue(12, 5)
    z_a, z_b = (torch.randn(4, 5, dtype=torch.float64) for _ in range(2))
    p_a, p_b = _pair(4, 5, grad=True)
    criterion = lightly_loss.NTXentLoss(temperature=0.1)
    # lightly's NNCLR example: both searched in the bank before its update with the second view
    nn_0 = bank(z_a.detach(), update=False)
    nn_1 = bank(z_b.detach(), update=True)
    expected = 0.5 * (criterion(nn_0, p_b) + criterion(nn_1, p_a))
    nn_a = SF.nearest_neighbours(z_a, queue.features())
    nn_b = SF.nearest_neighbours(z_b, queue.features())
    got = 0.5 * (SF.nt_xent(nn_a, p_b) + SF.nt_xent(nn_b, p_a))
    # the paper's loss contrasts across views only: a different value
    paper = SF.nnclr_loss(z_a, z_b, p_a, p_b, queue.features(), symmetric=False)
    queue.push(z_b)  # after the loss; the paper enqueues the first view instead
    torch.testing.assert_close(got, expected, **TOL)
    for g, e in zip(
        torch.autograd.grad(got, [p_a, p_b]), torch.autograd.grad(expected, [p_a, p_b]), strict=True
    ):
        torch.testing.assert_close(g, e, **TOL)
    buffer = next(b for name, b in bank.named_buffers() if name.endswith("bank"))
    torch.testing.assert_close(queue.queue, buffer, rtol=0, atol=0)  # the same slots
    assert abs(paper.item() - expected.item()) > 1e-3


def test_dcl_and_dclw_same_value_and_gradient() -> None:
    a, b = _pair(7, 5, grad=True)
    for theirs, ours in (
        (lightly_loss.DCLLoss(), lambda x, y: SF.dcl_loss(x, y)),
        (lightly_loss.DCLLoss(temperature=0.3), lambda x, y: SF.dcl_loss(x, y, temperature=0.3)),
        (lightly_loss.DCLWLoss(), lambda x, y: SF.dclw_loss(x, y)),
        (
            lightly_loss.DCLWLoss(temperature=0.2, sigma=0.8),
            lambda x, y: SF.dclw_loss(x, y, temperature=0.2, sigma=0.8),
        ),
    ):
        with warnings.catch_warnings():  # lightly's weight copy-constructs a tensor (warns)
            warnings.filterwarnings("ignore", "To copy construct", UserWarning)
            expected = theirs(a, b)
        got = ours(a, b)
        torch.testing.assert_close(got, expected, **TOL)
        torch.testing.assert_close(
            torch.autograd.grad(got, (a, b)), torch.autograd.grad(expected, (a, b)), **TOL
        )
    defaults = lightly_loss.DCLWLoss()
    assert defaults.temperature == 0.1 and lightly_loss.DCLLoss().weight_fn is None
    assert defaults.weight_fn.keywords == {"sigma": 0.5}  # the guide's default rows


def test_dcl_chunked_same_value_as_lightly() -> None:
    a, b = _pair(9, 4)
    expected = lightly_loss.DCLLoss()(a, b)
    torch.testing.assert_close(SF.dcl_loss(a, b, chunk_size=2), expected, **TOL)


def test_dcl_batch_of_one() -> None:
    a, b = _pair(1)
    assert lightly_loss.DCLLoss()(a, b).item() == -float("inf")  # no negatives
    with pytest.raises(ValueError, match="at least 2"):
        SF.dcl_loss(a, b)


def test_hypersphere_loss_is_alignment_plus_uniformity() -> None:
    a, b = _pair(8, 5, grad=True)
    for t, lam, alpha in ((1.0, 1.0, 2.0), (2.0, 0.5, 1.0)):
        expected = lightly_loss.HypersphereLoss(t=t, lam=lam, alpha=alpha)(a, b)
        got = (
            SF.alignment_loss(a, b, alpha=alpha)
            + lam * (SF.uniformity_loss(a, t=t) + SF.uniformity_loss(b, t=t)) / 2
        )
        torch.testing.assert_close(got, expected, **TOL)
        torch.testing.assert_close(
            torch.autograd.grad(got, (a, b)), torch.autograd.grad(expected, (a, b)), **TOL
        )
    assert lightly_loss.HypersphereLoss().t == 1.0  # the original's default is t=2
