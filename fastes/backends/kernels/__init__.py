"""Numba kernels: the whole population's forward passes and losses, and the noise sums.

Private ``_``-prefixed kernels do the work over preallocated arrays and allocate nothing;
:mod:`fastes.backends.workspace` holds the buffers, checks shapes and dtypes and calls them:
every call goes through it. Every kernel has a NumPy twin in :mod:`fastes.backends.reference`
that the tests compare it against. This package re-exports them all, from one module per
concern: ``common`` (fastmath, codes, the rows of ``geo``, block sizes, the bundles the
phase kernels take), ``sparse`` (CSR rows and row groups), ``dense`` (later layers, loss,
forward pass), ``population`` (the phase kernels below) and ``noise_sums`` (the gradient's
sums over the noise).

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
instead of ``u_k``, and phase 2 first scales each task's noise window into a per-thread
buffer (P multiplies, against the task's B x nnz x H1 of the first layer), then runs the
same task (:func:`_member_task`) on it with signs +-1. Given ``sigmas=None`` the kernels are
compiled without that step.

Inputs reach the kernels as CSR rows (``indptr``, ``indices``, ``values``) plus the batch's
row numbers, and as the row groups' pixel unions: MNIST is mostly zeros and the first layer
holds most of the work. The phase kernels take their arrays in a few bundles
(:class:`Plan`, :class:`Noise`, :class:`Batch`, :class:`FirstLayer`, :class:`Work`), so a
call unboxes few arguments.

Speed notes: inner loops index flat arrays with ``uint64`` offsets (Numba adds no
negative-index wraparound branch for unsigned indices, so LLVM vectorises them, and no
array view is created per row, whose reference counting cost more than the arithmetic);
helpers take a block of rows per call (a call increfs its array arguments); later layers
compute four rows x four outputs per pass so that every loaded weight and activation feeds
four FMAs; the loss runs over a block of rows with a polynomial exp/log that vectorises
(``math.exp`` is a scalar libm call per logit). The unperturbed forward pass
(:func:`_forward_rows`) and the CSR builder run on one thread.

Determinism: every ``prange`` iteration writes only its own rows of the output, and sums
over rows or members run in a fixed order afterwards, so results are identical for any
thread count.
"""

from __future__ import annotations

import os

import numba

from .common import OMP_SPIN_COUNT

# Idle kernel threads spin less (OMP_SPIN_COUNT) so that other threads, the low-rank
# gradient's GEMM ones, get their cores; libgomp reads it when it loads; a user's value wins.
os.environ.setdefault("GOMP_SPINCOUNT", str(OMP_SPIN_COUNT))

# numba.get_thread_id() (the kernels' per-thread scratch) needs the thread pool started, which
# loading cached machine code does not do: start it when the kernels are imported.
numba.get_num_threads()

# Re-exported: the rest of the package (and the tests) use them as fastes.backends.kernels.<name>.
from .common import (  # noqa: E402  (after the thread pool starts)
    FASTMATH,
    JIT,
    LOSS_MSE,
    LOSS_CROSS_ENTROPY,
    LOSS_ZERO_ONE,
    LOSS_CODES,
    ACT_RELU,
    ACT_TANH,
    ACT_SIGN,
    ACT_STEP,
    ACTIVATION_CODES,
    GEO_ROWS,
    G_ACT,
    G_DIMS,
    G_W,
    G_B,
    G_T,
    G_LRA,
    G_LRB,
    G_LRE,
    GROUPED_MAX_WIDTH,
    GATHER_COLUMNS,
    FORWARD_BLOCK,
    ROW_GROUP,
    FIRST_LAYER_PARALLEL,
    GROUP_MIN_ROWS,
    CHAIN_ROWS,
    SERIAL_MAX_MEMBER_ROWS,
    Batch,
    FirstLayer,
    Noise,
    Plan,
    Work,
    _compiled,
)
from .sparse import (  # noqa: E402
    _fill_csr,
    _group_rows,
    _popcount,
    _row_groups,
    _row_nonzeros,
    _sparse_rows,
    _task_rows,
)
from .dense import (  # noqa: E402
    _LN2_HI,
    _LN2_LO,
    _LOG2E,
    _SQRT2,
    _activate,
    _base_logits,
    _block_logits,
    _block_loss,
    _dense_rows,
    _forward_rows,
    _perturbed_transposed,
    _row_losses,
    _row_losses_impl,
    _tail_block,
    _transpose_layers,
)
from .population import (  # noqa: E402
    _first_layer,
    _first_layer_impl,
    _first_layer_serial,
    _member_logits,
    _member_logits_serial,
    _member_losses,
    _member_losses_impl,
    _member_losses_serial,
    _member_responses,
    _member_responses_serial,
    _member_task,
    _noise_block,
    _reduce_member,
    _reduce_members,
    _reduce_members_impl,
    _reduce_members_serial,
    _row_labels,
    _scale_window,
    _task_logits,
    _task_loss,
    _task_response,
    _task_through_logits,
    _task_through_response,
)
from .noise_sums import (  # noqa: E402
    _gather_lowrank,
    _noise_sums,
    _offsets_fit,
)
