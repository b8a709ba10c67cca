r"""The projection and prediction heads of the papers, with their published layer configurations.

Every head but :class:`DINOHead` is an :class:`MLPHead`: a flat :class:`torch.nn.Sequential`
of ``Linear``, ``BatchNorm1d`` and activation layers, in the order of the original repository,
so that ``print(head)`` shows the layers and the ``state_dict`` keys are the layer indices, as
in the original ``nn.Sequential`` heads. Hidden layers are ``Linear [-> BatchNorm1d] ->
activation``; the output layer is ``Linear [-> BatchNorm1d]``. Each class names the file it
reproduces, and the defaults are that file's (ResNet-50 widths for the image models). Linear
layers keep PyTorch's default initialization (the PyTorch repositories do the same; the
TensorFlow and JAX ones draw from other distributions). The input shape and the errors are
documented once, on :class:`MLPHead`.

:class:`DINOHead` (public as ``sslosses.DINOHead``) keeps the official module's structure
instead: an ``mlp`` (GELU, truncated-normal initialization), L2 normalization and a
weight-normalized ``last_layer``. A new method's head is one more subclass of :class:`MLPHead`
where its layers are an MLP's.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Literal, get_args, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrizations

from sslosses._autograd import FrozenAtFirst
from sslosses._validation import (
    check_bool,
    check_choice,
    check_non_negative_int,
    check_positive_int,
)
from sslosses.typing import Activation, OutputNorm

__all__ = [
    "BYOLPredictionHead",
    "BYOLProjectionHead",
    "BarlowTwinsProjectionHead",
    "DINOHead",
    "MLPHead",
    "MoCoV2ProjectionHead",
    "MoCoV3PredictionHead",
    "MoCoV3ProjectionHead",
    "SimCLRProjectionHead",
    "SimSiamPredictionHead",
    "SimSiamProjectionHead",
    "SwAVProjectionHead",
    "VICRegProjectionHead",
    "parse_mlp_spec",
]

_OUTPUT_NORMS: tuple[OutputNorm, ...] = get_args(OutputNorm)
_ACTIVATIONS: tuple[Activation, ...] = get_args(Activation)


class _ScaleOnlyBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` with a learned scale and no shift (TensorFlow's ``center=False``)."""

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, affine=True)
        self.bias = None  # type: ignore[assignment]

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.weight is not None:
            nn.init.ones_(self.weight)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, scale=True, "
            f"shift=False, track_running_stats={self.track_running_stats}"
        )


def parse_mlp_spec(spec: str | Sequence[int], name: str = "spec") -> list[int]:
    """Read a layer-width spec: ``"8192-8192-8192"`` or a sequence of positive ints.

    The string form is the ``--projector`` / ``--mlp`` argument of facebookresearch/barlowtwins
    and facebookresearch/vicreg: widths joined by ``-``.

    Args:
        spec: the widths, as a ``-``-joined string or a sequence of ints.
        name: the argument name used in error messages. Default: ``"spec"``.

    Returns:
        The widths as a list of Python ints.

    Raises:
        TypeError: if ``spec`` is neither a string nor a sequence of ints.
        ValueError: if it is empty or a width is not a positive integer.

    Examples:
        >>> from sslosses.heads import parse_mlp_spec
        >>> parse_mlp_spec("8192-8192-8192")
        [8192, 8192, 8192]
    """
    if isinstance(spec, str):
        parts = spec.split("-")
        if not all(p.strip().isdigit() for p in parts):
            raise ValueError(
                f"{name} must be positive ints joined by '-', e.g. '8192-8192', got {spec!r}"
            )
        values: list[object] = [int(p) for p in parts]
    elif isinstance(spec, Sequence):
        values = list(spec)
    else:
        raise TypeError(f"{name} must be a str or a sequence of ints, got {type(spec).__name__}")
    if not values:
        raise ValueError(f"{name} must name at least one width, got {spec!r}")
    return [check_positive_int(f"{name}[{i}]", v) for i, v in enumerate(values)]


