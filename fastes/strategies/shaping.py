"""Fitness shaping: the members' losses as *advantages* that grow with the loss and sum to
zero (a strategy descends them), and the noise vectors' weights made from them.

Member ``k * n_signs + i`` is noise vector ``u_k`` with sign ``+1`` (i = 0) or ``-1``
(i = 1, antithetic). Each function is pure: arrays in, a new array out.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True)
def _zscore(f):
    n = f.shape[0]
    mean = 0.0
    for i in range(n):
        mean += f[i]
    mean /= n
    var = 0.0
    for i in range(n):
        var += (f[i] - mean) ** 2
    std = np.sqrt(var / n)
    out = np.zeros(n)
    if std > 0.0:
        for i in range(n):
            out[i] = (f[i] - mean) / std
    return out


def zscore(fitness: np.ndarray) -> np.ndarray:
    """(f - mean) / std, the original's advantages; all zeros when std == 0.

    Compiled: it runs every generation on a handful of numbers, where NumPy's per-call
    overhead (tens of microseconds for mean and std) would cost more than the kernels.
    """
    return _zscore(np.asarray(fitness, dtype=np.float64))


def tie_mean(sorted_fitness: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` (one per sorted position) averaged over each run of equal ``sorted_fitness``:
    members with equal scores get equal weights, whatever their order (the zero-one loss
    makes ties common). Without ties it returns ``values`` unchanged, bit for bit."""
    starts = np.flatnonzero(np.r_[True, sorted_fitness[1:] != sorted_fitness[:-1]])
    if len(starts) == len(values):
        return values
    counts = np.diff(np.r_[starts, len(values)])
    return np.repeat(np.add.reduceat(values, starts) / counts, counts)


def centered_rank(fitness: np.ndarray) -> np.ndarray:
    """Ranks mapped linearly to [-0.5, 0.5] (OpenAI ES); tied members share their mean rank."""
    f = np.asarray(fitness, dtype=np.float64)
    n = f.size
    if n < 2:
        return np.zeros_like(f)
    order = np.argsort(f, kind="stable")
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = tie_mean(f[order], np.arange(n, dtype=np.float64))
    return ranks / (n - 1) - 0.5


def nes_utilities(fitness: np.ndarray) -> np.ndarray:
    """NES's utilities of the ranks (Wierstra et al. 2014), as advantages: the member of
    rank ``i`` (1 = lowest loss) gets ``-(max(0, ln(n/2 + 1) - ln i) / total - 1/n)``; tied
    members share their mean utility. Only the better half moves the search; the values
    sum to 0."""
    f = np.asarray(fitness, dtype=np.float64)
    n = f.size
    raw = np.maximum(0.0, math.log(n / 2 + 1) - np.log(np.arange(1, n + 1, dtype=np.float64)))
    order = np.argsort(f, kind="stable")
    utilities = np.empty(n, dtype=np.float64)
    utilities[order] = tie_mean(f[order], raw / raw.sum() - 1.0 / n)
    return -utilities


SHAPING = {"zscore": zscore, "centered-rank": centered_rank, "nes": nes_utilities}


def noise_weights(advantages: np.ndarray, antithetic: bool) -> np.ndarray:
    """Weight of each noise vector in the centre's gradient: its member's advantage, or
    ``adv(+u) - adv(-u)``."""
    if antithetic:
        return advantages[0::2] - advantages[1::2]
    return advantages.copy()


def square_weights(advantages: np.ndarray, antithetic: bool) -> np.ndarray:
    """Weight of each noise vector's ``u**2 - 1`` in a standard deviation's gradient: its
    member's advantage, or ``adv(+u) + adv(-u)`` (both signs have the same ``u**2``)."""
    if antithetic:
        return advantages[0::2] + advantages[1::2]
    return advantages.copy()
