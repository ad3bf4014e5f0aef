"""The later layers and the loss of a block of rows: each member's hidden layers
(four rows x four outputs per pass), the vectorised exp/log of the loss, the layers'
transposed weights, and the unperturbed model's forward pass."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .common import (ACT_RELU, ACT_SIGN, ACT_TANH, G_ACT, G_B, G_DIMS, G_LRA, G_LRB, G_LRE, G_T, G_W, JIT, LOSS_MSE,
                     LOSS_ZERO_ONE, ROW_GROUP)
from .sparse import _sparse_rows


@njit(**JIT)
def _tail_block(base, base_at, zs, s, wt, geo, n, hs, lt, stride):
    """Logits of ``n`` rows of one member into ``lt[c * stride + q]``: the first layer's
    ``base + s * z`` (rows of H1 at ``base[base_at:]`` and ``zs``), then the activation
    (:func:`_activate`) and the later layers (:func:`_dense_rows`), whose weights ``wt`` are
    stored transposed. Rows are processed in groups of four; a last partial group repeats
    its last row into spare columns of ``lt`` (``stride >= n + 3``). ``hs`` holds two blocks
    of activations."""
    n_layers = geo.shape[1] - 1
    width0 = geo[G_DIMS, 1]
    n4 = (n + ROW_GROUP - 1) // ROW_GROUP * ROW_GROUP
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
    act = geo[G_ACT, 0]
    for q in range(n4):
        b = np.uint64(base_at + min(q, n - 1) * width0)
        z = np.uint64(min(q, n - 1) * width0)
        o = np.uint64(q * width0)
        if act == ACT_RELU:  # fused: the default network's hottest pass, one store instead of two
            for j in range(width0):
                u = np.uint64(j)
                v = base[b + u] + s * zs[z + u]
                x[o + u] = np.float32(0.0) if v < np.float32(0.0) else v
        else:
            for j in range(width0):
                u = np.uint64(j)
                x[o + u] = base[b + u] + s * zs[z + u]
    if act != ACT_RELU:
        _activate(x, n4 * width0, act)
    for l in range(1, n_layers):
        fan_in = geo[G_DIMS, l]
        fan_out = geo[G_DIMS, l + 1]
        if l == n_layers - 1:
            _dense_rows(wt, geo[G_T, l], fan_in, fan_out, x, n4, lt, 1, stride)
        else:
            _dense_rows(wt, geo[G_T, l], fan_in, fan_out, x, n4, y, fan_out, 1)
            _activate(y, n4 * fan_out, geo[G_ACT, l])
            x, y = y, x


@njit(inline="always", **JIT)
def _activate(x, n, code):
    """``x[:n]`` through the hidden activation ``code`` (``ACT_*``), in place; NaN stays NaN,
    as in the reference, so that a diverging model is still caught. One loop per activation,
    the branch outside it; each a select, not a conditional store nor max(): LLVM vectorises
    only that form."""
    zero = np.float32(0.0)
    one = np.float32(1.0)
    if code == ACT_RELU:
        for i in range(n):
            v = x[i]
            x[i] = zero if v < zero else v
    elif code == ACT_TANH:
        for i in range(n):
            x[i] = np.tanh(x[i])
    elif code == ACT_SIGN:
        for i in range(n):
            v = x[i]
            x[i] = (one if v >= zero else -one) if v == v else v
    else:
        for i in range(n):
            v = x[i]
            x[i] = (one if v >= zero else zero) if v == v else v


@njit(**JIT)
def _dense_rows(wt, t0, fan_in, fan_out, h, n, out, row_step, col_step):
    """``out[q*row_step + c*col_step] = h[q*fan_in : (q+1)*fan_in] @ W[:, c] + b[c]`` for
    ``q < n`` (a multiple of 4), W stored transposed ((fan_out, fan_in) at ``wt[t0:]``, its
    bias right after).

    Four rows x four outputs per pass of the inner loop (then four rows x one output): each
    loaded weight feeds four FMAs and each activation four, and the sixteen sums stay in
    registers, faster than a dot product per output or two rows x four outputs. It is a
    function of its own, called once per layer and block: in a larger function the sixteen
    sums spilled to the stack.
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
    if loss_kind == LOSS_ZERO_ONE:
        _block_errors(lt, n_out, st, n, vs, out, o)
        return
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