class MLPHead(nn.Sequential):
    r"""A multi-layer perceptron head: the building block of every head in this module.

    .. math::
        h_{\ell} = \sigma(\mathrm{BN}(W_{\ell} h_{\ell - 1} + b_{\ell})), \quad
        \ell = 1, \dots, L - 1, \qquad
        z = \mathrm{BN}_{\text{out}}(W_L h_{L - 1} + b_L),

    where each :math:`\mathrm{BN}` is present or not (``hidden_norm``, ``output_norm``), each
    bias is present or not (``hidden_bias``, ``output_bias``) and :math:`\sigma` is the
    activation. ``dims`` lists the widths from input to output, so ``len(dims) - 1`` linear
    layers.

    Args:
        dims: the widths :math:`D_0, \dots, D_L` (at least two), as a sequence of ints or a
            ``"2048-8192-8192"`` string (see :func:`parse_mlp_spec`).
        hidden_bias: whether the hidden linear layers have a bias. Default: ``True``.
        hidden_norm: whether a ``BatchNorm1d`` (with affine parameters) follows each hidden
            linear layer. Default: ``True``.
        output_bias: whether the output linear layer has a bias. Default: ``True``.
        output_norm: normalization after the output linear layer: ``"none"``, ``"affine"``
            (``BatchNorm1d``), ``"scale_only"`` (``BatchNorm1d`` with a learned scale and no
            shift, TensorFlow's ``center=False``) or ``"no_affine"``
            (``BatchNorm1d(affine=False)``). Default: ``"none"``.
        activation: the hidden activation, ``"relu"`` or ``"gelu"``. Default: ``"relu"``.

    Shape:
        - input: :math:`(N, D_0)`, :math:`D_0` = ``in_dim``.
        - output: :math:`(N, D_L)`, :math:`D_L` = ``out_dim``.

    Raises:
        TypeError: if a width is not an ``int`` (or the widths are neither a string nor a
            sequence), a flag is not a ``bool``, or the input of a call is not a tensor.
        ValueError: if fewer than two widths are given, a width is not positive,
            ``output_norm`` / ``activation`` is not one of the listed values, or the input of
            a call is not :math:`(N, D_0)`.

    Examples:
        >>> import torch
        >>> from sslosses.heads import MLPHead
        >>> head = MLPHead("16-32-8", hidden_bias=False, output_norm="no_affine")
        >>> [type(layer).__name__ for layer in head]
        ['Linear', 'BatchNorm1d', 'ReLU', 'Linear', 'BatchNorm1d']
        >>> head[0].bias is None, head[-1].affine
        (True, False)
        >>> head(torch.randn(4, 16)).shape
        torch.Size([4, 8])
    """

    def __init__(
        self,
        dims: str | Sequence[int],
        *,
        hidden_bias: bool = True,
        hidden_norm: bool = True,
        output_bias: bool = True,
        output_norm: OutputNorm = "none",
        activation: Activation = "relu",
    ) -> None:
        widths = parse_mlp_spec(dims, "dims")
        if len(widths) < 2:
            raise ValueError(f"dims must have at least two widths (input and output), got {widths}")
        check_bool("hidden_bias", hidden_bias)
        check_bool("hidden_norm", hidden_norm)
        check_bool("output_bias", output_bias)
        check_choice("output_norm", output_norm, _OUTPUT_NORMS)
        check_choice("activation", activation, _ACTIVATIONS)
        layers: list[nn.Module] = []
        for d_in, d_out in itertools.pairwise(widths[:-1]):
            layers.append(nn.Linear(d_in, d_out, bias=hidden_bias))
            if hidden_norm:
                layers.append(nn.BatchNorm1d(d_out))
            layers.append(nn.ReLU(inplace=True) if activation == "relu" else nn.GELU())
        layers.append(nn.Linear(widths[-2], widths[-1], bias=output_bias))
        if output_norm == "affine":
            layers.append(nn.BatchNorm1d(widths[-1]))
        elif output_norm == "scale_only":
            layers.append(_ScaleOnlyBatchNorm1d(widths[-1]))
        elif output_norm == "no_affine":
            layers.append(nn.BatchNorm1d(widths[-1], affine=False))
        super().__init__(*layers)
        self.dims: tuple[int, ...] = tuple(widths)

    @overload
    def __getitem__(self, idx: slice) -> nn.Sequential: ...

    @overload
    def __getitem__(self, idx: int) -> nn.Module: ...

    def __getitem__(self, idx: slice | int) -> nn.Sequential | nn.Module:
        """A layer, or a slice of the layers as a plain :class:`torch.nn.Sequential`."""
        if isinstance(idx, slice):
            return nn.Sequential(OrderedDict(list(self._modules.items())[idx]))
        return super().__getitem__(idx)

    @property
    def in_dim(self) -> int:
        """The input width :math:`D_0`."""
        return self.dims[0]

    @property
    def out_dim(self) -> int:
        """The output width :math:`D_L`."""
        return self.dims[-1]

    def forward(self, input: Tensor) -> Tensor:
        if not isinstance(input, Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
        if input.dim() != 2 or input.shape[1] != self.in_dim:
            raise ValueError(f"input must have shape (N, {self.in_dim}), got {tuple(input.shape)}")
        for layer in self:
            input = layer(input)
        return input


def _hidden(hidden_dim: int | None, in_dim: int) -> int:
    return in_dim if hidden_dim is None else check_positive_int("hidden_dim", hidden_dim)


class SimCLRProjectionHead(MLPHead):
    r"""SimCLR's projection head :math:`g`: two linear layers, each followed by BatchNorm.

    .. math::
        z = \mathrm{BN}_{\gamma}(W_2\, \mathrm{ReLU}(\mathrm{BN}(W_1 h)))

    ``Linear(D, H, bias=False) -> BatchNorm1d(H) -> ReLU -> Linear(H, out_dim, bias=False)
    -> BatchNorm1d(out_dim)`` with a scale and no shift (a linear layer followed by BatchNorm
    has no bias; the output BatchNorm is created with ``center=False``).

    Args:
        in_dim: the backbone's feature width :math:`D` (2048 for ResNet-50).
        hidden_dim: the hidden width :math:`H`. Default: ``None`` (``in_dim``, as SimCLR).
        out_dim: the output width. Default: ``128``.

    Shape and errors: those of :class:`MLPHead`.

    Examples:
        >>> import torch
        >>> from sslosses.heads import SimCLRProjectionHead
        >>> head = SimCLRProjectionHead(32)
        >>> head[-1]  # the output BatchNorm: a learned scale, no shift
        _ScaleOnlyBatchNorm1d(128, eps=1e-05, momentum=0.1, scale=True, shift=False,
                              track_running_stats=True)
        >>> head(torch.randn(4, 32)).shape
        torch.Size([4, 128])

    References:
        Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
        ICML 2020, arXiv:2002.05709. google-research/simclr (v1) ``model_util.py``:
        ``projection_head`` with ``head_proj_mode="nonlinear"``, ``num_nlh_layers=1``,
        ``head_proj_dim=128``, and ``linear_layer`` (``use_bias and not use_bn``,
        ``center=use_bias``).
    """

    def __init__(self, in_dim: int, hidden_dim: int | None = None, out_dim: int = 128) -> None:
        in_dim = check_positive_int("in_dim", in_dim)
        hidden = _hidden(hidden_dim, in_dim)
        super().__init__(
            [in_dim, hidden, out_dim],
            hidden_bias=False,
            output_bias=False,
            output_norm="scale_only",
        )


class MoCoV2ProjectionHead(MLPHead):
    r"""MoCo v2's projection head: a 2-layer MLP with biases and no BatchNorm.

    .. math::
        z = W_2\, \mathrm{ReLU}(W_1 h + b_1) + b_2

    ``Linear(D, H) -> ReLU -> Linear(H, out_dim)``.

    Args:
        in_dim: the backbone's feature width :math:`D` (2048 for ResNet-50).
        hidden_dim: the hidden width :math:`H`. Default: ``None`` (``in_dim``, as MoCo v2).
        out_dim: the output width. Default: ``128``.

    Shape and errors: those of :class:`MLPHead`.

    Examples:
        >>> import torch
        >>> from sslosses.heads import MoCoV2ProjectionHead
        >>> MoCoV2ProjectionHead(32)(torch.randn(4, 32)).shape
        torch.Size([4, 128])

    References:
        Chen et al., "Improved Baselines with Momentum Contrastive Learning", arXiv:2003.04297.
        facebookresearch/moco ``moco/builder.py`` (``mlp=True``: ``Linear(dim_mlp, dim_mlp),
        ReLU()`` before the ``fc`` layer to ``dim=128``).
    """

    def __init__(self, in_dim: int, hidden_dim: int | None = None, out_dim: int = 128) -> None:
        in_dim = check_positive_int("in_dim", in_dim)
        hidden = _hidden(hidden_dim, in_dim)
        super().__init__([in_dim, hidden, out_dim], hidden_norm=False)


class MoCoV3ProjectionHead(MLPHead):
    r"""MoCo v3's projection head: bias-free linear layers, BatchNorm after each.

    .. math::
        z = \mathrm{BN}_{\text{no affine}}(W_L\, \mathrm{ReLU}(\mathrm{BN}(\cdots
        \mathrm{ReLU}(\mathrm{BN}(W_1 h)))))

    ``num_layers`` linear layers without bias; each hidden one is followed by ``BatchNorm1d``
    and ReLU, the last by ``BatchNorm1d(affine=False)``. The ViT models use 3 layers (the
    default, as in the paper); the ResNet-50 model of the repository uses 2.

    Args:
        in_dim: the backbone's feature width :math:`D` (768 for ViT-B, 2048 for ResNet-50).
        hidden_dim: the hidden width (``mlp_dim``). Default: ``4096``.
        out_dim: the output width (``dim``). Default: ``256``.
        num_layers: the number of linear layers, at least 2. Default: ``3``.

    Shape and errors: those of :class:`MLPHead`, plus those of ``num_layers``:

    Raises:
        TypeError: if ``num_layers`` is not an ``int``.
        ValueError: if ``num_layers < 2``.

    Examples:
        >>> import torch
        >>> from sslosses.heads import MoCoV3ProjectionHead
        >>> len(MoCoV3ProjectionHead(32, 64, 16)), len(MoCoV3ProjectionHead(32, num_layers=2))
        (8, 5)
        >>> MoCoV3ProjectionHead(32, 64, 16)(torch.randn(4, 32)).shape
        torch.Size([4, 16])

    References:
        Chen, Xie and He, "An Empirical Study of Training Self-Supervised Vision Transformers",
        ICCV 2021, arXiv:2104.02057. facebookresearch/moco-v3 ``moco/builder.py``
        (``_build_mlp``; ``_init_encoders_with_vit``: 3 layers, ``_init_encoders_with_resnet``:
        2 layers; ``dim=256``, ``mlp_dim=4096``).
    """

    def __init__(
        self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 256, *, num_layers: int = 3
    ) -> None:
        in_dim = check_positive_int("in_dim", in_dim)
        hidden_dim = check_positive_int("hidden_dim", hidden_dim)
        if check_positive_int("num_layers", num_layers) < 2:
            raise ValueError(f"num_layers must be an int >= 2, got {num_layers}")
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        super().__init__(dims, hidden_bias=False, output_bias=False, output_norm="no_affine")


class MoCoV3PredictionHead(MLPHead):
    r"""MoCo v3's prediction head: :class:`MoCoV3ProjectionHead`'s layers, 2 of them.

    ``Linear(256, 4096, bias=False) -> BatchNorm1d -> ReLU -> Linear(4096, 256, bias=False)
    -> BatchNorm1d(affine=False)``: the repository builds the predictor with the same
    ``_build_mlp``, so its output also passes through a BatchNorm without affine parameters.

    Args:
        in_dim: the input width (the projector's ``out_dim``). Default: ``256``.
        hidden_dim: the hidden width (``mlp_dim``). Default: ``4096``.
        out_dim: the output width. Default: ``256``.

    Shape and errors: those of :class:`MLPHead`.

    Examples:
        >>> import torch
        >>> from sslosses.heads import MoCoV3PredictionHead, MoCoV3ProjectionHead
        >>> projector = MoCoV3ProjectionHead(32, 64, 16)
        >>> MoCoV3PredictionHead(16, 64, 16)(projector(torch.randn(4, 32))).shape
        torch.Size([4, 16])

    References:
        Chen, Xie and He, ICCV 2021, arXiv:2104.02057. facebookresearch/moco-v3
        ``moco/builder.py`` (``self.predictor = self._build_mlp(2, dim, mlp_dim, dim)``).
    """

    def __init__(self, in_dim: int = 256, hidden_dim: int = 4096, out_dim: int = 256) -> None:
        super().__init__(
            [in_dim, hidden_dim, out_dim],
            hidden_bias=False,
            output_bias=False,
            output_norm="no_affine",
        )


class BYOLProjectionHead(MLPHead):
    r"""BYOL's projector: ``Linear(D, 4096) -> BatchNorm1d -> ReLU -> Linear(4096, 256)``.

    .. math::
        z = W_2\, \mathrm{ReLU}(\mathrm{BN}(W_1 h + b_1))

    The hidden linear layer has a bias, the output layer none (BYOL's ``MLP`` in
    ``utils/networks.py``: ``hk.Linear(hidden_size, with_bias=True)``, ``hk.BatchNorm`` with a
    scale and an offset, ``relu``, ``hk.Linear(output_size, with_bias=False)``).

    Args:
        in_dim: the backbone's feature width :math:`D` (2048 for ResNet-50).
        hidden_dim: the hidden width. Default: ``4096``.
        out_dim: the output width. Default: ``256``.

    Shape and errors: those of :class:`MLPHead`.

    Examples:
        >>> import torch
        >>> from sslosses.heads import BYOLProjectionHead
        >>> head = BYOLProjectionHead(32, 64, 16)
        >>> head[0].bias is None, head[-1].bias is None
        (False, True)
        >>> head(torch.randn(4, 32)).shape
        torch.Size([4, 16])

    References:
        Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, arXiv:2006.07733.
        google-deepmind/deepmind-research ``byol/utils/networks.py`` (``MLP``) and
        ``byol/configs/byol.py`` (``projector_hidden_size=4096``, ``projector_output_size=256``).
    """

    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 256) -> None:
        super().__init__([in_dim, hidden_dim, out_dim], output_bias=False)


