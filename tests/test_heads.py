"""Heads: each paper's layer configuration, parameter counts, originals' layouts, compile, errors.

The expected layouts and parameter counts are written out here from the original repositories
(named per test), not computed from the library's code.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sslosses
import sslosses.dino
from sslosses import heads
from sslosses.heads import (
    BarlowTwinsProjectionHead,
    BYOLPredictionHead,
    BYOLProjectionHead,
    DINOHead,
    MLPHead,
    MoCoV2ProjectionHead,
    MoCoV3PredictionHead,
    MoCoV3ProjectionHead,
    SimCLRProjectionHead,
    SimSiamPredictionHead,
    SimSiamProjectionHead,
    SwAVProjectionHead,
    VICRegProjectionHead,
    parse_mlp_spec,
)

# Layer summaries: ("linear", in, out, bias), ("bn", features, scale, shift), ("relu",), ("gelu",)


def _layout(head: nn.Module) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for m in head.children():
        if isinstance(m, nn.Linear):
            out.append(("linear", m.in_features, m.out_features, m.bias is not None))
        elif isinstance(m, nn.BatchNorm1d):
            out.append(("bn", m.num_features, m.weight is not None, m.bias is not None))
        elif isinstance(m, nn.ReLU):
            out.append(("relu",))
        elif isinstance(m, nn.GELU):
            out.append(("gelu",))
        else:  # pragma: no cover - a failure message
            raise AssertionError(f"unexpected layer {m}")
    return out


def _n_params(head: nn.Module) -> int:
    return sum(p.numel() for p in head.parameters())


def _on_meta(factory: type[nn.Module], *args: object, **kwargs: object) -> nn.Module:
    with torch.device("meta"):  # full-size heads without allocating their weights
        return factory(*args, **kwargs)


LIN, RELU = "linear", ("relu",)

# (factory, args, kwargs, expected layout, expected parameter count: the paper's configuration)
PAPER_CONFIGS = {
    # google-research/simclr v1 model_util.py: nl_0 = dense(2048, no bias) + BN(center, scale);
    # relu; nl_1 = dense(128, no bias) + BN(center=False, scale=True)
    "simclr": (
        SimCLRProjectionHead,
        (2048,),
        {},
        [
            (LIN, 2048, 2048, False),
            ("bn", 2048, True, True),
            RELU,
            (LIN, 2048, 128, False),
            ("bn", 128, True, False),
        ],
        2048 * 2048 + 2 * 2048 + 2048 * 128 + 128,
    ),
    # facebookresearch/moco builder.py, mlp=True: Linear(2048, 2048), ReLU, Linear(2048, 128)
    "moco_v2": (
        MoCoV2ProjectionHead,
        (2048,),
        {},
        [(LIN, 2048, 2048, True), RELU, (LIN, 2048, 128, True)],
        2048 * 2048 + 2048 + 2048 * 128 + 128,
    ),
    # facebookresearch/moco-v3 builder.py, ViT-B (768): _build_mlp(3, 768, 4096, 256)
    "moco_v3_vit": (
        MoCoV3ProjectionHead,
        (768,),
        {},
        [
            (LIN, 768, 4096, False),
            ("bn", 4096, True, True),
            RELU,
            (LIN, 4096, 4096, False),
            ("bn", 4096, True, True),
            RELU,
            (LIN, 4096, 256, False),
            ("bn", 256, False, False),
        ],
        768 * 4096 + 2 * 4096 + 4096 * 4096 + 2 * 4096 + 4096 * 256,
    ),
    # moco-v3 ResNet-50: _build_mlp(2, 2048, 4096, 256)
    "moco_v3_resnet": (
        MoCoV3ProjectionHead,
        (2048,),
        {"num_layers": 2},
        [
            (LIN, 2048, 4096, False),
            ("bn", 4096, True, True),
            RELU,
            (LIN, 4096, 256, False),
            ("bn", 256, False, False),
        ],
        2048 * 4096 + 2 * 4096 + 4096 * 256,
    ),
    # moco-v3 predictor: _build_mlp(2, 256, 4096, 256)
    "moco_v3_predictor": (
        MoCoV3PredictionHead,
        (),
        {},
        [
            (LIN, 256, 4096, False),
            ("bn", 4096, True, True),
            RELU,
            (LIN, 4096, 256, False),
            ("bn", 256, False, False),
        ],
        256 * 4096 + 2 * 4096 + 4096 * 256,
    ),
    # deepmind byol utils/networks.py MLP: Linear(4096, bias) BN relu Linear(256, no bias)
    "byol_projector": (
        BYOLProjectionHead,
        (2048,),
        {},
        [(LIN, 2048, 4096, True), ("bn", 4096, True, True), RELU, (LIN, 4096, 256, False)],
        2048 * 4096 + 4096 + 2 * 4096 + 4096 * 256,
    ),
    "byol_predictor": (
        BYOLPredictionHead,
        (),
        {},
        [(LIN, 256, 4096, True), ("bn", 4096, True, True), RELU, (LIN, 4096, 256, False)],
        256 * 4096 + 4096 + 2 * 4096 + 4096 * 256,
    ),
    # facebookresearch/simsiam builder.py (the frozen fc bias is not trainable there)
    "simsiam_projector": (
        SimSiamProjectionHead,
        (2048,),
        {},
        [
            (LIN, 2048, 2048, False),
            ("bn", 2048, True, True),
            RELU,
            (LIN, 2048, 2048, False),
            ("bn", 2048, True, True),
            RELU,
            (LIN, 2048, 2048, False),
            ("bn", 2048, False, False),
        ],
        3 * 2048 * 2048 + 2 * 2 * 2048,
    ),
    "simsiam_predictor": (
        SimSiamPredictionHead,
        (),
        {},
        [(LIN, 2048, 512, False), ("bn", 512, True, True), RELU, (LIN, 512, 2048, True)],
        2048 * 512 + 2 * 512 + 512 * 2048 + 2048,
    ),
    # facebookresearch/barlowtwins main.py, --projector 8192-8192-8192
    "barlow_twins": (
        BarlowTwinsProjectionHead,
        (2048,),
        {},
        [
            (LIN, 2048, 8192, False),
            ("bn", 8192, True, True),
            RELU,
            (LIN, 8192, 8192, False),
            ("bn", 8192, True, True),
            RELU,
            (LIN, 8192, 8192, False),
        ],
        2048 * 8192 + 2 * 8192 + 8192 * 8192 + 2 * 8192 + 8192 * 8192,
    ),
    # facebookresearch/vicreg main_vicreg.py Projector, --mlp 8192-8192-8192
    "vicreg": (
        VICRegProjectionHead,
        (2048,),
        {},
        [
            (LIN, 2048, 8192, True),
            ("bn", 8192, True, True),
            RELU,
            (LIN, 8192, 8192, True),
            ("bn", 8192, True, True),
            RELU,
            (LIN, 8192, 8192, False),
        ],
        2048 * 8192 + 8192 + 2 * 8192 + 8192 * 8192 + 8192 + 2 * 8192 + 8192 * 8192,
    ),
    # facebookresearch/swav src/resnet50.py projection_head, hidden_mlp=2048, feat_dim=128
    "swav": (
        SwAVProjectionHead,
        (2048,),
        {},
        [(LIN, 2048, 2048, True), ("bn", 2048, True, True), RELU, (LIN, 2048, 128, True)],
        2048 * 2048 + 2048 + 2 * 2048 + 2048 * 128 + 128,
    ),
}


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_layer_configuration_and_parameter_count_match_the_paper(name: str) -> None:
    factory, args, kwargs, layout, count = PAPER_CONFIGS[name]
    head = _on_meta(factory, *args, **kwargs)
    assert _layout(head) == layout
    assert _n_params(head) == count


def test_every_public_head_has_a_paper_configuration_test() -> None:
    tested = {cfg[0].__name__ for cfg in PAPER_CONFIGS.values()}
    # DINOHead is not an MLPHead (no flat layer list): its configuration test is
    # test_dino_head_default_configuration_and_parameter_count below
    public = {n for n in heads.__all__ if n.endswith("Head") and n not in ("MLPHead", "DINOHead")}
    assert public == tested


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_small_head_shapes_train_and_eval(name: str) -> None:
    factory = PAPER_CONFIGS[name][0]
    if factory in (BarlowTwinsProjectionHead, VICRegProjectionHead):
        head = factory(12, "24-24-20")
    elif factory in (MoCoV3PredictionHead, BYOLPredictionHead, SimSiamPredictionHead):
        head = factory(12, 24, 20)
    elif factory is MoCoV3ProjectionHead:
        head = factory(12, 24, 20, num_layers=3)
    else:
        head = factory(12, out_dim=20)
    x = torch.randn(6, 12, requires_grad=True)
    y = head(x)
    assert y.shape == (6, 20)
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in head.parameters() if p.requires_grad)
    head.eval()
    assert head(torch.randn(1, 12)).shape == (1, 20)
    assert (head.in_dim, head.out_dim) == (12, 20)


def _plain_simsiam_projector(d: int, out: int) -> nn.Sequential:
    """facebookresearch/simsiam builder.py, written plainly (with the frozen fc bias)."""
    fc = nn.Linear(d, out)
    fc.bias.requires_grad = False
    return nn.Sequential(
        nn.Linear(d, d, bias=False), nn.BatchNorm1d(d), nn.ReLU(inplace=True),
        nn.Linear(d, d, bias=False), nn.BatchNorm1d(d), nn.ReLU(inplace=True),
        fc, nn.BatchNorm1d(out, affine=False),
    )  # fmt: skip


def test_simsiam_projector_equals_the_original_with_its_frozen_bias() -> None:
    original = _plain_simsiam_projector(10, 6).double()
    head = SimSiamProjectionHead(10, out_dim=6).double()
    result = head.load_state_dict(original.state_dict(), strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == ["6.bias"]
    assert original[6].bias.abs().sum() > 0  # the bias is there and is cancelled by the BN
    x = torch.randn(8, 10, dtype=torch.float64)
    for _ in range(3):  # train mode: the batch mean removes the bias
        torch.testing.assert_close(head(x), original(x), rtol=0, atol=1e-12)
    # the running means differ by exactly the part of the bias they have absorbed
    absorbed = (1 - 0.9**3) * original[6].bias
    torch.testing.assert_close(original[7].running_mean - head[7].running_mean, absorbed)


def _plain_barlow_projector(sizes: list[int]) -> nn.Sequential:
    """facebookresearch/barlowtwins main.py projector, written plainly."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 2):
        layers += [nn.Linear(sizes[i], sizes[i + 1], bias=False), nn.BatchNorm1d(sizes[i + 1])]
        layers.append(nn.ReLU(inplace=True))
    layers.append(nn.Linear(sizes[-2], sizes[-1], bias=False))
    return nn.Sequential(*layers)


