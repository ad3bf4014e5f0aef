"""Numba kernels: the whole population's forward passes and losses, and the noise sums.

Private ``_``-prefixed kernels do the work over preallocated arrays and allocate nothing;
:mod:`fastes.workspace` holds the buffers, checks shapes and dtypes once and calls them.
Every kernel has a NumPy twin in :mod:`fastes.reference` that the tests compare it against.

A generation runs in phase kernels, each one call:

0. :func:`_row_groups` (batches of :data:`GROUP_MIN_ROWS` rows or more): the batch's rows
   chained by similar pixels and cut into groups of four, whose sparse products
   (:func:`_group_rows`) read each noise row once for four rows; the generation evaluates
   the rows in that order.
1. :func:`_first_layer`: ``x @ W0 + b0`` once per batch row, shared by every member
   (``x @ (W0 + s E0) = x @ W0 + s * (x @ E0)``); for low-rank noise (and for small
   full-rank populations) every member's first-layer noise projection in the same sparse
   pass, the noise gathered side by side so that the inner loop is long.
2. :func:`_member_losses`: per (noise vector, block of rows) task, the noise response of the
   first layer, each sign's later layers and the loss of every row.
3. :func:`_reduce_members`: each member's mean loss, summed over rows in order (inside phase
   2 when a task holds all rows).

Per-parameter standard deviations (PGPE, SNES: member ``i`` is ``theta + s_i sigma * u_k``,
``sigma`` a vector) take the same path: the grouped first layer gathers ``sigma * u_k``
instead of ``u_k``, and :func:`_member_losses_scaled` first scales each task's noise window
into a per-thread buffer (P multiplies, against the task's B x nnz x H1 of the first layer),
then runs the same task (:func:`_member_task`) on it with signs +-1. The single-sigma kernels
are compiled without that step.

Inputs reach the kernels as CSR rows (``indptr``, ``indices``, ``values``) plus the batch's
row numbers, and as the row groups' pixel unions: MNIST is 81% zeros and the first layer
holds most of the work. Layer geometry
travels in one int64 array ``geo`` (see :func:`geometry`), run flags in ``flags``, so a call
unboxes few arguments.

Speed notes, each measured: inner loops index flat arrays with ``uint64`` offsets (Numba
adds no negative-index wraparound branch for unsigned indices, so LLVM vectorises them,
and no array view is created per row, whose reference counting cost more than the
arithmetic); helpers take a block of rows per call (a call increfs its array arguments);
later layers compute four rows x four outputs per pass so that every loaded weight and
activation feeds four FMAs; the loss runs over a block of rows with a polynomial exp/log
that vectorises (``math.exp`` is a scalar libm call per logit). The unperturbed forward pass
(:func:`_forward_rows`) and the CSR builder run on one thread.

Determinism: every ``prange`` iteration writes only its own rows of the output, and sums
over rows or members run in a fixed order afterwards, so results are identical for any
thread count.
"""

from __future__ import annotations

import math
import types

import numba
import numpy as np
from numba import njit, prange

#: The one place fastmath is set: reassociation and contraction let LLVM vectorise the
#: inner sums; ``nnan``/``ninf`` stay off so NaN and infinity are still detected.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
JIT = dict(cache=True, fastmath=FASTMATH)

LOSS_MSE = 0
LOSS_CROSS_ENTROPY = 1
LOSS_CODES = {"mse": LOSS_MSE, "cross-entropy": LOSS_CROSS_ENTROPY}

# Rows of ``geo``: per layer l (columns), its widths and offsets.
G_DIMS, G_W, G_B, G_T, G_LRA, G_LRB, G_LRE = range(7)
# Entries of ``flags``.
F_SIGNS, F_LOWRANK, F_RANK, F_LOSS, F_BLOCKS, F_GROUPED, F_PHASES, F_THREADS, F_SCALED = range(9)
#: ``flags[F_PHASES]``: how much of a member's work to do (the profile times each prefix).
PHASE_NOISE, PHASE_LAYERS, PHASE_LOSS = 1, 2, 3


# Kernels find their per-thread scratch with numba.get_thread_id(), which reads state that
# Numba's thread pool sets up when it starts. Machine code loaded from the cache does not
# start it (compiling does), so a process whose first kernel is a cached serial one read
# garbage and crashed (`fastes evaluate` did): start the pool when the kernels are imported.
numba.get_num_threads()


