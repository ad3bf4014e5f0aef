"""The population's phase kernels (phases 1-3 of :mod:`fastes.backends.kernels`): the first layer
shared by every member, each (noise vector, block of rows) task, the members' mean losses;
each threaded, with a serial twin for small work."""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from .common import (
    F_BLOCKS, F_GATHERED, F_GROUPED, F_LOSS, F_LOWRANK, F_PHASES, F_RANK, F_SCALED, F_SIGNS, F_THREADS,
    G_B, G_DIMS, G_LRA, G_LRB, G_LRE, G_W, JIT, PHASE_LAYERS, PHASE_LOSS, _compiled,
)
from .sparse import _group_rows, _sparse_rows, _task_rows
from .dense import _block_loss, _perturbed_transposed, _tail_block, _transpose_layers


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
        per_block = flags[F_GATHERED]  # noise vectors per gathered block (population_plan)
        n_cb = (n_noise + per_block - 1) // per_block
        # fewer column blocks than threads (small populations) also split the rows, each
        # part gathering its block again
        n_rc = min(max(1, (flags[F_THREADS] + n_cb - 1) // n_cb), max(1, batch // 16))
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


_first_layer, _first_layer_serial = _compiled(_first_layer_impl)
_member_losses, _member_losses_serial = _compiled(_member_losses_impl)
_member_losses_scaled, _member_losses_scaled_serial = _compiled(_member_losses_scaled_impl)
_reduce_members, _reduce_members_serial = _compiled(_reduce_members_impl)