class BYOLPredictionHead(MLPHead):
    r"""BYOL's predictor: the projector's layers on the projection, ``256 -> 4096 -> 256``.

    Args:
        in_dim: the input width (the projector's ``out_dim``). Default: ``256``.
        hidden_dim: the hidden width. Default: ``4096``.
        out_dim: the output width. Default: ``256``.

    Shape and errors: those of :class:`MLPHead`.

    Examples:
        >>> import torch
        >>> from sslosses.heads import BYOLPredictionHead
        >>> BYOLPredictionHead().dims
        (256, 4096, 256)
        >>> BYOLPredictionHead(16, 64, 16)(torch.randn(4, 16)).shape
        torch.Size([4, 16])

    References:
        Grill et al., NeurIPS 2020, arXiv:2006.07733. google-deepmind/deepmind-research
        ``byol/byol_experiment.py`` (the ``predictor`` is the same ``MLP`` with
        ``predictor_hidden_size=4096`` and the projector's output size).
    """

    def __init__(self, in_dim: int = 256, hidden_dim: int = 4096, out_dim: int = 256) -> None:
        super().__init__([in_dim, hidden_dim, out_dim], output_bias=False)


class SimSiamProjectionHead(MLPHead):
    r"""SimSiam's projector: three bias-free linear layers, BatchNorm on every output.

    .. math::
        z = \mathrm{BN}_{\text{no affine}}(W_3\, \mathrm{ReLU}(\mathrm{BN}(W_2\,
        \mathrm{ReLU}(\mathrm{BN}(W_1 h)))))

    ``Linear(D, D) -> BN -> ReLU -> Linear(D, D) -> BN -> ReLU -> Linear(D, 2048)
    -> BatchNorm1d(2048, affine=False)``. The repository's third linear layer keeps a bias
    frozen at its initial value, which the following BatchNorm subtracts again; it is left
    out here. Training-mode outputs are the same; the running mean, and so the evaluation-mode
    output, differs by the part of that bias the running mean has absorbed.

    Args:
        in_dim: the backbone's feature width :math:`D` (2048 for ResNet-50).
        hidden_dim: the hidden width. Default: ``None`` (``in_dim``, as SimSiam).
        out_dim: the output width (``dim``). Default: ``2048``.

    Shape and errors: those of :class:`MLPHead`.

    Examples:
        >>> import torch
        >>> from sslosses.heads import SimSiamProjectionHead
        >>> head = SimSiamProjectionHead(32, out_dim=16)
        >>> head.dims, head[-1].affine
        ((32, 32, 32, 16), False)
        >>> head(torch.randn(4, 32)).shape
        torch.Size([4, 16])

    References:
        Chen and He, "Exploring Simple Siamese Representation Learning", CVPR 2021,
        arXiv:2011.10566. facebookresearch/simsiam ``simsiam/builder.py`` (``dim=2048``).
    """

    def __init__(self, in_dim: int, hidden_dim: int | None = None, out_dim: int = 2048) -> None:
        in_dim = check_positive_int("in_dim", in_dim)
        hidden = _hidden(hidden_dim, in_dim)
        super().__init__(
            [in_dim, hidden, hidden, out_dim],
            hidden_bias=False,
            output_bias=False,
            output_norm="no_affine",
        )


