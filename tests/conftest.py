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
def _dist_pools() -> Iterator[dict[int, object]]:
    """The gloo pools by world size, each started on first use and shared by the session."""
    pools: dict[int, object] = {}
    yield pools
    for pool in pools.values():
        pool.close()  # type: ignore[attr-defined]


def _pool(pools: dict[int, object], world_size: int) -> object:
    from dist_harness import DistPool

    if world_size not in pools:
        pools[world_size] = DistPool(world_size=world_size)
    return pools[world_size]


@pytest.fixture(scope="session")
def dist_pool(_dist_pools: dict[int, object]) -> object:
    """Two processes in a gloo group (see ``dist_harness.py``), shared by the whole session."""
    return _pool(_dist_pools, 2)


@pytest.fixture(scope="session", params=[2, 3], ids=["W2", "W3"])
def dist_pool_w(request: pytest.FixtureRequest, _dist_pools: dict[int, object]) -> object:
    """A gloo pool of W = 2, then W = 3 processes: a wrong factor W cannot hide behind 2."""
    return _pool(_dist_pools, request.param)


@pytest.fixture(scope="session")
def dist_pool3(_dist_pools: dict[int, object]) -> object:
    """Three processes in a gloo group: the W = 3 pool of ``dist_pool_w``, shared."""
    return _pool(_dist_pools, 3)
