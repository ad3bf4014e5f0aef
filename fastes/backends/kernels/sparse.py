"""Sparse products over CSR rows: the first layer row by row, the batch's rows chained
into groups of four similar ones and their products, and the CSR builders."""

from __future__ import annotations

import numpy as np
from numba import njit

from .common import CHAIN_ROWS, JIT


# --------------------------------------------------------------------------- helpers
#
# Helpers take a block of rows per call: a call increfs each array it passes (atomics both
# threads share), which per row would cost more than the arithmetic.


@njit(**JIT)
def _sparse_rows(params, start, width, csr, rows, r0, r1, out, at, stride):
    """``out[at + q*stride : ... + width] = x_{rows[r0+q]} @ W`` for ``q < r1 - r0``, W
    (d, width) row-major at ``params[start:]``, x's rows in ``csr`` (indptr, indices, values).
    Four non-zero pixels per pass: a quarter of the loads and stores of the output row,
    which bound this loop."""
    indptr, indices, values = csr
    w = np.uint64(width)
    base = np.uint64(start)
    for q in range(r1 - r0):
        row = rows[r0 + q]
        o = np.uint64(at + q * stride)
        for j in range(width):
            out[o + np.uint64(j)] = 0.0
        p = indptr[row]
        end = indptr[row + 1]
        while p + 4 <= end:
            v0, v1, v2, v3 = values[p], values[p + 1], values[p + 2], values[p + 3]
            s0 = base + np.uint64(indices[p]) * w
            s1 = base + np.uint64(indices[p + 1]) * w
            s2 = base + np.uint64(indices[p + 2]) * w
            s3 = base + np.uint64(indices[p + 3]) * w
            for j in range(width):
                u = np.uint64(j)
                out[o + u] += (v0 * params[s0 + u] + v1 * params[s1 + u]) + (v2 * params[s2 + u] + v3 * params[s3 + u])
            p += 4
        while p < end:
            v0 = values[p]
            s0 = base + np.uint64(indices[p]) * w
            for j in range(width):
                u = np.uint64(j)
                out[o + u] += v0 * params[s0 + u]
            p += 1