class SimSiamPredictionHead(MLPHead):
    r"""SimSiam's predictor: a bottleneck ``2048 -> 512 -> 2048``.

    ``Linear(2048, 512, bias=False) -> BatchNorm1d(512) -> ReLU -> Linear(512, 2048)`` (the
    output layer has a bias and no BatchNorm).

    Args:
        in_dim: the input width (the projector's ``out_dim``). Default: ``2048``.
        hidden_dim: the bottleneck width (``pred_dim``). Default: ``512``.
        out_dim: the output width. Default: ``2048``.

    Shape and errors: those of :class:`MLPHead`.

    Examples:
        >>> import torch
        >>> from sslosses.heads import SimSiamPredictionHead
        >>> head = SimSiamPredictionHead(16, 4, 16)
        >>> [type(layer).__name__ for layer in head], head[-1].bias is not None
        (['Linear', 'BatchNorm1d', 'ReLU', 'Linear'], True)
        >>> head(torch.randn(4, 16)).shape
        torch.Size([4, 16])

    References:
        Chen and He, CVPR 2021, arXiv:2011.10566. facebookresearch/simsiam
        ``simsiam/builder.py`` (``pred_dim=512``).
    """

    def __init__(self, in_dim: int = 2048, hidden_dim: int = 512, out_dim: int = 2048) -> None:
        super().__init__([in_dim, hidden_dim, out_dim], hidden_bias=False)


