"""One ES generation per config of fastes.cli.bench.CONFIGS, on each backend.

``pytest bench --benchmark-only`` times them, each config's two backends side by side in one
group; plain ``pytest`` runs each once as a smoke test (``--benchmark-disable`` in addopts).
Rounds and iterations follow the config's size so that a small config is timed over enough
calls to be stable (the seed config's generation is a fraction of a millisecond).

Tracking speed across commits (docs/performance.md):

    pytest bench --benchmark-only --benchmark-autosave          # store this commit's figures
    pytest bench --benchmark-only --benchmark-compare --benchmark-compare-fail=median:15%
"""

import numpy as np
import pytest

from fastes.cli.bench import CONFIGS, Generation

# The NumPy reference takes seconds per generation at population 4096: time it only where
# it finishes in reasonable time; `fastes bench` times every pair.
SLOW_FOR_NUMPY = {"full-4096", "lowrank-r1-4096", "lowrank-r4-4096", "lowrank-256", "lowrank-512", "lowrank-256-128"}


def rounds_for(name: str) -> tuple[int, int]:
    """(rounds, iterations per round) by the config's population x batch."""
    size = CONFIGS[name]["population"] * CONFIGS[name]["batch_size"]
    if size <= 4096:
        return 30, 50
    if size <= 65536:
        return 15, 3
    return 5, 1


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_generation(benchmark, name, backend):
    if backend == "numpy" and name in SLOW_FOR_NUMPY:
        pytest.skip("the NumPy reference is timed on these by `fastes bench`, not per commit")
    gen = Generation(name, backend)
    gen()  # compile / warm up outside the timing
    before = gen.state.theta.copy()
    benchmark.group = name
    rounds, iterations = rounds_for(name)
    if not benchmark.disabled:
        benchmark.pedantic(gen, rounds=rounds, iterations=iterations, warmup_rounds=1)
    else:
        benchmark(gen)
    assert np.isfinite(gen.state.theta).all()
    assert not np.array_equal(before, gen.state.theta)
