from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch
from hypothesis import HealthCheck, settings

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

settings.register_profile(
    "default",
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=400)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    """Every test starts from the same global RNG state, so unseeded draws repeat run to run."""
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def dist_pool() -> Iterator[object]:
    """Two processes in a gloo group (see ``dist_harness.py``), shared by the whole session."""
    from dist_harness import DistPool

    pool = DistPool(world_size=2)
    yield pool
    pool.close()
