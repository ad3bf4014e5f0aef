"""Deterministic noise: OpenAI's shared noise table, indexed by (seed, generation, member).

Every member's perturbation is a window ``table[offset : offset + length]`` of one table of
standard normal float32 values that every process builds identically from a fixed seed.
The offset is a pure hash of (run seed, generation, noise index), so

* results do not depend on thread count or scheduling,
* the optimizer step (and Ray workers) regenerate any member's noise from three integers,
* drawing a member's noise costs nothing: it is read, never generated, in the hot loop.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import njit

#: Most entries a table holds: 2**25 float32 values = 128 MiB.
TABLE_SIZE = 1 << 25
#: Fewest entries: 2**22 (16 MiB).
MIN_TABLE_SIZE = 1 << 22
#: A run's table holds at least this many of its noise vectors end to end.
VECTORS_PER_TABLE = 256
#: Fixed seed of the table itself (runs differ through their offsets, not their table).
TABLE_SEED = 123


def table_size_for(noise_size: int) -> int:
    """Entries of the noise table for a run whose noise vectors have ``noise_size`` values:
    the power of two that holds :data:`VECTORS_PER_TABLE` of them, within
    [:data:`MIN_TABLE_SIZE`, :data:`TABLE_SIZE`].

    A pure function of the run's network and perturbation, so every process of a run (a
    resumed one, a Ray worker) builds the same table; and a table is the prefix of any
    larger one (one generator, drawn in order), so runs differ only in how far they read.
    The seed preset's 13,002 parameters and the default preset's low-rank noise vectors
    (1,188 values) need 2**22 entries (16 MiB instead of 128); a full-rank 784-128-10
    network 2**25.
    """
    size = MIN_TABLE_SIZE
    while size < VECTORS_PER_TABLE * noise_size and size < TABLE_SIZE:
        size *= 2
    return size


@lru_cache(maxsize=4)
def noise_table(size: int = TABLE_SIZE, seed: int = TABLE_SEED) -> np.ndarray:
    """The shared table of ``size`` N(0, 1) float32 values, read-only, cached per process."""
    table = np.random.default_rng(seed).standard_normal(size, dtype=np.float32)
    table.flags.writeable = False
    return table


@njit(cache=True)
def _splitmix64(z):
    # SplitMix64 output function: a bijective 64-bit mix with full avalanche.
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def _offsets(seed, generation, n_noise, span, out):
    golden = np.uint64(0x9E3779B97F4A7C15)
    # Key the stream by (seed, generation) through two chained mixes, then walk it as a
    # SplitMix64 sequence: member k gets the k-th output, so no two (generation, member)
    # pairs of a run share a draw by symmetry.
    key = _splitmix64(_splitmix64(np.uint64(seed) + golden) ^ np.uint64(generation))
    for k in range(n_noise):
        out[k] = np.int64(_splitmix64(key + np.uint64(k + 1) * golden) % np.uint64(span))


def member_offsets(seed: int, generation: int, n_noise: int, length: int, table_size: int = TABLE_SIZE) -> np.ndarray:
    """Table offsets of the ``n_noise`` noise vectors of one generation.

    Parameters
    ----------
    seed, generation : int
        Run seed and global generation counter (0-based, across epochs).
    n_noise : int
        Distinct noise vectors (population, or half of it when antithetic).
    length : int
        Length of one noise vector; every window must fit in the table.

    Returns
    -------
    ndarray of shape (n_noise,), int64, each in ``[0, table_size - length]``.
    """
    if length > table_size:
        raise ValueError(f"noise vector of {length} values does not fit a table of {table_size}")
    out = np.empty(n_noise, dtype=np.int64)
    _offsets(np.uint64(seed), np.uint64(generation), n_noise, table_size - length + 1, out)
    return out
