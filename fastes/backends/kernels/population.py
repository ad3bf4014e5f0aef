"""The population's phase kernels (phases 1-3 of :mod:`fastes.backends.kernels`): the first layer
shared by every member, each (noise vector, block of rows) task, the members' mean losses;
each threaded, with a serial variant for small work, and the profile's variants of phase 2
that stop after a part of each task."""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from .common import G_B, G_DIMS, G_LRA, G_LRB, G_LRE, G_W, JIT, Batch, FirstLayer, Noise, Plan, Work, _compiled
from .sparse import _group_rows, _sparse_rows, _task_rows
from .dense import _block_loss, _perturbed_transposed, _tail_block, _transpose_layers


@njit(**JIT)
def _noise_block(table, off, k, r0, r1, batch, plan, proj, zs):
    """``zs[q*H1 : (q+1)*H1]``: the first-layer noise response ``x @ E0 + e0`` of row ``r0 + q``
    for noise vector k at ``table[off:]`` (low rank: ``(x @ A.T) @ B / sqrt(r) + e``), with
    ``x @ E0`` or ``x @ A.T`` from the grouped first-layer pass (``proj``, (n_noise, B, cols))
    or computed here from the noise, by the rows' groups of four (:func:`_group_rows`) when
    the batch has them, else row by row."""
    geo = plan.geo
    width0 = geo[G_DIMS, 1]
    n = r1 - r0
    n_rows = batch.rows.shape[0]
    if plan.lowrank:
        rank = plan.rank
        e0 = np.uint64(off + geo[G_LRE, 0])
        inv_sqrt_r = np.float32(1.0 / math.sqrt(rank))
        for q in range(n):
            o = np.uint64(q * width0)
            at = (k * n_rows + r0 + q) * rank
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
    if plan.grouped:
        for q in range(n):
            src = np.uint64((k * n_rows + r0 + q) * width0)
            o = np.uint64(q * width0)
            for j in range(width0):
                zs[o + np.uint64(j)] = proj[src + np.uint64(j)]
    else:
        if batch.groups[0] > 0:  # tasks start at a group (_task_rows)
            _group_rows(table, off + geo[G_W, 0], width0, batch.groups, batch.group_values, r0 // 4, (r1 + 3) // 4,
                        zs, 0)
        else:
            csr = (batch.indptr, batch.indices, batch.values)
            _sparse_rows(table, off + geo[G_W, 0], width0, csr, batch.rows, r0, r1, zs, 0, width0)
    e0 = np.uint64(off + geo[G_B, 0])
    for q in range(n):
        o = np.uint64(q * width0)
        for j in range(width0):
            u = np.uint64(j)
            zs[o + u] += table[e0 + u]


@njit(**JIT)
def _row_labels(labels, rows, r0, r1, out):
    """``out[q] = labels[rows[r0 + q]]``: a task's labels beside its rows (a kernel of its own: a
    store inlined into a ``prange`` loop through a bundle's field could be dropped)."""
    for q in range(r1 - r0):
        out[q] = labels[rows[r0 + q]]


# --------------------------------------------------------------------------- phase kernels


