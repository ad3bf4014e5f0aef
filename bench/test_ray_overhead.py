"""Per-generation overhead of the ray backend against the local numba one.

Both run the same config on this machine: the difference is Ray's dispatch, the
(O(W * (n + B)) numbers) traffic, and every worker replaying the update.
Compare with `pytest bench --benchmark-only -k ray_overhead --benchmark-group-by=param:name`.
"""

import numpy as np
import pytest

from fastes.cli.bench import Generation

ray = pytest.importorskip("ray", reason="the ray extra is not installed")


@pytest.fixture(scope="module", autouse=True)
def local_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("backend", ["numba", "ray"])
@pytest.mark.parametrize("name", ["seed", "medium"])
def test_ray_overhead(benchmark, name, backend):
    gen = Generation(name, backend, threads=1, workers=2)
    gen()
    benchmark.pedantic(gen, rounds=20 if name == "seed" else 5, iterations=1)
    assert np.isfinite(gen.state.theta).all()