class BarlowTwinsProjectionHead(MLPHead):
    r"""Barlow Twins' projector ("expander") from a ``"8192-8192-8192"`` spec.

    For the widths :math:`D, D_1, \dots, D_L`: each hidden layer is
    ``Linear(bias=False) -> BatchNorm1d -> ReLU``, the last a bias-free ``Linear``. The loss
    applies the final ``BatchNorm1d(affine=False)`` itself
    (:func:`sslosses.functional.barlow_twins_loss`).

    Args:
        in_dim: the backbone's feature width :math:`D` (2048 for ResNet-50).
        spec: the widths after the input, as ``"8192-8192-8192"`` or a sequence of ints.
            Default: ``"8192-8192-8192"``.

    Shape and errors: those of :class:`MLPHead`.

    Examples:
        >>> import torch
        >>> from sslosses.heads import BarlowTwinsProjectionHead
        >>> head = BarlowTwinsProjectionHead(32, "64-64-64")
        >>> head.dims
        (32, 64, 64, 64)
        >>> head(torch.randn(4, 32)).shape
        torch.Size([4, 64])

    References:
        Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy Reduction",
        ICML 2021, arXiv:2103.03230. facebookresearch/barlowtwins ``main.py``
        (``--projector 8192-8192-8192``, ``BarlowTwins.__init__``).
    """

    def __init__(self, in_dim: int, spec: str | Sequence[int] = "8192-8192-8192") -> None:
        dims = [check_positive_int("in_dim", in_dim), *parse_mlp_spec(spec)]
        super().__init__(dims, hidden_bias=False, output_bias=False)