@njit(inline="always", **JIT)
def _block_errors(lt, n_out, st, n, vs, out, o):
    """:func:`_block_loss`'s zero-one loss: 1 where a row's first largest logit is not its
    label, else 0; NaN where a logit is NaN or infinite (``v - v``), as the other losses
    give, so that divergence is still caught."""
    acc = vs[1]
    top = vs[0]
    best = vs[2].view(np.int32)
    lab = vs[5].view(np.int32)
    for q in range(n):
        v = lt[q]
        top[q] = v
        best[q] = 0
        acc[q] = v - v
    for c in range(1, n_out):
        at = np.uint64(c) * st
        for q in range(n):
            v = lt[at + np.uint64(q)]
            acc[q] += v - v
            better = v > top[q]
            top[q] = v if better else top[q]
            best[q] = np.int32(c) if better else best[q]
    for q in range(n):
        out[o + np.uint64(q)] = acc[q] + (np.float32(0.0) if best[q] == lab[q] else np.float32(1.0))


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


@njit(**JIT)
def _forward_rows(theta, geo, csr, rows, wt_base, bsc, zeros, hsc, lsc, out):
    """Logits (B, C) of the unperturbed model on ``rows`` of ``csr`` (indptr, indices,
    values), ``out`` flat, by blocks of ``zeros.shape[0] // H1`` rows (``wt_base`` from
    :func:`_transpose_layers`).

    One thread: a batch's metrics are too little work to share out, a test-set evaluation
    takes milliseconds, and one compiled variant instead of two shortens a first run."""
    width0 = geo[G_DIMS, 1]
    batch = rows.shape[0]
    block = zeros.shape[0] // width0
    b0 = np.uint64(geo[G_B, 0])
    for blk in range((batch + block - 1) // block):
        t = 0  # one thread: its scratch slot (see the note on numba.get_thread_id in fastes.backends.kernels)
        r0 = blk * block
        r1 = min(batch, r0 + block)
        bs = bsc[t]
        lt = lsc[t]
        _sparse_rows(theta, geo[G_W, 0], width0, csr, rows, r0, r1, bs, 0, width0)
        for q in range(r1 - r0):
            at = np.uint64(q * width0)
            for j in range(width0):
                bs[at + np.uint64(j)] += theta[b0 + np.uint64(j)]
        _block_logits(bs, 0, geo, r0, r1, wt_base, zeros, hsc[t], lt, out)


@njit(**JIT)
def _base_logits(base, geo, n, wt_base, zeros, hs, lt, out):
    """Logits (n, C) of the unperturbed model, ``out`` flat, from its first layer ``base``
    (n, H1) as phase 1 left it (``x @ W0 + b0``, the batch's rows in the generation's order)
    and ``wt_base``: the model the population is drawn around, scored on its batch with no
    second sparse pass. One thread, by blocks of ``zeros.shape[0] // H1`` rows."""
    width0 = geo[G_DIMS, 1]
    block = zeros.shape[0] // width0
    for r0 in range(0, n, block):
        _block_logits(base, r0 * width0, geo, r0, min(n, r0 + block), wt_base, zeros, hs, lt, out)


@njit(**JIT)
def _block_logits(first, first_at, geo, r0, r1, wt_base, zeros, hs, lt, out):
    """Rows ``r0:r1`` of the unperturbed model's logits, ``out`` flat (B, C), from their first
    layer ``x @ W0 + b0`` at ``first[first_at:]``: the later layers (:func:`_tail_block`, no
    noise) into ``lt``, then copied row-major. Shared by :func:`_forward_rows` and
    :func:`_base_logits`."""
    n_out = geo[G_DIMS, geo.shape[1] - 1]
    stride = lt.shape[0] // n_out
    _tail_block(first, first_at, zeros, np.float32(0.0), wt_base, geo, r1 - r0, hs, lt, stride)
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
        if loss_kind == LOSS_ZERO_ONE:
            bad = 0.0
            for c in range(n_out):
                bad += np.float64(out[c]) - np.float64(out[c])  # NaN for a NaN or infinite logit
            loss = bad + (0.0 if best == label else 1.0)
        elif loss_kind == LOSS_MSE:
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


_row_losses = njit(**JIT)(_row_losses_impl)