#: Widest first layer (population noise vectors x first hidden width) gathered side by side.
GROUPED_MAX_WIDTH = 256
#: Noise columns gathered per block of the grouped first layer: (784 x 128) float32 is
#: 400 KB, which stays in L2 while every row of the batch reads it.
GATHER_COLUMNS = 128
#: Rows per task of the unperturbed forward pass.
FORWARD_BLOCK = 64
#: Rows that go through the later layers together (:func:`_tail_block`); a block's logits
#: buffer has this many spare columns for a last, partial group.
ROW_GROUP = 4
#: Batch rows x first-layer columns from which the first layer runs on every thread.
FIRST_LAYER_PARALLEL = 4096
#: Batch rows from which sparse products run by groups of four similar rows
#: (:func:`_row_groups`). Measured on the seed config (64 rows, population 8), chaining and
#: grouping cost more than they share: first layer 0.09 ms row by row, 0.12 by groups in
#: batch order, 0.14 chained.
GROUP_MIN_ROWS = 128
#: Rows chained together (:func:`_row_groups`): the chain compares every pair of its rows,
#: 0.3 ms for 256 MNIST rows, so a larger batch is chained by windows of this many (a
#: multiple of four: no group straddles two windows).
CHAIN_ROWS = 256
#: Populations x batch rows up to which a generation runs on one thread: below it, a
#: fork/join per phase costs more than the arithmetic it would share out.
SERIAL_MAX_MEMBER_ROWS = 4096


# --------------------------------------------------------------------------- helpers
#
# Helpers take a whole block of rows per call: a call that passes arrays increfs and decrefs
# each of them (atomics on reference counts that both threads share), which per row cost
# more than the arithmetic and kept two threads from being faster than one.


