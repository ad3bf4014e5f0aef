"""Numba kernels: the whole population's forward passes and losses, and the noise sums.

Private ``_``-prefixed kernels do the work over preallocated arrays and allocate nothing;
the public functions below them check shapes and dtypes once and call them. Every kernel
has a NumPy twin in :mod:`fastes.reference` that the tests compare it against.

Inputs reach the kernels as CSR rows (``indptr``, ``indices``, ``values``) plus the batch's
row numbers: MNIST is 81% zeros, and the first layer holds almost all of the work, so it
only visits non-zero pixels. Layers are described by ``dims`` (widths, input first) and
``w_start``/``b_start`` (offsets into the flat parameter vector, see
:mod:`fastes.layout`). A member's noise is the window ``table[offset:]`` of the shared
noise table (:mod:`fastes.noise`).

Determinism: every ``prange`` iteration writes only its own rows of the output, and sums
over rows or members run in a fixed order afterwards, so results are identical for any
thread count.
"""

from __future__ import annotations

import math

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

#: Scratch vectors per thread: layer-0 noise response and two activation buffers.
N_SCRATCH = 3


# --------------------------------------------------------------------------- helpers


@njit(**JIT)
def _row_loss(out, label, loss_kind):
    """Loss of one row's logits ``out`` (C,) and whether its argmax equals ``label``.

    Transcendentals run in float32 (``expf``/``logf``, several times faster than double);
    the row's loss is returned as float64 and summed over rows in float64.
    """
    n_out = out.shape[0]
    best = 0
    for c in range(1, n_out):
        if out[c] > out[best]:
            best = c
    if loss_kind == LOSS_MSE:
        loss = np.float32(0.0)
        for c in range(n_out):
            d = out[c] - (np.float32(1.0) if c == label else np.float32(0.0))
            loss += d * d
        return np.float64(loss), best == label
    top = out[best]
    acc = np.float32(0.0)
    for c in range(n_out):
        acc += math.exp(out[c] - top)
    return np.float64(top + math.log(acc) - out[label]), best == label


@njit(**JIT)
def _sparse_layer0(params, w0, b0, width, indptr, indices, values, row, out):
    """out = x_row @ W0 + b0 for one CSR row (W0 stored (fan_in, width) at params[w0:]).

    Inner loops index slices with ``range`` counters so that LLVM can prove the indices
    non-negative, drop Numba's wraparound checks and vectorise (2-3x faster).
    """
    bias = params[b0 : b0 + width]
    for j in range(width):
        out[j] = bias[j]
    for p in range(indptr[row], indptr[row + 1]):
        v = values[p]
        start = w0 + indices[p] * width
        w = params[start : start + width]
        for j in range(width):
            out[j] += v * w[j]


@njit(**JIT)
def _dense_layer(theta, w, b, fan_in, fan_out, h, out):
    """out = h @ W + b with W stored (fan_in, fan_out) at theta[w:]; skips zero inputs."""
    bias = theta[b : b + fan_out]
    for j in range(fan_out):
        out[j] = bias[j]
    for i in range(fan_in):
        hi = h[i]
        if hi != 0.0:
            start = w + i * fan_out
            wrow = theta[start : start + fan_out]
            for j in range(fan_out):
                out[j] += hi * wrow[j]


@njit(**JIT)
def _transpose_layers(theta, dims, w_start, b_start, t_start, out):
    """Layers >= 1 of the unperturbed model, transposed: (fan_out, fan_in) then bias."""
    for l in range(1, dims.shape[0] - 1):
        fan_in = dims[l]
        fan_out = dims[l + 1]
        t0 = t_start[l]
        for i in range(fan_in):
            for j in range(fan_out):
                out[t0 + j * fan_in + i] = theta[w_start[l] + i * fan_out + j]
        for j in range(fan_out):
            out[t0 + fan_out * fan_in + j] = theta[b_start[l] + j]