def _plain_vicreg_projector(f: list[int]) -> nn.Sequential:
    """facebookresearch/vicreg main_vicreg.py Projector, written plainly."""
    layers: list[nn.Module] = []
    for i in range(len(f) - 2):
        layers += [nn.Linear(f[i], f[i + 1]), nn.BatchNorm1d(f[i + 1]), nn.ReLU(True)]
    layers.append(nn.Linear(f[-2], f[-1], bias=False))
    return nn.Sequential(*layers)


@pytest.mark.parametrize(
    ("head", "original"),
    [
        (BarlowTwinsProjectionHead(8, "16-16-12"), _plain_barlow_projector([8, 16, 16, 12])),
        (VICRegProjectionHead(8, [16, 16, 12]), _plain_vicreg_projector([8, 16, 16, 12])),
        (
            MoCoV2ProjectionHead(8, out_dim=12),
            nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 12)),
        ),
        (
            SwAVProjectionHead(8, 16, 12),
            nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 12)),
        ),
    ],
)
def test_original_state_dicts_load_strictly_and_give_the_same_outputs(
    head: MLPHead, original: nn.Sequential
) -> None:
    head, original = head.double(), original.double()
    head.load_state_dict(original.state_dict())  # strict: same keys and shapes
    x = torch.randn(5, 8, dtype=torch.float64)
    torch.testing.assert_close(head(x), original(x), rtol=0, atol=0)


