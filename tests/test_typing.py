"""The public type aliases: their values, and the signatures and checks that use them."""

from __future__ import annotations

import typing

import pytest

import sslosses
import sslosses.functional as SF
import sslosses.heads
import sslosses.transforms
import sslosses.typing as T


@pytest.mark.parametrize(
    ("alias", "values"),
    [
        (T.Reduction, ("none", "mean", "sum")),
        (T.Algorithm, ("auto", "dense", "gram", "fused")),
        (T.BufferPolicy, ("copy", "average", "keep")),
        (T.OutputNorm, ("none", "affine", "scale_only", "no_affine")),
        (T.Activation, ("relu", "gelu")),
        (T.JitterOrder, ("random", "fixed")),
        (T.Centering, ("center", "sinkhorn")),
    ],
)
def test_literal_values(alias: object, values: tuple[str, ...]) -> None:
    assert typing.get_args(alias) == values


@pytest.mark.parametrize(
    ("function", "argument", "alias"),
    [
        (SF.byol_loss, "reduction", T.Reduction),
        (SF.info_nce, "chunk_size", T.ChunkSize),
        (SF.barlow_twins_loss, "algorithm", T.Algorithm),
        (SF.vicreg_loss, "algorithm", T.Algorithm),
        (sslosses.VICRegLoss.__init__, "algorithm", T.Algorithm),
        (sslosses.EMA.__init__, "buffers", T.BufferPolicy),
        (sslosses.heads.MLPHead.__init__, "output_norm", T.OutputNorm),
        (sslosses.heads.MLPHead.__init__, "activation", T.Activation),
        (sslosses.transforms.Augmentation.__init__, "jitter_order", T.JitterOrder),
        (sslosses.transforms.simclr_transform, "size", T.Size),
        (SF.dino_loss, "centering", T.Centering),
        (SF.ibot_patch_loss, "centering", T.Centering),
        (sslosses.DINOLoss.__init__, "centering", T.Centering),
        (sslosses.IBOTPatchLoss.__init__, "centering", T.Centering),
    ],
)
def test_signatures_use_the_aliases(function: object, argument: str, alias: object) -> None:
    assert typing.get_type_hints(function)[argument] == alias


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: sslosses.BarlowTwinsLoss(algorithm="sparse"),
            "algorithm must be one of 'auto', 'dense', 'gram', 'fused', got 'sparse'",
        ),
        (
            lambda: sslosses.heads.MLPHead("4-4", activation="tanh"),
            "activation must be one of 'relu', 'gelu', got 'tanh'",
        ),
        (
            lambda: sslosses.transforms.Augmentation(jitter_order="sorted"),
            "jitter_order must be one of 'random', 'fixed', got 'sorted'",
        ),
    ],
)
def test_checks_list_the_alias_values(make: typing.Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()