class VICRegProjectionHead(MLPHead):
    r"""VICReg's expander from a ``"8192-8192-8192"`` spec.

    As :class:`BarlowTwinsProjectionHead` except that the hidden linear layers have a bias:
    ``Linear -> BatchNorm1d -> ReLU`` per hidden layer, a bias-free ``Linear`` last.

    Args:
        in_dim: the backbone's feature width :math:`D` (2048 for ResNet-50).
        spec: the widths after the input (VICReg's ``--mlp``). Default: ``"8192-8192-8192"``.

    Shape and errors: those of :class:`MLPHead`.

    Examples:
        >>> import torch
        >>> from sslosses.heads import VICRegProjectionHead
        >>> head = VICRegProjectionHead(32, [64, 64, 64])
        >>> [layer.bias is not None for layer in head if isinstance(layer, torch.nn.Linear)]
        [True, True, False]
        >>> head(torch.randn(4, 32)).shape
        torch.Size([4, 64])

    References:
        Bardes, Ponce and LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
        Self-Supervised Learning", ICLR 2022, arXiv:2105.04906. facebookresearch/vicreg
        ``main_vicreg.py`` (``Projector``, ``--mlp 8192-8192-8192``).
    """

    def __init__(self, in_dim: int, spec: str | Sequence[int] = "8192-8192-8192") -> None:
        dims = [check_positive_int("in_dim", in_dim), *parse_mlp_spec(spec)]
        super().__init__(dims, output_bias=False)