def test_simclr_output_batch_norm_has_a_scale_and_no_shift() -> None:
    head = SimCLRProjectionHead(6, out_dim=4).double()
    bn = head[-1]
    assert bn.bias is None and bn.weight is not None and "shift=False" in repr(bn)
    assert "1.bias" in head.state_dict() and "4.bias" not in head.state_dict()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    x = torch.randn(7, 6, dtype=torch.float64)
    y = head(x)
    pre = head[:-1](x)
    expected = (pre - pre.mean(0)) / torch.sqrt(pre.var(0, unbiased=False) + 1e-5)
    torch.testing.assert_close(y, expected * bn.weight, rtol=0, atol=1e-12)
    bn.reset_parameters()
    assert torch.equal(bn.weight, torch.ones(4, dtype=torch.float64))


def test_compile_fullgraph_matches_eager() -> None:
    head = MoCoV3ProjectionHead(8, 16, 4)
    twin = copy.deepcopy(head)
    compiled = torch.compile(twin, fullgraph=True)
    x = torch.randn(6, 8)
    torch.testing.assert_close(compiled(x), head(x))  # train mode: batch statistics
    torch.testing.assert_close(twin[1].running_mean, head[1].running_mean)
    head.eval()
    twin.eval()
    torch.testing.assert_close(compiled(x), head(x))