def _first_layer_impl(theta, noise_t, sigmas, batch_t, plan_t, wide, base, proj, wt_base):
    """Phase 1: ``base[r] = x_r @ W0 + b0`` (B, H1) for every batch row, and (grouped) every
    noise vector's projection ``proj[k, r] = x_r @ E0_k`` (full rank, H1 columns) or
    ``x_r @ A_k.T`` (low rank, r columns), member-major (n_noise, B, cols) so that a task
    reads one contiguous block; and the later layers' transposed base weights ``wt_base``
    (the arrays of :class:`FirstLayer`, which it writes inside its loops). ``noise_t``,
    ``batch_t``, ``plan_t``: plain tuples in the fields' order of :class:`Noise`,
    :class:`Batch`, :class:`Plan`. With ``sigmas`` (P,) float32 (full rank) the noise is ``sigmas * E0_k``;
    ``None`` compiles the kernel without that step.

    The projection runs by blocks of members: each block's noise is gathered side by side
    into a per-thread (d, block columns) matrix that stays in L2 while the batch's rows read
    it by groups of four similar rows (:func:`_row_groups`; row by row when the batch has
    none): one long vectorised inner loop per group, where a pass per member of width H1 or
    r would not vectorise.
    """
    noise, batch, plan = Noise(*noise_t), Batch(*batch_t), Plan(*plan_t)
    table, offsets = noise.table, noise.offsets
    csr = (batch.indptr, batch.indices, batch.values)
    rows, groups, group_values = batch.rows, batch.groups, batch.group_values
    geo = plan.geo
    lowrank = plan.lowrank
    rank = plan.rank
    n_in = geo[G_DIMS, 0]
    width0 = geo[G_DIMS, 1]
    n_noise = offsets.shape[0]
    n_rows = rows.shape[0]
    b0 = np.uint64(geo[G_B, 0])
    for r in prange(n_rows):
        _sparse_rows(theta, geo[G_W, 0], width0, csr, rows, r, r + 1, base, r * width0, width0)
        at = np.uint64(r * width0)
        for j in range(width0):
            base[at + np.uint64(j)] += theta[b0 + np.uint64(j)]
    if plan.grouped:
        cols = rank if lowrank else width0
        per_block = plan.gathered  # noise vectors per gathered block (population_plan)
        n_cb = (n_noise + per_block - 1) // per_block
        # fewer column blocks than threads also split the rows, each part gathering its block
        n_rc = min(max(1, (plan.threads + n_cb - 1) // n_cb), max(1, n_rows // 16))
        chunk = ((n_rows + n_rc - 1) // n_rc + 3) // 4 * 4  # whole groups of rows (_row_groups)
        start = geo[G_LRA, 0] if lowrank else geo[G_W, 0]
        for task in prange(n_cb * n_rc):
            w = wide[numba.get_thread_id()]
            cb = task // n_rc
            r0 = (task % n_rc) * chunk
            r1 = min(n_rows, r0 + chunk)
            k0 = cb * per_block
            k1 = min(n_noise, k0 + per_block)
            width = (k1 - k0) * cols
            # column (k, q) of row i: low rank A_k[q, i] = table[off_k + a0 + q*d + i];
            # full rank E0_k[i, q] = table[off_k + w0 + i*H1 + q]
            if sigmas is not None:  # full rank: a row of E0_k, scaled by its parameters' sigmas
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
                # A_k's rows are contiguous: read each once, in order (one stream to prefetch)
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
                _sparse_rows(w, 0, width, csr, rows, r0, r1, w, tmp, width)
            for k in range(k0, k1):
                for r in range(r0, r1):
                    src = np.uint64(tmp + (r - r0) * width + (k - k0) * cols)
                    dst = np.uint64((k * n_rows + r) * cols)
                    for q in range(cols):
                        proj[dst + np.uint64(q)] = w[src + np.uint64(q)]
    _transpose_layers(theta, geo, wt_base)


# A phase-2 task in three parts, each inlined (a call would incref every array it passes,
# per task): the noise response, one sign's logits, that sign's loss.


@njit(inline="always", **JIT)
def _task_response(src, off, k, r0, r1, t, batch, plan, first, work):
    """Rows ``r0:r1``'s first-layer noise response to noise vector k (at ``src[off:]``) into
    thread t's ``work.response``, and their labels into its ``work.loss_scratch[5]``."""
    _noise_block(src, off, k, r0, r1, batch, plan, first.proj, work.response[t])
    _row_labels(batch.labels, batch.rows, r0, r1, work.loss_scratch[t][5].view(np.int32))


@njit(inline="always", **JIT)
def _task_logits(src, off, s, r0, r1, t, plan, first, work):
    """One sign's member, noise scaled by ``s``: its later layers' weights, then the logits of
    rows ``r0:r1`` into thread t's ``work.logits``."""
    geo = plan.geo
    n_out = geo[G_DIMS, geo.shape[1] - 1]
    w, lt = work.weights[t], work.logits[t]
    _perturbed_transposed(first.wt_base, src, off, s, plan.lowrank, plan.rank, geo, w)
    _tail_block(first.base, r0 * geo[G_DIMS, 1], work.response[t], s, w, geo, r1 - r0, work.hidden[t], lt,
                lt.shape[0] // n_out)


@njit(inline="always", **JIT)
def _task_loss(m, r0, r1, t, batch, plan, work):
    """Member m's loss on rows ``r0:r1`` from thread t's logits; its mean too when this task
    holds every row of the member."""
    geo = plan.geo
    n_out = geo[G_DIMS, geo.shape[1] - 1]
    lt = work.logits[t]
    _block_loss(lt, n_out, lt.shape[0] // n_out, r1 - r0, work.loss_scratch[t], plan.loss, work.row_loss[m], r0)
    if plan.n_blocks == 1:
        _reduce_member(work.row_loss, m, batch.rows.shape[0], work.out_loss)


@njit(inline="always", **JIT)
def _member_task(src, off, sigma, k, r0, r1, batch, plan, first, work):
    """One task of phase 2: noise vector k (at ``src[off:]``, scaled by ``sigma``) on batch
    rows ``r0:r1``, every sign. Inlined into each phase-2 kernel."""
    t = numba.get_thread_id()
    _task_response(src, off, k, r0, r1, t, batch, plan, first, work)
    for i in range(plan.n_signs):
        s = sigma if i == 0 else -sigma
        _task_logits(src, off, s, r0, r1, t, plan, first, work)
        _task_loss(k * plan.n_signs + i, r0, r1, t, batch, plan, work)


@njit(inline="always", **JIT)
def _task_through_response(src, off, sigma, k, r0, r1, batch, plan, first, work):
    """The profile's task that stops after the noise response (:func:`_member_task`'s first part)."""
    _task_response(src, off, k, r0, r1, numba.get_thread_id(), batch, plan, first, work)


@njit(inline="always", **JIT)
def _task_through_logits(src, off, sigma, k, r0, r1, batch, plan, first, work):
    """The profile's task that stops after each sign's logits (:func:`_member_task` without the loss)."""
    t = numba.get_thread_id()
    _task_response(src, off, k, r0, r1, t, batch, plan, first, work)
    for i in range(plan.n_signs):
        _task_logits(src, off, sigma if i == 0 else -sigma, r0, r1, t, plan, first, work)


def _member_losses_impl(noise_t, sigmas, batch_t, plan_t, first_t, work_t):
    """Phase 2: every member's loss on every batch row, ``work.row_loss`` (n, B) float64.

    Task = (noise vector k, block of rows). Member ``m = k * n_signs + i`` uses sign ``+1``
    for ``i = 0`` and ``-1`` for ``i = 1``: antithetic pairs share one noise read and one
    first-layer noise response. Each sign's logits collect in a column per row and the loss
    runs over the block. With one block per task, each member's mean is reduced here too.

    With ``sigmas`` (P,) float32, a standard deviation per parameter, each task first writes
    its noise vector times ``sigmas`` into the thread's ``work.scaled`` row (from the first
    bias on when the grouped first layer has already scaled ``E0``), then runs the task on
    it with signs +-1; ``None`` compiles the kernel without that step. The ``_t`` arguments:
    plain tuples in the fields' order of :class:`Noise`, :class:`Batch`, :class:`Plan`,
    :class:`FirstLayer`, :class:`Work`.
    """
    noise, batch, plan = Noise(*noise_t), Batch(*batch_t), Plan(*plan_t)
    first, work = FirstLayer(*first_t), Work(*work_t)
    table, offsets, sigma = noise.table, noise.offsets, noise.sigma
    scaled = work.scaled
    n_blocks = plan.n_blocks
    n_rows = batch.rows.shape[0]
    block = _task_rows(n_rows, n_blocks)
    start = plan.geo[G_B, 0] if plan.grouped else 0
    for task in prange(offsets.shape[0] * n_blocks):
        k = task // n_blocks
        r0 = (task % n_blocks) * block
        r1 = max(r0, min(n_rows, r0 + block))
        if sigmas is None:
            _member_task(table, offsets[k], sigma, k, r0, r1, batch, plan, first, work)
        else:
            window = scaled[numba.get_thread_id()]
            _scale_window(table, offsets[k], sigmas, start, window)
            _member_task(window, 0, np.float32(1.0), k, r0, r1, batch, plan, first, work)


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


_first_layer, _first_layer_serial = _compiled(_first_layer_impl)
_member_losses, _member_losses_serial = _compiled(_member_losses_impl)
_reduce_members, _reduce_members_serial = _compiled(_reduce_members_impl)
#: Phase 2 stopped after each task's noise response, and after its logits: the profile
#: (``fastes bench --profile``) times each and splits phase 2's time by the differences.
_member_responses, _member_responses_serial = _compiled(_member_losses_impl, "_through_response",
                                                       _member_task=_task_through_response)
_member_logits, _member_logits_serial = _compiled(_member_losses_impl, "_through_logits",
                                                 _member_task=_task_through_logits)
