"""Noise sums over the population for the gradient estimate: the weighted sum of full-rank
noise windows, with its squares for a learned standard deviation, and the low-rank
factors stacked for one BLAS product."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .common import JIT


@njit(parallel=True, **JIT)
def _noise_weighted_sum(table, offsets, weights, chunk, out):
    """out[p] = sum_k weights[k] * table[offsets[k] + p], summed over k in order (float64)."""
    size = out.shape[0]
    n_chunks = (size + chunk - 1) // chunk
    for c in prange(n_chunks):
        p0 = c * chunk
        p1 = min(size, p0 + chunk)
        acc = out[p0:p1]
        for p in range(p1 - p0):
            acc[p] = 0.0
        for k in range(offsets.shape[0]):
            w = weights[k]
            noise = table[offsets[k] + p0 : offsets[k] + p1]
            for p in range(p1 - p0):
                acc[p] += w * noise[p]


@njit(parallel=True, **JIT)
def _noise_moments(table, offsets, weights, square_weights, chunk, out, out_sq):
    """``out[p] = sum_k weights[k] u_k[p]`` and ``out_sq[p] = sum_k square_weights[k] (u_k[p]**2 - 1)``,
    ``u_k = table[offsets[k]:]``, summed over k in order (float64): one read of each window
    for both of a learned-sigma strategy's sums."""
    size = out.shape[0]
    n_chunks = (size + chunk - 1) // chunk
    start = 0.0
    for k in range(offsets.shape[0]):
        start -= square_weights[k]
    for c in prange(n_chunks):
        p0 = c * chunk
        p1 = min(size, p0 + chunk)
        acc = out[p0:p1]
        acc_sq = out_sq[p0:p1]
        for p in range(p1 - p0):
            acc[p] = 0.0
            acc_sq[p] = start
        for k in range(offsets.shape[0]):
            w = weights[k]
            v = square_weights[k]
            noise = table[offsets[k] + p0 : offsets[k] + p1]
            for p in range(p1 - p0):
                x = np.float64(noise[p])
                acc[p] += w * x
                acc_sq[p] += v * x * x


@njit(parallel=True, **JIT)
def _gather_lowrank(table, offsets, weights, start, n_rows, rank, scale, out):
    """Stack each member's factor F_k (r, n_rows): out[k*r + q] = w_k * scale * F_k[q]."""
    for k in prange(offsets.shape[0]):
        w = weights[k] * scale
        for q in range(rank):
            src = table[offsets[k] + start + q * n_rows : offsets[k] + start + (q + 1) * n_rows]
            dst = out[k * rank + q]
            for i in range(n_rows):
                dst[i] = w * src[i]