def test_mlp_head_options() -> None:
    head = MLPHead([4, 8, 8, 2], hidden_norm=False, activation="gelu", output_norm="affine")
    assert _layout(head) == [
        (LIN, 4, 8, True), ("gelu",), (LIN, 8, 8, True), ("gelu",), (LIN, 8, 2, True),
        ("bn", 2, True, True),
    ]  # fmt: skip
    assert head.dims == (4, 8, 8, 2)
    assert _layout(MLPHead("4-2")) == [(LIN, 4, 2, True)]


def test_parse_mlp_spec() -> None:
    assert parse_mlp_spec("8192-8192-8192") == [8192, 8192, 8192]
    assert parse_mlp_spec((3, 4)) == [3, 4]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: MLPHead("16"), ValueError, r"dims must have at least two widths"),
        (lambda: MLPHead("16-x"), ValueError, r"dims must be positive ints joined by '-'"),
        (lambda: MLPHead("16--4"), ValueError, r"joined by '-'.*'16--4'"),
        (lambda: MLPHead([4, 0]), ValueError, r"dims\[1\] must be an int > 0, got 0"),
        (lambda: MLPHead([4, 2.0]), TypeError, r"dims\[1\] must be an int, got float"),
        (lambda: MLPHead(16), TypeError, r"dims must be a str or a sequence of ints, got int"),
        (lambda: MLPHead([]), ValueError, r"dims must name at least one width"),
        (lambda: MLPHead("4-2", hidden_bias=1), TypeError, r"hidden_bias must be a bool"),
        (lambda: MLPHead("4-2", output_norm="bn"), ValueError, r"output_norm must be one of"),
        (lambda: MLPHead("4-2", activation="tanh"), ValueError, r"activation must be one of"),
        (lambda: SimCLRProjectionHead(0), ValueError, r"in_dim must be an int > 0, got 0"),
        (lambda: SimCLRProjectionHead(4, 0), ValueError, r"hidden_dim must be an int > 0"),
        (lambda: BYOLProjectionHead(4, out_dim=-1), ValueError, r"dims\[2\] must be an int > 0"),
        (
            lambda: MoCoV3ProjectionHead(4, num_layers=1),
            ValueError,
            r"num_layers must be an int >= 2, got 1",
        ),
        (lambda: BarlowTwinsProjectionHead(4, "8-a"), ValueError, r"spec must be positive ints"),
        (lambda: VICRegProjectionHead(4.0), TypeError, r"in_dim must be an int, got float"),
    ],
)
def test_bad_arguments(call: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()  # type: ignore[operator]


def test_bad_input() -> None:
    head = SwAVProjectionHead(4, 8, 2)
    with pytest.raises(ValueError, match=r"input must have shape \(N, 4\), got \(3, 5\)"):
        head(torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"input must have shape \(N, 4\), got \(4,\)"):
        head(torch.randn(4))
    with pytest.raises(TypeError, match=r"input must be a torch.Tensor, got list"):
        head([1.0, 2.0])


# -------------------------------------------------------------------------------- DINOHead
# DINOHead is not an MLPHead: the official module's mlp + L2 normalization + weight-normalized
# last layer (facebookresearch/dino vision_transformer.py DINOHead), tested here on its own.
def test_dino_head_is_defined_once_and_exported_where_it_was() -> None:
    assert DINOHead.__module__ == "sslosses.heads"
    assert sslosses.DINOHead is DINOHead and sslosses.dino.DINOHead is DINOHead


def test_dino_head_default_configuration_and_parameter_count() -> None:
    head = DINOHead(384)
    linears = [m for m in head.mlp.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (384, 2048),
        (2048, 2048),
        (2048, 256),
    ]
    assert [type(m).__name__ for m in head.mlp] == [  # type: ignore[union-attr]
        "Linear", "GELU", "Linear", "GELU", "Linear"
    ]  # fmt: skip
    mlp_params = 384 * 2048 + 2048 + 2048 * 2048 + 2048 + 2048 * 256 + 256
    last_params = 65536 * 256 + 65536  # direction V and gain g
    assert sum(p.numel() for p in head.parameters()) == mlp_params + last_params
    trainable = sum(p.numel() for p in head.parameters() if p.requires_grad)
    assert trainable == mlp_params + 65536 * 256  # norm_last_layer: the gain is fixed
    assert head.last_layer.bias is None


def test_dino_head_with_bn_and_one_layer() -> None:
    bn = DINOHead(8, 10, hidden_dim=16, bottleneck_dim=4, n_layers=4, use_bn=True)
    assert [type(m).__name__ for m in bn.mlp] == [  # type: ignore[union-attr]
        "Linear", "BatchNorm1d", "GELU", "Linear", "BatchNorm1d", "GELU",
        "Linear", "BatchNorm1d", "GELU", "Linear",
    ]  # fmt: skip
    one = DINOHead(8, 10, bottleneck_dim=4, n_layers=1)
    assert isinstance(one.mlp, torch.nn.Linear) and one.mlp.out_features == 4


def test_dino_head_initialization() -> None:
    torch.manual_seed(0)
    head = DINOHead(256, 1000, hidden_dim=512, bottleneck_dim=128)
    for m in head.mlp.modules():
        if isinstance(m, torch.nn.Linear):
            assert m.bias is not None and bool((m.bias == 0).all())
            assert abs(m.weight.std().item() - 0.02) < 0.002
            assert m.weight.abs().max().item() <= 2.0  # truncated at [-2, 2]
    gain = head.last_layer.parametrizations.weight.original0
    assert gain.shape == (1000, 1) and bool((gain == 1).all()) and not gain.requires_grad
    # unit-norm rows of the effective last-layer weight
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(1000))