@njit(**JIT)
def _perturbed_transposed(wt_base, table, off, s, lowrank, rank, inv_sqrt_r, lr_starts,
                          dims, w_start, b_start, t_start, out):
    """Layers >= 1 of one member, ``W + s E`` (or ``W + s A.T B / sqrt(r)``) and
    ``b + s e``, transposed like ``wt_base`` so that each output is one contiguous dot
    product in :func:`_transposed_layer`. Built once per task and sign, reused for every
    row of the task."""
    for l in range(1, dims.shape[0] - 1):
        fan_in = dims[l]
        fan_out = dims[l + 1]
        t0 = t_start[l]
        for j in range(fan_out):
            dst = out[t0 + j * fan_in : t0 + (j + 1) * fan_in]
            src = wt_base[t0 + j * fan_in : t0 + (j + 1) * fan_in]
            for i in range(fan_in):
                dst[i] = src[i]
            if lowrank:
                for q in range(rank):
                    coef = s * inv_sqrt_r * table[off + lr_starts[1, l] + q * fan_out + j]
                    a0 = off + lr_starts[0, l] + q * fan_in
                    arow = table[a0 : a0 + fan_in]
                    for i in range(fan_in):
                        dst[i] += coef * arow[i]
            else:
                for i in range(fan_in):
                    dst[i] += s * table[off + w_start[l] + i * fan_out + j]
        bias_at = t0 + fan_out * fan_in
        e0 = off + (lr_starts[2, l] if lowrank else b_start[l])
        for j in range(fan_out):
            out[bias_at + j] = wt_base[bias_at + j] + s * table[e0 + j]


@njit(**JIT)
def _transposed_layer(wt, t0, fan_in, fan_out, h, out):
    """out = h @ W' + b' with W' stored transposed (fan_out, fan_in) at wt[t0:], b' after it."""
    bias_at = t0 + fan_out * fan_in
    x = h[:fan_in]
    for j in range(fan_out):
        wrow = wt[t0 + j * fan_in : t0 + (j + 1) * fan_in]
        acc = np.float32(0.0)
        for i in range(fan_in):
            acc += x[i] * wrow[i]
        out[j] = wt[bias_at + j] + acc


@njit(**JIT)
def _relu(h, width):
    # A select, not a conditional store nor max() (which keeps NaN semantics): LLVM
    # vectorises only this form, 10x faster.
    zero = np.float32(0.0)
    for j in range(width):
        v = h[j]
        h[j] = v if v > zero else zero


# --------------------------------------------------------------------------- kernels


@njit(parallel=True, **JIT)
def _forward_rows(theta, dims, w_start, b_start, indptr, indices, values, rows, scratch, out):
    """Logits of the unperturbed model for each batch row: out (B, C)."""
    n_layers = dims.shape[0] - 1
    for r in prange(rows.shape[0]):
        t = numba.get_thread_id()
        h = scratch[t, 1]
        o = scratch[t, 2]
        _sparse_layer0(theta, w_start[0], b_start[0], dims[1], indptr, indices, values, rows[r], h)
        for l in range(1, n_layers):
            _relu(h, dims[l])
            _dense_layer(theta, w_start[l], b_start[l], dims[l], dims[l + 1], h, o)
            h, o = o, h
        for c in range(dims[n_layers]):
            out[r, c] = h[c]


@njit(**JIT)
def _batch_losses(logits, labels, rows, loss_kind, row_loss, row_correct):
    """Per-row loss and correctness of logits (B, C) against labels[rows]."""
    for r in range(rows.shape[0]):
        loss, ok = _row_loss(logits[r], labels[rows[r]], loss_kind)
        row_loss[r] = loss
        row_correct[r] = ok