@njit(**JIT)
def _sparse_rows(params, start, width, indptr, indices, values, rows, r0, r1, out, at, stride):
    """``out[at + q*stride : ... + width] = x_{rows[r0+q]} @ W`` for ``q < r1 - r0``, W
    (d, width) row-major at ``params[start:]``. Four non-zero pixels per pass: a quarter of
    the loads and stores of the output row, which bound this loop."""
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
    form a group (the last may hold fewer). On
    MNIST batches a group's union holds ~240 pixels for 4 x ~150 non-zero ones (~310 for
    four rows in batch order). The order depends on the batch alone, so a population split
    into any tasks or Ray workers evaluates the same sums.

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
    FMA per element loaded from L2 (W is 400 KB at 784 x 128). Measured on this machine, one
    thread, 512 noise vectors x 256 MNIST rows: 111 ms against 154 ms, the padding to the
    group's union (~37% zeros) included."""
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
def _noise_block(table, off, k, geo, lowrank, rank, grouped, proj, batch, r0, r1, csr, rows, groups, group_values, zs):
    """``zs[q*H1 : (q+1)*H1]``: the first-layer noise response ``x @ E0 + e0`` of row ``r0 + q``
    for noise vector k (low rank: ``(x @ A.T) @ B / sqrt(r) + e``), with ``x @ E0`` or
    ``x @ A.T`` from the grouped first-layer pass (``proj``, (n_noise, B, cols)) or
    computed here from the noise table, by the rows' groups of four (:func:`_group_rows`) when
    ``groups`` holds any, else row by row (``csr``: indptr, indices, values)."""
    width0 = geo[G_DIMS, 1]
    n = r1 - r0
    if lowrank:
        e0 = np.uint64(off + geo[G_LRE, 0])
        inv_sqrt_r = np.float32(1.0 / math.sqrt(rank))
        for q in range(n):
            o = np.uint64(q * width0)
            at = (k * batch + r0 + q) * rank
            uq = proj[at] * inv_sqrt_r
            b0 = np.uint64(off + geo[G_LRB, 0])
            for j in range(width0):  # the bias and the first factor in one pass
                u = np.uint64(j)
                zs[o + u] = table[e0 + u] + uq * table[b0 + u]
            for f in range(1, rank):
                uq = proj[at + f] * inv_sqrt_r
                b0 = np.uint64(off + geo[G_LRB, 0] + f * width0)
                for j in range(width0):
                    u = np.uint64(j)
                    zs[o + u] += uq * table[b0 + u]
        return
    if grouped:
        for q in range(n):
            src = np.uint64((k * batch + r0 + q) * width0)
            o = np.uint64(q * width0)
            for j in range(width0):
                zs[o + np.uint64(j)] = proj[src + np.uint64(j)]
    else:
        if groups[0] > 0:  # tasks start at a group (_task_rows)
            _group_rows(table, off + geo[G_W, 0], width0, groups, group_values, r0 // 4, (r1 + 3) // 4, zs, 0)
        else:
            indptr, indices, values = csr
            _sparse_rows(table, off + geo[G_W, 0], width0, indptr, indices, values, rows, r0, r1, zs, 0, width0)
    e0 = np.uint64(off + geo[G_B, 0])
    for q in range(n):
        o = np.uint64(q * width0)
        for j in range(width0):
            u = np.uint64(j)
            zs[o + u] += table[e0 + u]


@njit(**JIT)
def _tail_block(base, base_at, zs, s, wt, geo, n, hs, lt, stride):
    """Logits of ``n`` rows of one member into ``lt[c * stride + q]``: the first layer's
    ``base + s * z`` (rows of H1 at ``base[base_at:]`` and ``zs``), then ReLU and the later
    layers (:func:`_dense_rows`), whose weights ``wt`` are stored transposed. Rows are
    processed in groups of four; a last partial group repeats its last row into spare
    columns of ``lt`` (``stride >= n + 3``). ``hs`` holds two blocks of activations."""
    n_layers = geo.shape[1] - 1
    width0 = geo[G_DIMS, 1]
    n4 = (n + ROW_GROUP - 1) // ROW_GROUP * ROW_GROUP
    zero = np.float32(0.0)
    half = hs.shape[0] // 2
    x = hs[:half]
    y = hs[half:]
    if n_layers == 1:  # no hidden layer: the first layer gives the logits
        st = np.uint64(stride)
        for q in range(n4):
            b = np.uint64(base_at + min(q, n - 1) * width0)
            z = np.uint64(min(q, n - 1) * width0)
            for c in range(width0):
                u = np.uint64(c)
                lt[u * st + np.uint64(q)] = base[b + u] + s * zs[z + u]
        return
    # ReLU as a select, not a conditional store nor max() (which keeps NaN semantics):
    # LLVM vectorises only this form.
    for q in range(n4):
        b = np.uint64(base_at + min(q, n - 1) * width0)
        z = np.uint64(min(q, n - 1) * width0)
        o = np.uint64(q * width0)
        for j in range(width0):
            u = np.uint64(j)
            v = base[b + u] + s * zs[z + u]
            x[o + u] = v if v > zero else zero
    for l in range(1, n_layers):
        fan_in = geo[G_DIMS, l]
        fan_out = geo[G_DIMS, l + 1]
        if l == n_layers - 1:
            _dense_rows(wt, geo[G_T, l], fan_in, fan_out, x, n4, lt, 1, stride)
        else:
            _dense_rows(wt, geo[G_T, l], fan_in, fan_out, x, n4, y, fan_out, 1)
            for i in range(n4 * fan_out):
                v = y[i]
                y[i] = v if v > zero else zero
            x, y = y, x


@njit(**JIT)
def _dense_rows(wt, t0, fan_in, fan_out, h, n, out, row_step, col_step):
    """``out[q*row_step + c*col_step] = h[q*fan_in : (q+1)*fan_in] @ W[:, c] + b[c]`` for
    ``q < n`` (a multiple of 4), W stored transposed ((fan_out, fan_in) at ``wt[t0:]``, its
    bias right after).

    Four rows x four outputs per pass of the inner loop (then four rows x one output): each
    loaded weight feeds four FMAs and each activation four, and the sixteen sums stay in
    registers. Measured per core: a dot product per output 22 GFMA/s, two rows x four
    outputs 39, this 46. It is a function of its own, called once per layer and block: in a
    larger function the sixteen sums spilled to the stack (26 GFMA/s).
    """
    nn = np.uint64(fan_in)
    bias = np.uint64(t0 + fan_out * fan_in)
    rs = np.uint64(row_step)
    cs = np.uint64(col_step)
    zero = np.float32(0.0)
    for q in range(0, n, 4):
        x0 = np.uint64(q * fan_in)
        x1 = x0 + nn
        x2 = x1 + nn
        x3 = x2 + nn
        r0 = np.uint64(q) * rs
        c = 0
        while c + 4 <= fan_out:
            w0 = np.uint64(t0 + c * fan_in)
            w1 = w0 + nn
            w2 = w1 + nn
            w3 = w2 + nn
            a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = zero
            e0 = e1 = e2 = e3 = f0 = f1 = f2 = f3 = zero
            for j in range(fan_in):
                u = np.uint64(j)
                p0, p1, p2, p3 = wt[w0 + u], wt[w1 + u], wt[w2 + u], wt[w3 + u]
                h0, h1, h2, h3 = h[x0 + u], h[x1 + u], h[x2 + u], h[x3 + u]
                a0 += h0 * p0
                a1 += h0 * p1
                a2 += h0 * p2
                a3 += h0 * p3
                b0 += h1 * p0
                b1 += h1 * p1
                b2 += h1 * p2
                b3 += h1 * p3
                e0 += h2 * p0
                e1 += h2 * p1
                e2 += h2 * p2
                e3 += h2 * p3
                f0 += h3 * p0
                f1 += h3 * p1
                f2 += h3 * p2
                f3 += h3 * p3
            cu = np.uint64(c)
            k0, k1, k2, k3 = wt[bias + cu], wt[bias + cu + 1], wt[bias + cu + 2], wt[bias + cu + 3]
            o = r0 + cu * cs
            out[o], out[o + cs], out[o + 2 * cs], out[o + 3 * cs] = a0 + k0, a1 + k1, a2 + k2, a3 + k3
            o += rs
            out[o], out[o + cs], out[o + 2 * cs], out[o + 3 * cs] = b0 + k0, b1 + k1, b2 + k2, b3 + k3
            o += rs
            out[o], out[o + cs], out[o + 2 * cs], out[o + 3 * cs] = e0 + k0, e1 + k1, e2 + k2, e3 + k3
            o += rs
            out[o], out[o + cs], out[o + 2 * cs], out[o + 3 * cs] = f0 + k0, f1 + k1, f2 + k2, f3 + k3
            c += 4
        while c < fan_out:
            w0 = np.uint64(t0 + c * fan_in)
            a0 = b0 = e0 = f0 = zero
            for j in range(fan_in):
                u = np.uint64(j)
                p0 = wt[w0 + u]
                a0 += h[x0 + u] * p0
                b0 += h[x1 + u] * p0
                e0 += h[x2 + u] * p0
                f0 += h[x3 + u] * p0
            k0 = wt[bias + np.uint64(c)]
            o = r0 + np.uint64(c) * cs
            out[o], out[o + rs], out[o + 2 * rs], out[o + 3 * rs] = a0 + k0, b0 + k0, e0 + k0, f0 + k0
            c += 1


# Cephes expf / logf constants: float32 accuracy (relative error ~1e-7) from polynomials that
# vectorise over a block of rows (``math.exp`` is a scalar libm call per logit).
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_SQRT2 = np.float32(1.41421356)


@njit(**JIT)
def _block_loss(lt, n_out, stride, n, vs, loss_kind, out, out_at):
    """Loss of ``n`` rows whose logits are ``lt[c * stride + q]`` (q < n), into
    ``out[out_at + q]`` (float64). ``vs`` (6, >= n) float32 scratch; its row 5 holds the
    rows' labels as int32."""
    acc = vs[1]
    lab = vs[5].view(np.int32)
    st = np.uint64(stride)
    o = np.uint64(out_at)
    for q in range(n):
        acc[q] = 0.0
    if loss_kind == LOSS_MSE:
        for c in range(n_out):
            at = np.uint64(c) * st
            for q in range(n):
                d = lt[at + np.uint64(q)] - (np.float32(1.0) if lab[q] == c else np.float32(0.0))
                acc[q] += d * d
        for q in range(n):
            out[o + np.uint64(q)] = acc[q]
        return
    top = vs[0]
    pick = vs[2]
    mant = vs[3]
    scale = vs[4]
    bits = scale.view(np.int32)
    for q in range(n):
        top[q] = lt[q]
        pick[q] = 0.0
    for c in range(1, n_out):
        at = np.uint64(c) * st
        for q in range(n):
            v = lt[at + np.uint64(q)]
            top[q] = v if v > top[q] else top[q]
    for c in range(n_out):
        at = np.uint64(c) * st
        for q in range(n):
            v = lt[at + np.uint64(q)]
            pick[q] += v if lab[q] == c else np.float32(0.0)
            d = v - top[q]
            d = d if d > np.float32(-87.0) else np.float32(-87.0)
            nf = np.floor(d * _LOG2E + np.float32(0.5))
            r = d - nf * _LN2_HI - nf * _LN2_LO
            p = np.float32(1.9875691500e-4)
            p = p * r + np.float32(1.3981999507e-3)
            p = p * r + np.float32(8.3334519073e-3)
            p = p * r + np.float32(4.1665795894e-2)
            p = p * r + np.float32(1.6666665459e-1)
            p = p * r + np.float32(5.0000001201e-1)
            mant[q] = p * r * r + r + np.float32(1.0)
            bits[q] = (np.int32(nf) + np.int32(127)) << np.int32(23)
        for q in range(n):
            acc[q] += mant[q] * scale[q]
    # log(acc), acc in [1, n_out]: acc = m * 2^e, log m by polynomial
    acc_bits = acc.view(np.int32)
    for q in range(n):
        b = acc_bits[q]
        bits[q] = (b & np.int32(0x7FFFFF)) | np.int32(0x3F800000)
        mant[q] = np.float32((b >> np.int32(23)) - np.int32(127))
    for q in range(n):
        m = scale[q]
        e = mant[q]
        big = m > _SQRT2
        m = m * np.float32(0.5) if big else m
        e = e + np.float32(1.0) if big else e
        x = m - np.float32(1.0)
        z = x * x
        y = np.float32(7.0376836292e-2)
        y = y * x - np.float32(1.1514610310e-1)
        y = y * x + np.float32(1.1676998740e-1)
        y = y * x - np.float32(1.2420140846e-1)
        y = y * x + np.float32(1.4249322787e-1)
        y = y * x - np.float32(1.6668057665e-1)
        y = y * x + np.float32(2.0000714765e-1)
        y = y * x - np.float32(2.4999993993e-1)
        y = y * x + np.float32(3.3333331174e-1)
        y = y * x * z + e * _LN2_LO - np.float32(0.5) * z
        log_acc = x + y + e * _LN2_HI
        out[o + np.uint64(q)] = top[q] + log_acc - pick[q]


@njit(**JIT)
def _transpose_layers(theta, geo, out):
    """Layers >= 1 of the unperturbed model, transposed: (fan_out, fan_in) then bias."""
    for l in range(1, geo.shape[1] - 1):
        fan_in = geo[G_DIMS, l]
        fan_out = geo[G_DIMS, l + 1]
        t0 = geo[G_T, l]
        w = geo[G_W, l]
        for i in range(fan_in):
            for j in range(fan_out):
                out[t0 + j * fan_in + i] = theta[w + i * fan_out + j]
        for j in range(fan_out):
            out[t0 + fan_out * fan_in + j] = theta[geo[G_B, l] + j]


@njit(**JIT)
def _perturbed_transposed(wt_base, table, off, s, lowrank, rank, geo, out):
    """Layers >= 1 of one member, ``W + s E`` (or ``W + s A.T B / sqrt(r)``) and ``b + s e``,
    transposed like ``wt_base``. Built once per task and sign, reused for all its rows."""
    inv_sqrt_r = np.float32(1.0 / math.sqrt(rank))
    for l in range(1, geo.shape[1] - 1):
        fan_in = geo[G_DIMS, l]
        fan_out = geo[G_DIMS, l + 1]
        t0 = geo[G_T, l]
        for j in range(fan_out):
            d0 = np.uint64(t0 + j * fan_in)
            for i in range(fan_in):
                out[d0 + np.uint64(i)] = wt_base[d0 + np.uint64(i)]
            if lowrank:
                for q in range(rank):
                    coef = s * inv_sqrt_r * table[off + geo[G_LRB, l] + q * fan_out + j]
                    a0 = np.uint64(off + geo[G_LRA, l] + q * fan_in)
                    for i in range(fan_in):
                        u = np.uint64(i)
                        out[d0 + u] += coef * table[a0 + u]
            else:
                e0 = off + geo[G_W, l] + j
                for i in range(fan_in):
                    out[d0 + np.uint64(i)] += s * table[e0 + i * fan_out]
        bias_at = t0 + fan_out * fan_in
        e0 = off + (geo[G_LRE, l] if lowrank else geo[G_B, l])
        for j in range(fan_out):
            out[bias_at + j] = wt_base[bias_at + j] + s * table[e0 + j]


# --------------------------------------------------------------------------- phase kernels


def _first_layer_impl(theta, table, offsets, sigmas, geo, flags, indptr, indices, values, rows, groups, group_values,
                      wide, base, proj, wt_base):
    """Phase 1: ``base[r] = x_r @ W0 + b0`` (B, H1) for every batch row, and (grouped) every
    noise vector's projection ``proj[k, r] = x_r @ E0_k`` (full rank, H1 columns) or
    ``x_r @ A_k.T`` (low rank, r columns), member-major (n_noise, B, cols) so that a task
    reads one contiguous block; and the later layers' transposed base weights. With
    ``flags[F_SCALED]`` (full rank) the noise is ``sigmas * E0_k``, ``sigmas`` (P,) float32
    (otherwise a placeholder).

    The projection runs by blocks of members: each block's noise is gathered side by side
    into a per-thread (d, block columns) matrix that stays in L2 while the batch's rows read
    it by groups of four similar rows (:func:`_row_groups`; row by row when ``groups``
    holds none): one long vectorised inner loop per group, where a pass per member of width
    H1 or r would not vectorise.
    """
    lowrank = flags[F_LOWRANK] != 0
    rank = flags[F_RANK]
    n_in = geo[G_DIMS, 0]
    width0 = geo[G_DIMS, 1]
    n_noise = offsets.shape[0]
    batch = rows.shape[0]
    b0 = np.uint64(geo[G_B, 0])
    for r in prange(batch):
        _sparse_rows(theta, geo[G_W, 0], width0, indptr, indices, values, rows, r, r + 1, base, r * width0, width0)
        at = np.uint64(r * width0)
        for j in range(width0):
            base[at + np.uint64(j)] += theta[b0 + np.uint64(j)]
    if flags[F_GROUPED] != 0:
        cols = rank if lowrank else width0
        per_block = max(1, GATHER_COLUMNS // cols)
        n_cb = (n_noise + per_block - 1) // per_block
        # few column blocks (small populations) also split the rows, each part gathering
        # its block again: 2 x 15 us of gathering beats one thread doing everything
        n_rc = min(max(1, (2 * flags[F_THREADS] + n_cb - 1) // n_cb), max(1, batch // 16))
        chunk = ((batch + n_rc - 1) // n_rc + 3) // 4 * 4  # whole groups of rows (_row_groups)
        for task in prange(n_cb * n_rc):
            w = wide[numba.get_thread_id()]
            cb = task // n_rc
            r0 = (task % n_rc) * chunk
            r1 = min(batch, r0 + chunk)
            k0 = cb * per_block
            k1 = min(n_noise, k0 + per_block)
            width = (k1 - k0) * cols
            # column (k, q) of row i: low rank A_k[q, i] = table[off_k + a0 + q*d + i];
            # full rank E0_k[i, q] = table[off_k + w0 + i*H1 + q]
            start = geo[G_LRA, 0] if lowrank else geo[G_W, 0]
            if flags[F_SCALED] != 0:  # full rank: a row of E0_k, scaled by its parameters' sigmas
                for i in range(n_in):
                    dst = np.uint64(i * width)
                    sig = np.uint64(start) + np.uint64(i * width0)
                    for k in range(k0, k1):
                        src = np.uint64(offsets[k]) + sig
                        at = dst + np.uint64((k - k0) * cols)
                        for q in range(cols):
                            u = np.uint64(q)
                            w[at + u] = table[src + u] * sigmas[sig + u]
            elif lowrank:
                # A_k's rows are contiguous in the table: read each once, in order (one stream
                # the prefetcher follows; a row of ``w`` at a time read 128 windows at once
                # and waited on memory), and write its column of ``w``, which stays in L2
                for k in range(k0, k1):
                    for q in range(cols):
                        src = np.uint64(offsets[k] + start + q * n_in)
                        at = np.uint64((k - k0) * cols + q)
                        for i in range(n_in):
                            w[np.uint64(i) * np.uint64(width) + at] = table[src + np.uint64(i)]
            else:  # full rank: rows of E0_k, H1 contiguous values each
                for i in range(n_in):
                    dst = np.uint64(i * width)
                    for k in range(k0, k1):
                        src = np.uint64(offsets[k] + start + i * width0)
                        at = dst + np.uint64((k - k0) * cols)
                        for q in range(cols):
                            w[at + np.uint64(q)] = table[src + np.uint64(q)]
            tmp = n_in * width
            if groups[0] > 0:
                _group_rows(w, 0, width, groups, group_values, r0 // 4, (r1 + 3) // 4, w, tmp)
            else:
                _sparse_rows(w, 0, width, indptr, indices, values, rows, r0, r1, w, tmp, width)
            for k in range(k0, k1):
                for r in range(r0, r1):
                    src = np.uint64(tmp + (r - r0) * width + (k - k0) * cols)
                    dst = np.uint64((k * batch + r) * cols)
                    for q in range(cols):
                        proj[dst + np.uint64(q)] = w[src + np.uint64(q)]
    _transpose_layers(theta, geo, wt_base)


@njit(inline="always", **JIT)
def _member_task(noise, off, sigma, k, r0, r1, geo, flags, csr, groups, group_values, rows, labels, base, proj,
                 wt_base, w, zs, hs, lt, vs, row_loss, out_loss):
    """One task of phase 2: noise vector k (at ``noise[off:]``, scaled by ``sigma``) on batch
    rows ``r0:r1``, both signs. Inlined into each phase-2 kernel (a call would incref every
    array argument, per task)."""
    lowrank = flags[F_LOWRANK] != 0
    phases = flags[F_PHASES]
    n_blocks = flags[F_BLOCKS]
    width0 = geo[G_DIMS, 1]
    n_out = geo[G_DIMS, geo.shape[1] - 1]
    batch = rows.shape[0]
    stride = lt.shape[0] // n_out
    _noise_block(noise, off, k, geo, lowrank, flags[F_RANK], flags[F_GROUPED] != 0, proj, batch, r0, r1, csr, rows,
                 groups, group_values, zs)
    lab = vs[5].view(np.int32)
    for q in range(r1 - r0):
        lab[q] = labels[rows[r0 + q]]
    n_signs = flags[F_SIGNS]
    for i in range(n_signs):
        s = sigma if i == 0 else -sigma
        if phases >= PHASE_LAYERS:
            _perturbed_transposed(wt_base, noise, off, s, lowrank, flags[F_RANK], geo, w)
            _tail_block(base, r0 * width0, zs, s, w, geo, r1 - r0, hs, lt, stride)
        if phases >= PHASE_LOSS:
            _block_loss(lt, n_out, stride, r1 - r0, vs, flags[F_LOSS], row_loss[k * n_signs + i], r0)
            if n_blocks == 1:  # this task holds every row of its member: reduce here
                _reduce_member(row_loss, k * n_signs + i, batch, out_loss)


def _member_losses_impl(table, offsets, sigma, geo, flags, csr, groups, group_values, rows, labels,
                        base, proj, wt_base, wsc, zsc, hsc, lsc, vsc, row_loss, out_loss):
    """Phase 2: every member's loss on every batch row, ``row_loss`` (n, B) float64.

    Task = (noise vector k, block of rows). Member ``m = k * n_signs + i`` uses sign ``+1``
    for ``i = 0`` and ``-1`` for ``i = 1``: antithetic pairs share one noise read and one
    first-layer noise response. Each sign's logits collect in ``lsc`` (a column per row)
    and the loss runs over the block. With one block per task, each member's mean is
    reduced here too. ``flags[F_PHASES]`` stops after the noise response or the later
    layers (the profile times each prefix).
    """
    n_blocks = flags[F_BLOCKS]
    batch = rows.shape[0]
    block = _task_rows(batch, n_blocks)
    for task in prange(offsets.shape[0] * n_blocks):
        k = task // n_blocks
        r0 = (task % n_blocks) * block
        t = numba.get_thread_id()
        _member_task(table, offsets[k], sigma, k, r0, max(r0, min(batch, r0 + block)), geo, flags, csr,
                     groups, group_values,
                     rows, labels, base, proj, wt_base, wsc[t], zsc[t], hsc[t], lsc[t], vsc[t], row_loss, out_loss)


def _member_losses_scaled_impl(table, offsets, sigmas, geo, flags, csr, groups, group_values, rows, labels,
                               base, proj, wt_base, wsc, zsc, hsc, lsc, vsc, ssc, row_loss, out_loss):
    """Phase 2 with a standard deviation per parameter, ``sigmas`` (P,) float32: each task
    first writes its noise vector times ``sigmas`` into the thread's ``ssc`` row (from the
    first bias on when the grouped first layer has already scaled ``E0``), then runs
    :func:`_member_task` on it with signs +-1. Otherwise as :func:`_member_losses_impl`."""
    n_blocks = flags[F_BLOCKS]
    batch = rows.shape[0]
    block = _task_rows(batch, n_blocks)
    start = geo[G_B, 0] if flags[F_GROUPED] != 0 else 0
    for task in prange(offsets.shape[0] * n_blocks):
        k = task // n_blocks
        r0 = (task % n_blocks) * block
        t = numba.get_thread_id()
        scaled = ssc[t]
        _scale_window(table, offsets[k], sigmas, start, scaled)
        _member_task(scaled, 0, np.float32(1.0), k, r0, max(r0, min(batch, r0 + block)), geo, flags, csr,
                     groups, group_values,
                     rows, labels, base, proj, wt_base, wsc[t], zsc[t], hsc[t], lsc[t], vsc[t], row_loss, out_loss)


@njit(**JIT)
def _scale_window(table, off, sigmas, start, out):
    """``out[p] = table[off + p] * sigmas[p]`` for ``start <= p < len(sigmas)``."""
    base = np.uint64(off)
    for p in range(start, sigmas.shape[0]):
        u = np.uint64(p)
        out[u] = table[base + u] * sigmas[u]


@njit(**JIT)
def _reduce_member(row_loss, m, batch, out_loss):
    """Mean loss of member m, summed over rows in order (float64)."""
    total = 0.0
    for r in range(batch):
        total += row_loss[m, r]
    out_loss[m] = total / batch


def _reduce_members_impl(row_loss, batch, out_loss):
    """Phase 3: each member's mean loss over the batch, rows summed in order."""
    for m in prange(out_loss.shape[0]):
        _reduce_member(row_loss, m, batch, out_loss)


@njit(**JIT)
def _forward_rows(theta, geo, indptr, indices, values, rows, wt_base, bsc, zeros, hsc, lsc, out):
    """Logits (B, C) of the unperturbed model, ``out`` flat, by blocks of ``zeros.shape[0] //
    H1`` rows (``wt_base`` from :func:`_transpose_layers`).

    One thread: a batch's metrics are too little work to share out, a test-set evaluation
    takes milliseconds, and one compiled variant instead of two saves 1.9 s of a first run."""
    n_layers = geo.shape[1] - 1
    width0 = geo[G_DIMS, 1]
    n_out = geo[G_DIMS, n_layers]
    batch = rows.shape[0]
    stride = lsc.shape[1] // n_out
    block = zeros.shape[0] // width0
    b0 = np.uint64(geo[G_B, 0])
    for blk in range((batch + block - 1) // block):
        t = 0  # one thread: its scratch slot (see the note on numba.get_thread_id above)
        r0 = blk * block
        r1 = min(batch, r0 + block)
        bs = bsc[t]
        lt = lsc[t]
        _sparse_rows(theta, geo[G_W, 0], width0, indptr, indices, values, rows, r0, r1, bs, 0, width0)
        for q in range(r1 - r0):
            at = np.uint64(q * width0)
            for j in range(width0):
                bs[at + np.uint64(j)] += theta[b0 + np.uint64(j)]
        _tail_block(bs, 0, zeros, np.float32(0.0), wt_base, geo, r1 - r0, hsc[t], lt, stride)
        for q in range(r1 - r0):
            for c in range(n_out):
                out[(r0 + q) * n_out + c] = lt[c * stride + q]


@njit(**JIT)
def _base_logits(base, geo, n, wt_base, zeros, hs, lt, out):
    """Logits (n, C) of the unperturbed model, ``out`` flat, from its first layer ``base``
    (n, H1) as phase 1 left it (``x @ W0 + b0``, the batch's rows in the generation's order)
    and ``wt_base``: the model the population is drawn around, scored on its batch with no
    second sparse pass. One thread, by blocks of ``zeros.shape[0] // H1`` rows."""
    width0 = geo[G_DIMS, 1]
    n_out = geo[G_DIMS, geo.shape[1] - 1]
    stride = lt.shape[0] // n_out
    block = zeros.shape[0] // width0
    for r0 in range(0, n, block):
        r1 = min(n, r0 + block)
        _tail_block(base, r0 * width0, zeros, np.float32(0.0), wt_base, geo, r1 - r0, hs, lt, stride)
        for q in range(r1 - r0):
            for c in range(n_out):
                out[(r0 + q) * n_out + c] = lt[c * stride + q]


def _row_losses_impl(logits, labels, rows, loss_kind, row_loss, row_correct):
    """Per-row loss (float64) and correctness of logits (B, C) against labels[rows]."""
    n_out = logits.shape[1]
    for r in range(rows.shape[0]):
        out = logits[r]
        label = labels[rows[r]]
        best = 0
        for c in range(1, n_out):
            if out[c] > out[best]:
                best = c
        row_correct[r] = best == label
        if loss_kind == LOSS_MSE:
            loss = 0.0
            for c in range(n_out):
                d = np.float64(out[c]) - (1.0 if c == label else 0.0)
                loss += d * d
        else:
            top = np.float64(out[best])
            acc = 0.0
            for c in range(n_out):
                acc += math.exp(np.float64(out[c]) - top)
            loss = top + math.log(acc) - out[label]
        row_loss[r] = loss


def _compiled(impl):
    """A phase kernel twice: threaded (``prange``) and serial, for work too small to pay a
    fork/join (the seed config's whole generation is ~20 microseconds of arithmetic).

    The serial twin is a copy of the function under its own name: Numba's cache files are
    named by the function, not by its ``parallel`` flag, so two dispatchers of one function
    would load each other's machine code."""
    serial = types.FunctionType(impl.__code__, impl.__globals__, impl.__name__ + "_serial")
    serial.__qualname__ = serial.__name__
    serial.__doc__ = impl.__doc__
    return njit(parallel=True, **JIT)(impl), njit(**JIT)(serial)


_first_layer, _first_layer_serial = _compiled(_first_layer_impl)
_member_losses, _member_losses_serial = _compiled(_member_losses_impl)
_member_losses_scaled, _member_losses_scaled_serial = _compiled(_member_losses_scaled_impl)
_reduce_members, _reduce_members_serial = _compiled(_reduce_members_impl)
_row_losses = njit(**JIT)(_row_losses_impl)


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


@njit(**JIT)
def _row_nonzeros(x, counts):
    """counts[r] = non-zero entries of row r of x (N, d). Serial, like :func:`_fill_csr`:
    they run once per split (30 ms for MNIST's training set), and a parallel kernel would
    add seconds to the first run's compile."""
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
