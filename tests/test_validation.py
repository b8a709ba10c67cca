"""Cross-cutting input validation shared by the losses (``sslosses._validation``)."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("loss", ["nt_xent", "info_nce"])
def test_contrastive_losses_reject_zero_features(loss: str) -> None:
    import sslosses.functional as SF

    fn = getattr(SF, loss)
    first = "z_a" if loss == "nt_xent" else "query"
    with pytest.raises(ValueError, match=rf"{first} must have at least 1 feature\(s\)"):
        fn(torch.randn(4, 0), torch.randn(4, 0))


def test_hyperparameters_accept_numpy_scalars() -> None:
    import numpy as np

    import sslosses

    assert sslosses.NTXentLoss(temperature=np.float32(0.5)).temperature == 0.5  # type: ignore[arg-type]


def test_positive_int_accepts_numpy_integers_as_python_ints() -> None:
    import numpy as np

    from sslosses._validation import check_positive_int

    value = check_positive_int("chunk_size", np.int64(4))
    assert value == 4 and type(value) is int
    with pytest.raises(TypeError, match="chunk_size must be an int, got float64"):
        check_positive_int("chunk_size", np.float64(4.0))
    with pytest.raises(ValueError, match="chunk_size must be an int > 0, got 0"):
        check_positive_int("chunk_size", np.int32(0))
