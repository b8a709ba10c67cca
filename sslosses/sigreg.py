"""LeJEPA: SIGReg (sketched isotropic Gaussian regularization) and the LeJEPA loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sslosses import _collectives
from sslosses._autograd import apply_function
from sslosses._collectives import check_gather_distributed
from sslosses._numerics import compute_dtype, no_autocast, upcast
from sslosses._validation import (
    check_crops,
    check_generator,
    check_int,
    check_positive,
    check_positive_int,
    check_probability,
    check_same_device,
    check_same_shape,
    check_tensor,
)

__all__ = ["LeJEPALoss", "SIGRegLoss", "lejepa_loss", "sigreg_loss"]


def sigreg_loss(
    x: Tensor,
    *,
    num_slices: int = 1024,
    knots: int = 17,
    t_max: float = 3.0,
    projections: Tensor | None = None,
    generator: torch.Generator | None = None,
    gather_distributed: bool = False,
) -> Tensor:
    r"""SIGReg: the Epps-Pulley statistic of random 1-D projections against a standard Gaussian.

    The rows of ``x`` are projected on :math:`S` random unit directions :math:`a_s` (the
    columns of a :math:`D \times S` matrix); for each direction the empirical characteristic
    function of the :math:`N` projections is compared with the standard Gaussian's,
    :math:`\varphi(t) = e^{-t^2/2}`, weighted by :math:`\varphi` and integrated over
    :math:`t \in [-t_{\max}, t_{\max}]` by the trapezoidal rule on ``2 * knots - 1`` points
    (the integrand is even: ``knots`` points on :math:`[0, t_{\max}]` with doubled weights):

    .. math::
        \hat\phi_s(t) = \frac{1}{N} \sum_{i=1}^{N} e^{\mathrm{i} t \langle a_s, x_i \rangle},
        \qquad
        T_s = N \int_{-t_{\max}}^{t_{\max}} \bigl|\hat\phi_s(t) - \varphi(t)\bigr|^2
            \varphi(t)\, dt,
        \qquad \mathcal{L} = \frac{1}{S} \sum_{s=1}^{S} T_s .

    By the Cramér-Wold theorem every 1-D projection is Gaussian only if the distribution is,
    so minimizing :math:`\mathcal{L}` pushes the embeddings toward an isotropic Gaussian (no
    collapse, no dimension unused). A ``(V, N, D)`` tensor gives one statistic per view
    :math:`v` (the same directions for all), averaged over views and directions, as LeJEPA
    applies it to the stack of its views.

    **Randomness.** The directions are standard-normal columns normalized to unit length,
    drawn with ``torch.randn`` on ``x``'s device from ``generator`` (its global generator when
    ``None``); a generator seeded with the step makes every call reproducible. Or pass them as
    ``projections`` (then ``num_slices`` and ``generator`` are not used).

    Half-precision inputs (or autocast) are computed in float32, float64 stays float64.

    **Distributed.** With ``gather_distributed=True`` and a process group of size
    :math:`W > 1`, the sums of :math:`\cos` and :math:`\sin` over the rows are all-reduced
    with gradient and :math:`N` is the global batch :math:`N_g` (ranks may hold different
    batch sizes, and a rank may hold none), so every rank returns the statistic of the global
    batch and each rank's input gradient divided by :math:`W` is its slice of the
    single-process gradient. Drawn directions are broadcast from rank 0 (:math:`D S` values,
    no gradient) so that every rank projects on the same ones; given ``projections`` must be
    the same on every rank. lightly's ``SIGReg`` does the same exchanges.

    Args:
        x: the embeddings, :math:`(N, D)`, or one such batch per view, :math:`(V, N, D)`.
        num_slices: the number :math:`S` of random directions. Default: ``1024``.
        knots: points of the frequency grid on :math:`[0, t_{\max}]` (at least 2).
            Default: ``17``.
        t_max: :math:`t_{\max} > 0`, the end of the frequency grid. Default: ``3.0``.
        projections: optional directions :math:`(D, S)`, unit columns (not normalized here).
            Default: ``None`` (drawn).
        generator: the random generator of the directions. Default: ``None``.
        gather_distributed: take the statistic of the batch of all ranks. Default: ``False``.

    Shape:
        - x: :math:`(N, D)` or :math:`(V, N, D)`
        - projections: :math:`(D, S)`
        - output: :math:`()`

    Returns:
        The loss in float32 (float64 for float64 inputs).

    Raises:
        TypeError: if ``x`` or ``projections`` is not a floating-point tensor, or an option has
            the wrong type.
        ValueError: if ``x`` is not 2-D or 3-D, has no feature or no row (with
            ``gather_distributed`` and :math:`W > 1`: the global batch, raised on every rank
            together, while a rank may hold no rows), ``projections`` is not :math:`(D, S)`
            on ``x``'s device, ``num_slices < 1``, ``knots < 2`` or ``t_max`` is not a finite
            number > 0.

    Examples:
        >>> import torch
        >>> from sslosses.functional import sigreg_loss
        >>> gen = torch.Generator().manual_seed(0)
        >>> gaussian = torch.randn(4096, 8, generator=gen)
        >>> collapsed = torch.ones(4096, 8)
        >>> seeded = lambda x: sigreg_loss(x, generator=torch.Generator().manual_seed(1))
        >>> bool(seeded(gaussian) < 10.0 < seeded(collapsed))  # about 1 against about 4500
        True

    References:
        Balestriero & LeCun, "LeJEPA: Provable and Scalable Self-Supervised Learning Without
        the Heuristics", arXiv:2511.08544 (2025), Sec. 4 (SIGReg, the Epps-Pulley test).
        Reproduced: lightly ``lightly/loss/lejepa_loss.py`` (``SIGReg``), whose defaults follow
        the paper's reference library (galilai-group/lejepa).
    """
    gather_distributed = check_gather_distributed(gather_distributed)
    tensor = check_tensor("x", x)
    if tensor.dim() not in (2, 3):
        raise ValueError(
            f"x must be a 2-D tensor (N, D) or a 3-D tensor (V, N, D), got {tensor.dim()}-D "
            f"with shape {tuple(tensor.shape)}"
        )
    rows = _collectives.local_minimum(gather_distributed, 1)
    if tensor.shape[-2] < rows or tensor.shape[-1] < 1 or (tensor.dim() == 3 and len(tensor) < 1):
        raise ValueError(
            f"x must have at least {rows} row(s), 1 feature and 1 view, got shape "
            f"{tuple(tensor.shape)}"
        )
    num_slices, knots, t_max, gen = _check_options(num_slices, knots, t_max, generator)
    directions = _check_projections(projections, tensor)
    with no_autocast(tensor):
        z = upcast(tensor, compute_dtype(tensor, *_present(directions)))
        layout = _collectives.global_layout(
            gather_distributed, z.shape[-2], z.device, name="x", minimum=1
        )
        return _statistic(z, layout, directions, num_slices, knots, t_max, gen)


def _check_options(
    num_slices: object, knots: object, t_max: object, generator: object
) -> tuple[int, int, float, torch.Generator | None]:
    """SIGReg's options: ``num_slices >= 1``, ``knots >= 2``, ``t_max > 0``, a generator."""
    return (
        check_positive_int("num_slices", num_slices),
        check_int("knots", knots, low=2),
        check_positive("t_max", t_max),
        check_generator(generator),
    )


