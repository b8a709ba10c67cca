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