class SwAVProjectionHead(MLPHead):
    r"""SwAV's projection head: ``Linear(D, 2048) -> BatchNorm1d -> ReLU -> Linear(2048, 128)``.

    .. math::
        z = W_2\, \mathrm{ReLU}(\mathrm{BN}(W_1 h + b_1)) + b_2

    Both linear layers have a bias. SwAV L2-normalizes :math:`z` before the prototypes
    (:class:`~sslosses.SwAVPrototypes`); the head leaves that to the training step.

    Args:
        in_dim: the backbone's feature width :math:`D` (2048 for ResNet-50).
        hidden_dim: the hidden width (``hidden_mlp``). Default: ``2048``.
        out_dim: the output width (``feat_dim``). Default: ``128``.

    Shape and errors: those of :class:`MLPHead`.

    Examples:
        >>> import torch
        >>> from sslosses.heads import SwAVProjectionHead
        >>> SwAVProjectionHead(32, 64, 16)(torch.randn(4, 32)).shape
        torch.Size([4, 16])

    References:
        Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster
        Assignments", NeurIPS 2020, arXiv:2006.09882. facebookresearch/swav ``src/resnet50.py``
        (``projection_head``; ``main_swav.py``: ``--hidden_mlp 2048``, ``--feat_dim 128``).
    """

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 128) -> None:
        super().__init__([in_dim, hidden_dim, out_dim])