def _check_projections(projections: object, x: Tensor) -> Tensor | None:
    """Given directions: a floating-point ``(D, S)`` tensor on ``x``'s device (``D`` its last)."""
    if projections is None:
        return None
    d = x.shape[-1]
    directions = check_tensor("projections", projections, ndim=2)
    if directions.shape[0] != d or directions.shape[1] < 1:
        raise ValueError(
            f"projections must have shape (D, S) with D={d} (the features of x) and S >= 1, "
            f"got shape {tuple(directions.shape)}"
        )
    check_same_device("x", x, "projections", directions)
    return directions


def _present(tensor: Tensor | None) -> tuple[Tensor, ...]:
    """``(tensor,)``, or ``()`` for ``None`` (for :func:`compute_dtype`)."""
    return () if tensor is None else (tensor,)


def _statistic(
    z: Tensor,
    layout: _collectives.BatchLayout | None,
    directions: Tensor | None,
    num_slices: int,
    knots: int,
    t_max: float,
    gen: torch.Generator | None,
) -> Tensor:
    """SIGReg of ``z`` ``(..., N, D)`` (checked, in its compute dtype) given the layout."""
    n, d = z.shape[-2:]
    if directions is None:
        directions = torch.randn(d, num_slices, generator=gen, device=z.device, dtype=z.dtype)
        if layout is not None:
            directions = _collectives.broadcast_(directions)
        directions = directions / torch.linalg.vector_norm(directions, dim=0)
    a = upcast(directions, z.dtype)
    t, phi, weights = _grid(knots, t_max, z)
    x_t = (z @ a).unsqueeze(-1) * t  # (..., N, S, K)
    sums = torch.stack([x_t.cos().sum(dim=-3), x_t.sin().sum(dim=-3)])  # (2, ..., S, K)
    total = n
    if layout is not None:
        sums = apply_function(_collectives.AllReduceSum, sums)
        total = layout.total
    cos_mean, sin_mean = sums / total
    error = (cos_mean - phi).square() + sin_mean.square()  # (..., S, K)
    loss: Tensor = ((error @ weights) * total).mean()
    return loss


