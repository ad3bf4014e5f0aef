"""Settings every kernel module shares: fastmath, the loss codes, the rows of ``geo``, the
tunable block sizes, the bundles the phase kernels take their arrays in, and the maker of a
kernel's threaded and serial variants."""

from __future__ import annotations

import types
from typing import NamedTuple

import numpy as np
from numba import njit

from ...layout import ACTIVATIONS

#: The one place fastmath is set: reassociation and contraction let LLVM vectorise the
#: inner sums; ``nnan``/``ninf`` stay off so NaN and infinity are still detected.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
JIT = dict(cache=True, fastmath=FASTMATH)

LOSS_MSE = 0
LOSS_CROSS_ENTROPY = 1
LOSS_ZERO_ONE = 2
LOSS_CODES = {"mse": LOSS_MSE, "cross-entropy": LOSS_CROSS_ENTROPY, "zero-one": LOSS_ZERO_ONE}

#: Activation codes, in the order of :data:`fastes.layout.ACTIVATIONS`.
ACTIVATION_CODES = dict(zip(ACTIVATIONS, range(len(ACTIVATIONS))))
ACT_RELU, ACT_TANH, ACT_SIGN, ACT_STEP = (ACTIVATION_CODES[name] for name in ("relu", "tanh", "sign", "step"))

# Rows of ``geo``: per layer l (columns), its widths and offsets, and the activation after it.
GEO_ROWS = 8
G_DIMS, G_W, G_B, G_T, G_LRA, G_LRB, G_LRE, G_ACT = range(GEO_ROWS)


#: Widest first layer (population noise vectors x first hidden width) gathered side by side.
GROUPED_MAX_WIDTH = 256
#: Noise columns gathered per block of the grouped first layer: (784 x 128) float32 stays
#: in L2 while every row of the batch reads it.
GATHER_COLUMNS = 128


#: Rows per task of the unperturbed forward pass.
FORWARD_BLOCK = 64
#: Rows that go through the later layers together (:func:`_tail_block`); a block's logits
#: buffer has this many spare columns for a last, partial group.
ROW_GROUP = 4
#: Batch rows x first-layer columns from which the first layer runs on every thread.
FIRST_LAYER_PARALLEL = 4096
#: Batch rows from which sparse products run by groups of four similar rows
#: (:func:`_row_groups`): below it, chaining and grouping cost more than they share.
GROUP_MIN_ROWS = 128
#: Rows chained together (:func:`_row_groups`): the chain compares every pair of its rows,
#: so a larger batch is chained by windows of this many (a multiple of four: no group
#: straddles two windows).
CHAIN_ROWS = 256
#: libgomp's spin rounds before an idle kernel thread sleeps (``GOMP_SPINCOUNT``, set in
#: :mod:`fastes.backends.kernels`): short enough that the low-rank gradient's GEMM threads
#: get their cores back, long enough to cover the gaps between a generation's kernels.
OMP_SPIN_COUNT = 20000
#: Populations x batch rows up to which a generation runs on one thread: below it, a
#: fork/join per phase costs more than the arithmetic it would share out.
SERIAL_MAX_MEMBER_ROWS = 4096


# --------------------------------------------------------------------------- bundles
#
# The phase kernels take their arrays in these few bundles. Python passes each as a plain
# tuple in its fields' order (Numba's dispatcher types a NamedTuple argument in Python, some
# microseconds per call) and the kernel names it on entry, ``batch = Batch(*batch_t)``. Inside
# a ``prange`` loop Numba's parfor pass can drop a store made straight into an array taken
# from a bundle: there a kernel only reads bundles or passes them to another kernel, and
# stores only into arrays it was given as arguments of their own.


class Plan(NamedTuple):
    """How a population workspace runs its kernels, fixed when it is built
    (:func:`fastes.backends.workspace.population_plan`) but for the loss."""

    geo: np.ndarray  #: int64 (GEO_ROWS, L + 1): the layers' widths, offsets and activations, rows ``G_*``
    n_signs: int  #: 2 for antithetic pairs (member ``k * n_signs + i`` has sign ``(-1)**i``), else 1
    lowrank: bool  #: noise as low-rank factors
    rank: int
    loss: int  #: one of :data:`LOSS_CODES`' values
    n_blocks: int  #: blocks of rows each member's rows are split into (one task each)
    grouped: bool  #: the first layer gathers every noise vector's projection (phase 1)
    threads: int
    gathered: int  #: noise vectors per gathered block of the grouped first layer


class Noise(NamedTuple):
    """The population's noise: member k's vector at ``table[offsets[k]:]``, times ``sigma``."""

    table: np.ndarray  #: float32 (T,)
    offsets: np.ndarray  #: int64 (n_noise,)
    sigma: np.float32  #: 1 where a standard deviation per parameter scales each window instead


class Batch(NamedTuple):
    """A batch as the kernels read it: the split's CSR rows and labels, the batch's row
    numbers in the order it is evaluated, and its groups of four rows (:func:`_row_groups`;
    ``groups[0] == 0`` where the rows go one by one)."""

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    rows: np.ndarray
    groups: np.ndarray
    group_values: np.ndarray
    labels: np.ndarray


class FirstLayer(NamedTuple):
    """What phase 1 leaves for phase 2: the centre's first layer ``x @ W0 + b0`` per row, the
    grouped noise projections, and the later layers' weights transposed."""

    base: np.ndarray
    proj: np.ndarray
    wt_base: np.ndarray


class Work(NamedTuple):
    """Phase 2's buffers: per-thread scratch rows (indexed by ``numba.get_thread_id()``) and
    the losses it writes."""

    weights: np.ndarray  #: a member's transposed later layers
    response: np.ndarray  #: a block of rows' first-layer noise response
    hidden: np.ndarray  #: two blocks of activations
    logits: np.ndarray  #: a block's logits, a column per row
    loss_scratch: np.ndarray  #: (6, rows) for the loss; row 5 holds the rows' labels
    scaled: np.ndarray  #: a noise vector times the standard deviations (P values)
    row_loss: np.ndarray  #: float64 (members, rows)
    out_loss: np.ndarray  #: float64 (members,)


def _compiled(impl, suffix="", **replaced):
    """A phase kernel twice: threaded (``prange``) and serial, for work too small to pay a
    fork/join. ``replaced`` names functions the kernel calls to swap for others, giving a
    variant under the name ``impl.__name__ + suffix`` (the profile's kernels that stop
    early are the production kernel with a shorter task).

    Each is a copy of the function under its own name: Numba's cache files are named by
    the function, not by its ``parallel`` flag or globals, so two dispatchers of one
    function would load each other's machine code."""
    scope = {**impl.__globals__, **replaced} if replaced else impl.__globals__

    def copy(name):
        fn = types.FunctionType(impl.__code__, scope, name)
        fn.__qualname__ = name
        fn.__doc__ = impl.__doc__
        return fn

    name = impl.__name__ + suffix
    return njit(parallel=True, **JIT)(copy(name) if suffix else impl), njit(**JIT)(copy(name + "_serial"))