def test_dino_head_forward_is_the_normalized_bottleneck_times_the_unit_rows() -> None:
    head = DINOHead(6, 9, hidden_dim=8, bottleneck_dim=5, norm_last_layer=False)
    assert head.last_layer.parametrizations.weight.original0.requires_grad
    x = torch.randn(4, 6)
    u = F.normalize(head.mlp(x), dim=1)
    v = head.last_layer.parametrizations.weight.original1
    torch.testing.assert_close(head(x), u @ F.normalize(v, dim=1).T)


def test_dino_head_returns_its_bottleneck_before_the_normalization() -> None:
    # DINOv2-style KoLeo reads the MLP's output u; the pair must be (h(x), u) of one pass
    torch.manual_seed(0)
    head = DINOHead(6, 9, hidden_dim=8, bottleneck_dim=5).double()
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    scores, u = head(x, return_bottleneck=True)
    torch.testing.assert_close(scores, head(x), rtol=0, atol=0)
    torch.testing.assert_close(u, head.mlp(x), rtol=0, atol=0)
    assert u.shape == (4, 5) and not torch.allclose(u.norm(dim=1), torch.ones(4, dtype=u.dtype))
    # both outputs carry the gradient to the input (the MLP is shared, not recomputed)
    (gs,) = torch.autograd.grad(scores.sum(), x, retain_graph=True)
    (gu,) = torch.autograd.grad(u.sum(), x)
    (want,) = torch.autograd.grad(head.mlp(x).sum(), x)
    torch.testing.assert_close(gu, want)
    assert gs.abs().sum() > 0
    with pytest.raises(TypeError, match=r"return_bottleneck must be a bool, got int"):
        head(x, return_bottleneck=1)  # type: ignore[call-overload]


def test_dino_head_cancel_gradients() -> None:
    head = DINOHead(6, 9, hidden_dim=8, bottleneck_dim=5, norm_last_layer=False, freeze_steps=2)
    for step, dropped in [(0, True), (1, True), (2, False), (5, False)]:
        head.zero_grad(set_to_none=True)
        head(torch.randn(4, 6)).pow(2).sum().backward()
        assert head.cancel_gradients_(step) is dropped
        last = list(head.last_layer.parameters())
        assert len(last) == 2
        assert all((p.grad is None) is dropped for p in last)
        assert all(p.grad is not None for p in head.mlp.parameters())
    with pytest.raises(ValueError, match=r"step must be an int >= 0, got -1"):
        head.cancel_gradients_(-1)
    assert "freeze_steps=2" in repr(head)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"in_dim": 0}, ValueError, r"in_dim must be an int > 0, got 0"),
        ({"out_dim": 2.0}, TypeError, r"out_dim must be an int, got float"),
        ({"n_layers": 0}, ValueError, r"n_layers must be an int > 0, got 0"),
        ({"use_bn": 1}, TypeError, r"use_bn must be a bool, got int"),
        ({"freeze_steps": -1}, ValueError, r"freeze_steps must be an int >= 0, got -1"),
    ],
)
def test_dino_head_errors(kwargs: dict[str, object], error: type, match: str) -> None:
    args: dict[str, object] = {"in_dim": 4, "out_dim": 5, "hidden_dim": 6, "bottleneck_dim": 3}
    with pytest.raises(error, match=match):
        DINOHead(**{**args, **kwargs})  # type: ignore[arg-type]