@njit(**JIT)
def _popcount(x):
    """Set bits of a uint64 (the SWAR sum, which LLVM turns into one ``popcnt``)."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


@njit(**JIT)
def _row_groups(indptr, indices, values, rows, bits, chain, mark, ordered, groups, group_values):
    """The batch's rows in groups of four with similar pixels, for :func:`_group_rows`.

    The rows are chained nearest-neighbour by the Hamming distance of their pixel sets (ties
    to the lower position), within each window of :data:`CHAIN_ROWS` rows, into ``ordered``
    (B,), the order in which the generation then evaluates them; every four consecutive rows
    form a group (the last may hold fewer), whose pixel union is smaller than four rows' in
    batch order. The order depends on the batch alone, so a population split into any tasks
    or Ray workers evaluates the same sums.

    ``groups`` (int64) holds ``[G | starts (G+1) | pixels]``, the union of each group's
    non-zero pixels padded to a multiple of four with value-0 entries, ``G = ceil(B/4)``;
    ``group_values`` (float32) the four rows' values of each pixel entry; ``bits`` (B,
    words) uint64, ``chain`` (B,) int64 and ``mark`` (d,) int64 are scratch.
    """
    n = rows.shape[0]
    n_groups = (n + 3) // 4
    words = bits.shape[1]
    at_pix = n_groups + 2
    for i in range(mark.shape[0]):
        mark[i] = -1
    for q in range(n):
        for w in range(words):
            bits[q, w] = 0
        row = rows[q]
        for i in range(indptr[row], indptr[row + 1]):
            pix = indices[i]
            bits[q, pix >> 6] |= np.uint64(1) << np.uint64(pix & 63)
        chain[q] = 0  # 1 once the row is in the chain
    for w0 in range(0, n, CHAIN_ROWS):  # one chain per window of rows: O(B * CHAIN_ROWS)
        w1 = min(n, w0 + CHAIN_ROWS)
        cur = w0
        for step in range(w0, w1):
            ordered[step] = rows[cur]
            chain[cur] = 1
            best, best_d = -1, np.uint64(1 << 62)
            for j in range(w0, w1):
                if chain[j] == 0:
                    d = np.uint64(0)
                    for w in range(words):
                        d += _popcount(bits[cur, w] ^ bits[j, w])
                    if d < best_d:
                        best, best_d = j, d
            cur = best
    p = 0
    groups[0] = n_groups
    groups[1] = 0
    for g in range(n_groups):
        start = p
        for t in range(min(4, n - g * 4)):
            row = ordered[g * 4 + t]
            for i in range(indptr[row], indptr[row + 1]):
                pix = indices[i]
                if mark[pix] < 0:
                    mark[pix] = p
                    groups[at_pix + p] = pix
                    for tt in range(4):
                        group_values[4 * p + tt] = 0.0
                    p += 1
                group_values[4 * mark[pix] + t] = values[i]
        while (p - start) % 4 != 0:
            groups[at_pix + p] = 0
            for tt in range(4):
                group_values[4 * p + tt] = 0.0
            p += 1
        for i in range(start, p):
            mark[groups[at_pix + i]] = -1
        groups[2 + g] = p


@njit(**JIT)
def _task_rows(batch, n_blocks):
    """Rows per task when a member's rows are split into ``n_blocks``: whole groups of four
    (:func:`_row_groups`), so that no group straddles two tasks."""
    return ((batch + n_blocks - 1) // n_blocks + 3) // 4 * 4


@njit(**JIT)
def _group_rows(params, start, width, groups, group_values, g0, g1, out, at):
    """``out[at + q*width : at + (q+1)*width] = x_q @ W`` for the rows of groups ``g0:g1``,
    ``q`` counted from the first row of group ``g0`` (see :func:`_row_groups`; rows past a short
    last group are written too, as zeros), W (d, width) row-major at ``params[start:]``.

    Four rows share every loaded row of W: a pass reads four pixels' rows of W once and
    feeds sixteen FMAs per element, where a row at a time (:func:`_sparse_rows`) feeds one
    FMA per element loaded from L2; faster, the padding to the group's union included."""
    w = np.uint64(width)
    base = np.uint64(start)
    at_pix = groups[0] + 2
    for g in range(g0, g1):
        o0 = np.uint64(at) + np.uint64(4 * (g - g0)) * w
        o1 = o0 + w
        o2 = o1 + w
        o3 = o2 + w
        for j in range(width):
            u = np.uint64(j)
            out[o0 + u] = 0.0
            out[o1 + u] = 0.0
            out[o2 + u] = 0.0
            out[o3 + u] = 0.0
        for p in range(groups[1 + g], groups[2 + g], 4):
            s0 = base + np.uint64(groups[at_pix + p]) * w
            s1 = base + np.uint64(groups[at_pix + p + 1]) * w
            s2 = base + np.uint64(groups[at_pix + p + 2]) * w
            s3 = base + np.uint64(groups[at_pix + p + 3]) * w
            v = 4 * p
            a0, a1, a2, a3 = group_values[v], group_values[v + 1], group_values[v + 2], group_values[v + 3]
            b0, b1, b2, b3 = group_values[v + 4], group_values[v + 5], group_values[v + 6], group_values[v + 7]
            c0, c1, c2, c3 = group_values[v + 8], group_values[v + 9], group_values[v + 10], group_values[v + 11]
            d0, d1, d2, d3 = group_values[v + 12], group_values[v + 13], group_values[v + 14], group_values[v + 15]
            for j in range(width):
                u = np.uint64(j)
                e0, e1, e2, e3 = params[s0 + u], params[s1 + u], params[s2 + u], params[s3 + u]
                out[o0 + u] += (a0 * e0 + b0 * e1) + (c0 * e2 + d0 * e3)
                out[o1 + u] += (a1 * e0 + b1 * e1) + (c1 * e2 + d1 * e3)
                out[o2 + u] += (a2 * e0 + b2 * e1) + (c2 * e2 + d2 * e3)
                out[o3 + u] += (a3 * e0 + b3 * e1) + (c3 * e2 + d3 * e3)


@njit(**JIT)
def _row_nonzeros(x, counts):
    """counts[r] = non-zero entries of row r of x (N, d). Serial, like :func:`_fill_csr`:
    they run once per split, and a parallel kernel would add seconds to the first run's
    compile."""
    for r in range(x.shape[0]):
        c = 0
        for j in range(x.shape[1]):
            c += x[r, j] != 0
        counts[r] = c


@njit(**JIT)
def _fill_csr(x, scale, indptr, indices, values):
    """Row r's non-zero entries of x, times ``scale``, at ``indptr[r]`` of indices/values."""
    for r in range(x.shape[0]):
        p = indptr[r]
        for j in range(x.shape[1]):
            v = x[r, j]
            if v != 0:
                indices[p] = j
                values[p] = np.float32(v) * scale
                p += 1