@njit(parallel=True, **JIT)
def _population_losses(
    theta, table, offsets, sigma, n_signs, lowrank, rank, lr_starts,
    dims, w_start, b_start, t_start, indptr, indices, values, rows, labels, loss_kind,
    n_blocks, grouped, wide, layer0, wt_base, scratch, wscratch, row_loss, row_correct, out_loss, out_correct,
):
    """Mean loss and correct count of every population member on one batch.

    Member ``m = k * n_signs + i`` uses noise window ``offsets[k]`` with sign ``+1`` for
    ``i = 0`` and ``-1`` for ``i = 1`` (antithetic pairs share one noise read and one
    first-layer noise response). ``x @ W0 + b0`` is computed once per row and shared by
    every member: ``x @ (W0 + s E0) = x @ W0 + s * (x @ E0)``.

    ``grouped``: the first layer's weights and every member's first-layer noise (full-rank
    ``E0``, H1 columns, for small populations; low-rank ``A0.T``, r columns, always) are
    gathered side by side into ``wide`` (d + 1, span), and one sparse pass per row fills
    ``layer0`` with the base response and every member's noise projection: one long inner
    loop that vectorises, where n separate passes of width H1 (or r) would not.
    """
    n_layers = dims.shape[0] - 1
    batch = rows.shape[0]
    n_in = dims[0]
    width0 = dims[1]
    n_noise = offsets.shape[0]
    inv_sqrt_r = 1.0 / math.sqrt(rank)
    # 1. first layer: base response (and, grouped, every member's noise projection)
    if grouped:
        # per member: full-rank E0 (H1 columns) or low-rank A0.T (r columns)
        cols = rank if lowrank else width0
        span = width0 + n_noise * cols
        for i in prange(n_in + 1):
            dst = wide[i * span : (i + 1) * span]
            src = w_start[0] + i * width0 if i < n_in else b_start[0]
            head = theta[src : src + width0]
            for j in range(width0):
                dst[j] = head[j]
            for k in range(n_noise):
                part = dst[width0 + k * cols : width0 + (k + 1) * cols]
                if lowrank:
                    for q in range(rank):
                        # the bias row of A.T is zero: low-rank noise has its own bias
                        part[q] = table[offsets[k] + lr_starts[0, 0] + q * n_in + i] if i < n_in else 0.0
                else:
                    noise = table[offsets[k] + src : offsets[k] + src + width0]
                    for j in range(width0):
                        part[j] = noise[j]
        for r in prange(batch):
            _sparse_layer0(wide, 0, n_in * span, span, indptr, indices, values, rows[r], layer0[r])
    else:
        for r in prange(batch):
            _sparse_layer0(theta, w_start[0], b_start[0], width0, indptr, indices, values, rows[r], layer0[r])
    _transpose_layers(theta, dims, w_start, b_start, t_start, wt_base)
    # 2. every (noise vector, block of rows) task computes its members' per-row losses
    block = (batch + n_blocks - 1) // n_blocks
    for task in prange(n_noise * n_blocks):
        k = task // n_blocks
        r0 = (task % n_blocks) * block
        r1 = min(batch, r0 + block)
        off = offsets[k]
        t = numba.get_thread_id()
        z = scratch[t, 0]
        h = scratch[t, 1]
        o = scratch[t, 2]
        for i in range(n_signs):
            s = sigma if i == 0 else -sigma
            _perturbed_transposed(wt_base, table, off, s, lowrank, rank, inv_sqrt_r, lr_starts,
                                  dims, w_start, b_start, t_start, wscratch[t, i])
        for r in range(r0, r1):
            row = rows[r]
            base = layer0[r]
            # noise response of layer 0 for this row: x @ E0 + e0 (or its low-rank form)
            if lowrank:
                # z = (x @ A.T) @ B / sqrt(r) + e, with x @ A.T from the wide pass
                proj = layer0[r, width0 + k * rank : width0 + (k + 1) * rank]
                ebias = table[off + lr_starts[2, 0] : off + lr_starts[2, 0] + width0]
                for j in range(width0):
                    z[j] = ebias[j]
                for q in range(rank):
                    uq = proj[q] * inv_sqrt_r
                    bq = table[off + lr_starts[1, 0] + q * width0 : off + lr_starts[1, 0] + (q + 1) * width0]
                    for j in range(width0):
                        z[j] += uq * bq[j]
            elif grouped:
                z = layer0[r, (1 + k) * width0 : (2 + k) * width0]
            else:
                _sparse_layer0(table, off + w_start[0], off + b_start[0], width0, indptr, indices, values, row, z)
            for i in range(n_signs):
                s = sigma if i == 0 else -sigma
                for j in range(width0):
                    h[j] = base[j] + s * z[j]
                for l in range(1, n_layers):
                    _relu(h, dims[l])
                    _transposed_layer(wscratch[t, i], t_start[l], dims[l], dims[l + 1], h, o)
                    h, o = o, h
                m = k * n_signs + i
                loss, ok = _row_loss(h[: dims[n_layers]], labels[row], loss_kind)
                row_loss[m, r] = loss
                row_correct[m, r] = ok
        if n_blocks == 1:  # this task holds every row of its members: reduce here
            for i in range(n_signs):
                _reduce_member(row_loss, row_correct, k * n_signs + i, batch, out_loss, out_correct)
    # 3. otherwise a fixed-order reduction over rows, one member per iteration
    if n_blocks > 1:
        for m in prange(n_noise * n_signs):
            _reduce_member(row_loss, row_correct, m, batch, out_loss, out_correct)


