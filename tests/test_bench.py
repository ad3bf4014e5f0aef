"""The benchmark's count of useful work, against a count made by enumerating it."""

import numpy as np
import pytest

from fastes.cli.bench import CONFIGS, PHASES, Generation, bench_config, useful_macs


def _enumerated_macs(config, dims, nnz):
    """The same count, term by term as a generation does the work."""
    widths = dims[1:]
    batch, members, n_noise = config.batch_size, config.population, config.n_noise
    total = nnz * widths[0]                                    # x @ W0, shared by all members
    for _ in range(n_noise):                                   # each noise vector, signs shared
        if config.perturbation == "lowrank":
            total += nnz * config.rank + batch * config.rank * widths[0]
        else:
            total += nnz * widths[0]
    for _ in range(members):
        if len(dims) > 2:
            total += batch * widths[0]                         # base + s * z
        for fan_in, fan_out in zip(dims[1:-1], dims[2:]):
            total += batch * fan_in * fan_out
    sums = 2 if config.learns_sigma else 1                     # noise, and its squares
    for fan_in, fan_out in zip(dims[:-1], dims[1:]):           # gradient estimate
        if config.perturbation == "lowrank":
            total += n_noise * config.rank * (fan_in + fan_out + fan_in * fan_out)
        else:
            total += sums * n_noise * (fan_in * fan_out + fan_out)
            if sums == 2:
                total += n_noise * (fan_in * fan_out + fan_out)  # each noise vector times the sigmas
    total += sum(i * o + o for i, o in zip(dims[:-1], dims[1:]))  # optimizer step
    return total


@pytest.mark.parametrize("name", list(CONFIGS))
def test_useful_macs_counts_each_term(name):
    config = bench_config(name, "numba")
    dims = (784, *config.hidden, 10)
    nnz = 150.0 * config.batch_size
    assert useful_macs(config, dims, nnz) == pytest.approx(_enumerated_macs(config, dims, nnz))


def test_useful_work_is_far_below_the_dense_work_for_lowrank():
    config = bench_config("lowrank-r1-4096", "numba")
    dims = (784, 128, 10)
    useful = useful_macs(config, dims, 150.0 * 256)
    dense = config.population * 256 * (784 * 128 + 128 * 10)
    assert useful < dense / 20


def test_profile_times_every_phase_of_a_numba_generation():
    gen = Generation("seed", "numba")
    phases = gen.profile(3)
    assert list(phases) == list(PHASES)
    assert all(np.isfinite(v) and v >= 0 for v in phases.values())
    assert phases["first_layer"] > 0 and phases["gradient"] > 0 and phases["optimizer"] > 0
    assert gen.state.generation == 4  # the warm-up and three profiled generations advanced it
