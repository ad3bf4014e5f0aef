"""Noise sums over the population for the gradient estimate: the weighted sum of full-rank
noise windows, with the weighted sum of their squares for a learned standard deviation, and
the low-rank factors stacked for one BLAS product."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .common import JIT


@njit(parallel=True, **JIT)
def _noise_sums(table, offsets, weights, square_weights, chunk, out, out_sq):
    """``out[p] = sum_k weights[k] u_k[p]``, ``u_k = table[offsets[k]:]``, and with
    ``out_sq`` ``out_sq[p] = sum_k square_weights[k] (u_k[p]**2 - 1)``, summed over k in order
    (float64), by chunks of ``chunk`` values. ``out_sq`` and ``square_weights`` ``None``
    compile the plain sum.

    One read of each window for both of a learned-sigma strategy's sums, and four windows
    per pass over a chunk: four streams from the table in flight at once, and a quarter of
    the passes over the accumulators."""
    size = out.shape[0]
    n = offsets.shape[0]
    n_chunks = (size + chunk - 1) // chunk
    start = 0.0
    if out_sq is not None:
        for k in range(n):
            start -= square_weights[k]
    for c in prange(n_chunks):
        p0 = c * chunk
        p1 = min(size, p0 + chunk)
        acc = out[p0:p1]
        for p in range(p1 - p0):
            acc[p] = 0.0
        if out_sq is not None:
            acc_sq = out_sq[p0:p1]
            for p in range(p1 - p0):
                acc_sq[p] = start
        k = 0
        while k + 4 <= n:
            w0, w1, w2, w3 = weights[k], weights[k + 1], weights[k + 2], weights[k + 3]
            s0, s1 = np.uint64(offsets[k] + p0), np.uint64(offsets[k + 1] + p0)
            s2, s3 = np.uint64(offsets[k + 2] + p0), np.uint64(offsets[k + 3] + p0)
            if out_sq is None:
                for p in range(p1 - p0):
                    u = np.uint64(p)
                    acc[p] += w0 * table[s0 + u] + w1 * table[s1 + u] + w2 * table[s2 + u] + w3 * table[s3 + u]
            else:
                v0, v1 = square_weights[k], square_weights[k + 1]
                v2, v3 = square_weights[k + 2], square_weights[k + 3]
                for p in range(p1 - p0):
                    u = np.uint64(p)
                    x0, x1 = np.float64(table[s0 + u]), np.float64(table[s1 + u])
                    x2, x3 = np.float64(table[s2 + u]), np.float64(table[s3 + u])
                    acc[p] += w0 * x0 + w1 * x1 + w2 * x2 + w3 * x3
                    acc_sq[p] += v0 * x0 * x0 + v1 * x1 * x1 + v2 * x2 * x2 + v3 * x3 * x3
            k += 4
        while k < n:
            w = weights[k]
            s0 = np.uint64(offsets[k] + p0)
            if out_sq is None:
                for p in range(p1 - p0):
                    acc[p] += w * table[s0 + np.uint64(p)]
            else:
                v = square_weights[k]
                for p in range(p1 - p0):
                    x = np.float64(table[s0 + np.uint64(p)])
                    acc[p] += w * x
                    acc_sq[p] += v * x * x
            k += 1


@njit(**JIT)
def _offsets_fit(offsets, width, size):
    """Whether every window ``[offsets[k], offsets[k] + width)`` lies in ``[0, size)``: one
    pass, for the noise sums' validation every generation."""
    for k in range(offsets.shape[0]):
        if offsets[k] < 0 or offsets[k] + width > size:
            return False
    return True


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