class DINOHead(FrozenAtFirst, nn.Module):
    r"""The DINO projection head: an MLP, L2-normalization, and a weight-normalized layer.

    .. math::
        h(x) = W \, \frac{u}{\lVert u \rVert_2}, \quad u = \operatorname{MLP}(x), \qquad
        W_{k} = g_k \frac{V_{k}}{\lVert V_{k} \rVert_2},

    where the MLP has ``n_layers`` linear layers (``in_dim -> hidden_dim -> ... ->
    bottleneck_dim``, GELU after each but the last, BatchNorm before each GELU if ``use_bn``;
    a single linear layer for ``n_layers=1``) and the last layer :math:`W` maps the
    bottleneck to :math:`K` outputs without bias, weight-normalized with
    :func:`torch.nn.utils.parametrizations.weight_norm` (gain :math:`g` per output, set to 1).
    With ``norm_last_layer=True`` the gain stays fixed at 1 (it gets no gradient), so every
    row of :math:`W` has unit norm, as in the official ``DINOHead``. The MLP's linear layers
    are initialized with ``trunc_normal_(std=0.02)`` and zero bias; the last layer's
    direction :math:`V` is initialized as :class:`torch.nn.Linear` is (the official code
    wraps it after applying its initialization).

    DINO keeps the last layer fixed during the first epoch (``--freeze_last_layer 1``) by
    dropping its gradient after the backward pass and before the optimizer step; here this is
    :meth:`cancel_gradients_`, counted in steps:

    .. code-block:: python

        loss.backward()
        head.cancel_gradients_(step)  # drops last_layer's gradient while step < freeze_steps
        optimizer.step()

    Args:
        in_dim: the backbone's feature dimension.
        out_dim: the number of outputs :math:`K`. Default: ``65536`` (``--out_dim``).
        hidden_dim: the MLP's hidden width. Default: ``2048``.
        bottleneck_dim: the MLP's output (bottleneck) width. Default: ``256``.
        n_layers: the number of linear layers of the MLP, ``>= 1``. Default: ``3``.
        use_bn: BatchNorm in the MLP's hidden layers. Default: ``False``
            (``--use_bn_in_head``).
        norm_last_layer: fix the last layer's weight-norm gain at 1. Default: ``True``
            (``--norm_last_layer``).
        freeze_steps: the number of initial steps during which :meth:`cancel_gradients_`
            drops the last layer's gradient. Default: ``0`` (never).

    Shape:
        - input: :math:`(N, \text{in\_dim})`.
        - output: :math:`(N, K)`; with ``forward(x, return_bottleneck=True)`` also the
          bottleneck :math:`u`, :math:`(N, \text{bottleneck\_dim})`.

    Raises:
        TypeError: if a dimension, ``n_layers`` or ``freeze_steps`` is not an ``int``, or
            ``use_bn`` / ``norm_last_layer`` (or ``forward``'s ``return_bottleneck``) is not a
            ``bool``.
        ValueError: if a dimension or ``n_layers`` is not positive or ``freeze_steps < 0``.

    Examples:
        >>> import torch
        >>> from sslosses import DINOHead
        >>> head = DINOHead(16, 100, hidden_dim=32, bottleneck_dim=8, freeze_steps=1)
        >>> head(torch.randn(4, 16)).shape
        torch.Size([4, 100])
        >>> head(torch.randn(4, 16)).sum().backward()
        >>> head.cancel_gradients_(0), head.last_layer.parametrizations.weight.original1.grad
        (True, None)
        >>> scores, bottleneck = head(torch.randn(4, 16), return_bottleneck=True)
        >>> scores.shape, bottleneck.shape  # KoLeo on the bottleneck: DINOv2-style, small CNNs
        (torch.Size([4, 100]), torch.Size([4, 8]))

    References:
        Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021,
        arXiv:2104.14294, Appendix. Official code: facebookresearch/dino,
        ``vision_transformer.py`` (``DINOHead``) and ``utils.py``
        (``cancel_gradients_last_layer``).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        *,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        n_layers: int = 3,
        use_bn: bool = False,
        norm_last_layer: bool = True,
        freeze_steps: int = 0,
    ) -> None:
        super().__init__()
        self.in_dim = check_positive_int("in_dim", in_dim)
        self.out_dim = check_positive_int("out_dim", out_dim)
        self.hidden_dim = check_positive_int("hidden_dim", hidden_dim)
        self.bottleneck_dim = check_positive_int("bottleneck_dim", bottleneck_dim)
        self.n_layers = check_positive_int("n_layers", n_layers)
        self.use_bn = check_bool("use_bn", use_bn)
        self.norm_last_layer = check_bool("norm_last_layer", norm_last_layer)
        self.freeze_steps = check_non_negative_int("freeze_steps", freeze_steps)

        self.mlp: nn.Module
        if self.n_layers == 1:
            self.mlp = nn.Linear(self.in_dim, self.bottleneck_dim)
        else:
            layers: list[nn.Module] = []
            width = self.in_dim
            for _ in range(self.n_layers - 1):
                layers.append(nn.Linear(width, self.hidden_dim))
                if self.use_bn:
                    layers.append(nn.BatchNorm1d(self.hidden_dim))
                layers.append(nn.GELU())
                width = self.hidden_dim
            layers.append(nn.Linear(width, self.bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        for module in self.mlp.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        last = nn.Linear(self.bottleneck_dim, self.out_dim, bias=False)
        self.last_layer = parametrizations.weight_norm(last, name="weight", dim=0)
        weight = self.last_layer.parametrizations.weight
        with torch.no_grad():
            weight.original0.fill_(1.0)  # the gain g: (K, 1)
        if self.norm_last_layer:
            weight.original0.requires_grad_(False)

    @overload
    def forward(self, x: Tensor, *, return_bottleneck: Literal[False] = ...) -> Tensor: ...

    @overload
    def forward(self, x: Tensor, *, return_bottleneck: Literal[True]) -> tuple[Tensor, Tensor]: ...

    def forward(
        self, x: Tensor, *, return_bottleneck: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """The scores :math:`h(x)`; with ``return_bottleneck=True`` the pair ``(h(x), u)``,
        :math:`u` the MLP's output before the L2-normalization (where a regularizer such as
        :func:`~sslosses.functional.koleo_loss` can read it without a second MLP pass)."""
        check_bool("return_bottleneck", return_bottleneck)
        u = self.mlp(x)  # (N, bottleneck_dim)
        out: Tensor = self.last_layer(F.normalize(u, dim=-1, p=2))  # (N, K)
        return (out, u) if return_bottleneck else out

    def _frozen_at_first(self) -> Iterable[Tensor]:
        last: nn.Module = self.last_layer  # its gain g and direction V
        return last.parameters()

    def extra_repr(self) -> str:
        return (
            f"in_dim={self.in_dim}, out_dim={self.out_dim}, hidden_dim={self.hidden_dim}, "
            f"bottleneck_dim={self.bottleneck_dim}, n_layers={self.n_layers}, "
            f"use_bn={self.use_bn}, norm_last_layer={self.norm_last_layer}, "
            f"freeze_steps={self.freeze_steps}"
        )