@njit(**JIT)
def _reduce_member(row_loss, row_correct, m, batch, out_loss, out_correct):
    """Mean loss and correct count of member m, summed over rows in order (float64)."""
    total = 0.0
    correct = 0
    for r in range(batch):
        total += row_loss[m, r]
        correct += row_correct[m, r]
    out_loss[m] = total / batch
    out_correct[m] = correct


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
def _gather_lowrank(table, offsets, weights, start, n_rows, rank, scale, out):
    """Stack each member's factor F_k (r, n_rows): out[k*r + q] = w_k * scale * F_k[q]."""
    for k in prange(offsets.shape[0]):
        w = weights[k] * scale
        for q in range(rank):
            src = table[offsets[k] + start + q * n_rows : offsets[k] + start + (q + 1) * n_rows]
            dst = out[k * rank + q]
            for i in range(n_rows):
                dst[i] = w * src[i]


# --------------------------------------------------------------------------- public API


#: Widest first layer (population noise vectors x first hidden width) gathered side by side.
GROUPED_MAX_WIDTH = 256


def transposed_starts(layout) -> np.ndarray:
    """Offsets of each layer >= 1 in a member's transposed weights; last entry = total size."""
    starts = np.zeros(layout.n_layers + 1, dtype=np.int64)
    pos = 0
    for l in range(1, layout.n_layers):
        starts[l] = pos
        pos += layout.dims[l + 1] * (layout.dims[l] + 1)
    starts[-1] = pos
    return starts


def scratch_for(dims) -> np.ndarray:
    """Per-thread scratch, shape (max threads, N_SCRATCH, widest layer), float32."""
    width = max(int(d) for d in dims[1:])
    return np.zeros((numba.config.NUMBA_NUM_THREADS, N_SCRATCH, width), dtype=np.float32)


def _check(name: str, array: np.ndarray, dtype, ndim: int) -> None:
    if not isinstance(array, np.ndarray) or array.dtype != dtype or array.ndim != ndim:
        got = f"{array.dtype} with {array.ndim} dims" if isinstance(array, np.ndarray) else type(array).__name__
        raise TypeError(f"{name} must be a {ndim}-d {np.dtype(dtype)} array, got {got}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")


def check_offsets(offsets, width: int, table) -> None:
    """Every noise window ``table[offset : offset + width]`` must lie inside the table."""
    if len(offsets) and (offsets.min() < 0 or offsets.max() + width > len(table)):
        raise IndexError("a noise offset runs past the end of the noise table")


def check_csr(indptr, indices, values, rows) -> None:
    """Validate CSR inputs and the batch's row numbers."""
    _check("indptr", indptr, np.int64, 1)
    _check("indices", indices, np.int32, 1)
    _check("values", values, np.float32, 1)
    _check("rows", rows, np.int64, 1)
    if len(rows) and (rows.min() < 0 or rows.max() >= len(indptr) - 1):
        raise IndexError("rows out of range of the CSR matrix")