def _grid(knots: int, t_max: float, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The frequencies on [0, t_max], the Gaussian's characteristic function there, and the
    trapezoidal weights of the symmetric integral (doubled but at the ends) times it."""
    # The grid on [0, 1] scaled by t_max, not torch.linspace(0, t_max) and torch.full(2 dt):
    # with t_max a symbol under torch.compile (a schedule), torch 2.14 reuses a stale value
    # of the factory functions' float arguments; a product traces correctly.
    unit = torch.linspace(0, 1, knots, dtype=like.dtype, device=like.device)
    t = unit * t_max
    phi = torch.exp(-t.square() / 2)
    steps = torch.full((knots,), 2.0, dtype=like.dtype, device=like.device)
    steps[0] = steps[-1] = 1.0
    weights = steps * (t_max / (knots - 1))
    return t, phi, weights * phi


def lejepa_loss(
    global_views: Sequence[Tensor],
    local_views: Sequence[Tensor] | None = None,
    *,
    lambd: float = 0.05,
    num_slices: int = 1024,
    knots: int = 17,
    t_max: float = 3.0,
    projections: Tensor | None = None,
    generator: torch.Generator | None = None,
    gather_distributed: bool = False,
) -> Tensor:
    r"""LeJEPA: :math:`\lambda` SIGReg of all views plus :math:`1 - \lambda` their prediction error.

    With :math:`V_g` global and :math:`V_l` local views of :math:`N` samples and
    :math:`\bar g_i` the mean of sample :math:`i`'s global views, the prediction (invariance)
    term is the mean squared distance of every view to it:

    .. math::
        \mathcal{P} = \frac{1}{(V_g + V_l) N D} \sum_{v} \sum_{i=1}^{N}
            \bigl\| z^{(v)}_i - \bar g_i \bigr\|_2^2, \qquad
        \mathcal{L} = \lambda \, \mathrm{SIGReg}(z) + (1 - \lambda) \, \mathcal{P},

    where SIGReg (:func:`~sslosses.functional.sigreg_loss`) takes the stack of all views, the
    global ones first, one statistic per view. :math:`\lambda = 0.05` as in the paper's
    reference code (the paper explores 0.01 to 0.1).

    **Distributed.** ``gather_distributed`` is passed to SIGReg (the global batch's statistic)
    and scales the prediction term's sum by :math:`W / N_g`, so the mean over ranks of the
    value equals the single-process loss on the global batch and each rank's input gradient
    divided by :math:`W` is its slice of the single-process gradient.

    Args:
        global_views: the :math:`V_g \ge 1` global views, each :math:`(N, D)`.
        local_views: the local views, each :math:`(N, D)` (same shape); ``None`` or empty for
            none. Default: ``None``.
        lambd: :math:`\lambda \in [0, 1]`, the weight of SIGReg. Default: ``0.05``.
        num_slices, knots, t_max, projections, generator: SIGReg's
            (:func:`~sslosses.functional.sigreg_loss`).
        gather_distributed: use the batch of all ranks. Default: ``False``.

    Shape:
        - global_views, local_views: sequences of :math:`(N, D)` tensors
        - output: :math:`()`

    Returns:
        The loss in float32 (float64 for float64 inputs).

    Raises:
        TypeError: if the views are not lists or tuples of floating-point tensors, or an option
            has the wrong type.
        ValueError: if there is no global view, the views differ in shape or device, the batch
            is empty (globally, under ``gather_distributed``), ``lambd`` is outside
            :math:`[0, 1]`, or a SIGReg option is invalid.

    Examples:
        >>> import torch
        >>> from sslosses.functional import lejepa_loss
        >>> global_views = [torch.randn(64, 16, requires_grad=True) for _ in range(2)]
        >>> local_views = [torch.randn(64, 16, requires_grad=True) for _ in range(6)]
        >>> gen = torch.Generator().manual_seed(0)  # e.g. seeded with the step
        >>> loss = lejepa_loss(global_views, local_views, generator=gen)
        >>> loss.backward()

    References:
        Balestriero & LeCun, "LeJEPA: Provable and Scalable Self-Supervised Learning Without
        the Heuristics", arXiv:2511.08544 (2025). Reproduced: lightly
        ``lightly/loss/lejepa_loss.py`` (``LeJEPALoss``, ``lejepa_invariance_loss``).
    """
    gather_distributed = check_gather_distributed(gather_distributed)
    rows = _collectives.local_minimum(gather_distributed, 1)
    globals_ = check_crops("global_views", global_views, minimum=1, rows=rows, column="feature")
    locals_: list[Tensor] = []
    if local_views is not None and len(local_views) > 0:
        locals_ = check_crops("local_views", local_views, minimum=1, rows=0, column="feature")
        check_same_shape("global_views[0]", globals_[0], "local_views[0]", locals_[0])
        check_same_device("global_views[0]", globals_[0], "local_views[0]", locals_[0])
    lambd = check_probability("lambd", lambd)
    num_slices, knots, t_max, gen = _check_options(num_slices, knots, t_max, generator)
    directions = _check_projections(projections, globals_[0])
    with no_autocast(globals_[0]):
        dtype = compute_dtype(*globals_, *locals_)
        everything = torch.stack([upcast(v, dtype) for v in (*globals_, *locals_)])  # (V, N, D)
        v_count, n, d = everything.shape
        centers = everything[: len(globals_)].mean(dim=0)  # (N, D)
        # one exchange of batch sizes serves both terms
        layout = _collectives.global_layout(
            gather_distributed, n, everything.device, name="global_views[0]"
        )
        squared = (everything - centers).square().sum()
        prediction = squared * _collectives.mean_weight(n, layout) / (v_count * d)
        z = upcast(everything, compute_dtype(everything, *_present(directions)))
        regularizer = _statistic(z, layout, directions, num_slices, knots, t_max, gen)
    return lambd * regularizer + (1 - lambd) * prediction


class SIGRegLoss(nn.Module):
    r"""Module form of :func:`sslosses.functional.sigreg_loss`.

    Randomness comes from the ``generator`` passed to :meth:`forward` (or the directions
    passed as ``projections``); the module holds no state.

    Args:
        num_slices: the number of random directions. Default: ``1024``.
        knots: points of the frequency grid on :math:`[0, t_{\max}]`. Default: ``17``.
        t_max: the end of the frequency grid. Default: ``3.0``.
        gather_distributed: take the statistic of the batch of all ranks. Default: ``False``.

    Examples:
        >>> import torch
        >>> from sslosses import SIGRegLoss
        >>> criterion = SIGRegLoss(num_slices=256)
        >>> criterion
        SIGRegLoss(num_slices=256, knots=17, t_max=3.0, gather_distributed=False)
        >>> criterion(torch.randn(32, 8), generator=torch.Generator().manual_seed(0)).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        num_slices: int = 1024,
        knots: int = 17,
        t_max: float = 3.0,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        self.num_slices, self.knots, self.t_max, _ = _check_options(num_slices, knots, t_max, None)
        self.gather_distributed = check_gather_distributed(gather_distributed)

    def forward(
        self,
        x: Tensor,
        projections: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        return sigreg_loss(
            x,
            num_slices=self.num_slices,
            knots=self.knots,
            t_max=self.t_max,
            projections=projections,
            generator=generator,
            gather_distributed=self.gather_distributed,
        )

    def extra_repr(self) -> str:
        return (
            f"num_slices={self.num_slices}, knots={self.knots}, t_max={self.t_max}, "
            f"gather_distributed={self.gather_distributed}"
        )


class LeJEPALoss(nn.Module):
    r"""Module form of :func:`sslosses.functional.lejepa_loss`.

    Args:
        lambd: :math:`\lambda \in [0, 1]`, the weight of SIGReg. Default: ``0.05``.
        num_slices: the number of random directions of SIGReg. Default: ``1024``.
        knots: points of SIGReg's frequency grid on :math:`[0, t_{\max}]`. Default: ``17``.
        t_max: the end of SIGReg's frequency grid. Default: ``3.0``.
        gather_distributed: use the batch of all ranks. Default: ``False``.

    Examples:
        >>> import torch
        >>> from sslosses import LeJEPALoss
        >>> criterion = LeJEPALoss()
        >>> criterion
        LeJEPALoss(lambd=0.05, num_slices=1024, knots=17, t_max=3.0, gather_distributed=False)
        >>> views = [torch.randn(16, 8) for _ in range(2)]
        >>> criterion(views, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        lambd: float = 0.05,
        num_slices: int = 1024,
        knots: int = 17,
        t_max: float = 3.0,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        self.lambd = check_probability("lambd", lambd)
        self.num_slices, self.knots, self.t_max, _ = _check_options(num_slices, knots, t_max, None)
        self.gather_distributed = check_gather_distributed(gather_distributed)

    def forward(
        self,
        global_views: Sequence[Tensor],
        local_views: Sequence[Tensor] | None = None,
        projections: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        return lejepa_loss(
            global_views,
            local_views,
            lambd=self.lambd,
            num_slices=self.num_slices,
            knots=self.knots,
            t_max=self.t_max,
            projections=projections,
            generator=generator,
            gather_distributed=self.gather_distributed,
        )

    def extra_repr(self) -> str:
        return (
            f"lambd={self.lambd}, num_slices={self.num_slices}, knots={self.knots}, "
            f"t_max={self.t_max}, gather_distributed={self.gather_distributed}"
        )