def forward_logits(theta, layout, csr, rows, out=None, scratch=None) -> np.ndarray:
    """Logits of the model ``theta`` for CSR rows.

    Parameters
    ----------
    theta : ndarray of shape (P,), float32
    layout : ParamLayout
    csr : tuple (indptr (N+1,) int64, indices (nnz,) int32, values (nnz,) float32)
    rows : ndarray of shape (B,), int64
    out : ndarray of shape (B, C), float32, optional

    Returns
    -------
    ndarray of shape (B, C), float32
    """
    indptr, indices, values = csr
    check_csr(indptr, indices, values, rows)
    _check("theta", theta, np.float32, 1)
    if theta.shape[0] != layout.size:
        raise ValueError(f"theta has {theta.shape[0]} values, layout needs {layout.size}")
    if out is None:
        out = np.empty((len(rows), layout.dims[-1]), dtype=np.float32)
    if scratch is None:
        scratch = scratch_for(layout.dims)
    _forward_rows(theta, layout.dims_array, layout.w_start, layout.b_start, indptr, indices, values, rows, scratch, out)
    return out


def population_losses(
    theta, table, offsets, sigma, antithetic, layout, csr, rows, labels,
    loss="mse", perturbation="full", rank=1, threads=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean batch loss and correct count of each population member.

    Parameters
    ----------
    theta : ndarray of shape (P,), float32
    table : ndarray of shape (T,), float32, the shared noise table
    offsets : ndarray of shape (n_noise,), int64
    sigma : float
    antithetic : bool
        Evaluate each noise vector with both signs (population = 2 * n_noise).
    layout : ParamLayout
    csr : tuple (indptr, indices, values)
    rows : ndarray of shape (B,), int64
    labels : ndarray of shape (N,), int32

    Returns
    -------
    losses : ndarray of shape (n,), float64
    correct : ndarray of shape (n,), int64
    """
    indptr, indices, values = csr
    check_csr(indptr, indices, values, rows)
    _check("theta", theta, np.float32, 1)
    _check("offsets", offsets, np.int64, 1)
    _check("labels", labels, np.int32, 1)
    check_offsets(offsets, layout.noise_size(perturbation, rank), table)
    ws = PopulationWorkspace(layout, len(offsets), antithetic, len(rows), perturbation, rank, threads)
    return ws.losses(theta, table, offsets, sigma, csr, rows, labels, LOSS_CODES[loss])


class PopulationWorkspace:
    """Preallocated buffers for :func:`_population_losses`, reused every generation.

    Created once per run for a given population, batch size and layout (a smaller last
    batch uses the leading rows). Its :meth:`losses` is the hot path: no allocation.
    """

    def __init__(self, layout, n_noise, antithetic, batch, perturbation="full", rank=1, threads=None):
        self.layout = layout
        self.n_signs = 2 if antithetic else 1
        self.n_members = n_noise * self.n_signs
        self.lowrank = perturbation == "lowrank"
        self.rank = int(rank)
        self.dims = layout.dims_array
        self.w_start = layout.w_start
        self.b_start = layout.b_start
        self.t_start = transposed_starts(layout)
        self.lr_starts = np.stack(layout.lowrank_starts(self.rank)) if self.lowrank else np.zeros((3, layout.n_layers), np.int64)
        width0 = layout.dims[1]
        # Gather the first layer side by side (one long vectorised pass per row instead of
        # n short ones): always for low-rank (r columns per member), and for full-rank when
        # the population's first-layer width is small.
        self.grouped = self.lowrank or n_noise * width0 <= GROUPED_MAX_WIDTH
        span = width0 + n_noise * (self.rank if self.lowrank else width0) if self.grouped else width0
        self.wide = np.empty((layout.dims[0] + 1) * span if self.grouped else 1, dtype=np.float32)
        self.layer0 = np.empty((batch, span), dtype=np.float32)
        self.scratch = scratch_for(layout.dims)
        self.wt_base = np.empty(max(int(self.t_start[-1]), 1), dtype=np.float32)
        self.wscratch = np.empty((self.scratch.shape[0], 2, self.wt_base.shape[0]), dtype=np.float32)
        self.row_loss = np.empty((self.n_members, batch), dtype=np.float64)
        self.row_correct = np.empty((self.n_members, batch), dtype=np.int64)
        self.out_loss = np.empty(self.n_members, dtype=np.float64)
        self.out_correct = np.empty(self.n_members, dtype=np.int64)
        n_threads = threads or numba.get_num_threads()
        # Split rows into blocks only when members alone cannot keep every thread busy.
        self.n_blocks = int(min(batch, max(1, -(-4 * n_threads // max(n_noise, 1)))))

    def losses(self, theta, table, offsets, sigma, csr, rows, labels, loss_code):
        batch = len(rows)
        n_blocks = min(self.n_blocks, batch)
        _population_losses(
            theta, table, offsets, np.float32(sigma), self.n_signs, self.lowrank, self.rank, self.lr_starts,
            self.dims, self.w_start, self.b_start, self.t_start, csr[0], csr[1], csr[2], rows, labels, loss_code,
            n_blocks, self.grouped, self.wide, self.layer0[:batch], self.wt_base, self.scratch, self.wscratch,
            self.row_loss[:, :batch], self.row_correct[:, :batch], self.out_loss, self.out_correct,
        )
        return self.out_loss, self.out_correct


def noise_weighted_sum(table, offsets, weights, size, out=None, chunk=2048) -> np.ndarray:
    """``sum_k weights[k] * table[offsets[k] : offsets[k] + size]`` in float64.

    Parameters
    ----------
    table : ndarray of shape (T,), float32
    offsets : ndarray of shape (n_noise,), int64
    weights : ndarray of shape (n_noise,), float64
    size : int
    out : ndarray of shape (size,), float64, optional

    Returns
    -------
    ndarray of shape (size,), float64
    """
    _check("offsets", offsets, np.int64, 1)
    _check("weights", weights, np.float64, 1)
    if len(offsets) != len(weights):
        raise ValueError(f"{len(offsets)} offsets but {len(weights)} weights")
    check_offsets(offsets, size, table)
    if out is None:
        out = np.empty(size, dtype=np.float64)
    _noise_weighted_sum(table, offsets, weights, chunk, out)
    return out


def lowrank_stacks(layout, n_noise: int, rank: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Buffers for :func:`lowrank_weighted_sum`: per layer (n*r, fan_in) and (n*r, fan_out)."""
    return [
        (np.empty((n_noise * rank, fan_in)), np.empty((n_noise * rank, fan_out)))
        for fan_in, fan_out in zip(layout.dims[:-1], layout.dims[1:])
    ]


def lowrank_weighted_sum(table, offsets, weights, layout, rank, out=None, stacks=None) -> np.ndarray:
    """Gradient-shaped sum of low-rank noise: per layer ``sum_k w_k A_k.T @ B_k / sqrt(r)``.

    Never forms an (n, P) block: each layer's factors are stacked, (n*r, fan_in) and
    (n*r, fan_out), and multiplied with one float64 GEMM outside any parallel loop.

    Parameters
    ----------
    table : ndarray of shape (T,), float32
    offsets : ndarray of shape (n_noise,), int64
    weights : ndarray of shape (n_noise,), float64
    layout : ParamLayout
    rank : int
    out : ndarray of shape (P,), float64, optional
    stacks : list from :func:`lowrank_stacks`, optional

    Returns
    -------
    ndarray of shape (P,), float64, in the layout of :class:`ParamLayout`.
    """
    _check("offsets", offsets, np.int64, 1)
    _check("weights", weights, np.float64, 1)
    n = len(offsets)
    check_offsets(offsets, layout.lowrank_size(rank), table)
    if out is None:
        out = np.empty(layout.size, dtype=np.float64)
    if stacks is None:
        stacks = lowrank_stacks(layout, n, rank)
    a_start, b_start, e_start = layout.lowrank_starts(rank)
    ones = np.ones(n)
    scale = 1.0 / math.sqrt(rank)
    for l, (left, right) in enumerate(stacks):
        fan_in, fan_out = left.shape[1], right.shape[1]
        _gather_lowrank(table, offsets, weights, int(a_start[l]), fan_in, rank, scale, left)
        _gather_lowrank(table, offsets, ones, int(b_start[l]), fan_out, rank, 1.0, right)
        w0, b0 = int(layout.w_start[l]), int(layout.b_start[l])
        np.matmul(left.T, right, out=out[w0:b0].reshape(fan_in, fan_out))
        _noise_weighted_sum(table, offsets + int(e_start[l]), weights, 2048, out[b0 : b0 + fan_out])
    return out
