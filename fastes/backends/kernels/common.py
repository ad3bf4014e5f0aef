"""Settings every kernel module shares: fastmath, the loss codes, the indices of ``geo`` and
``flags``, the tunable block sizes, and the threaded/serial twin maker."""

from __future__ import annotations

import types

from numba import njit

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
F_SIGNS, F_LOWRANK, F_RANK, F_LOSS, F_BLOCKS, F_GROUPED, F_PHASES, F_THREADS, F_SCALED, F_GATHERED = range(10)
#: ``flags[F_PHASES]``: how much of a member's work to do (the profile times each prefix).
PHASE_NOISE, PHASE_LAYERS, PHASE_LOSS = 1, 2, 3


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
#: libgomp's spin rounds before an idle kernel thread sleeps (``GOMP_SPINCOUNT``, set in
#: :mod:`fastes.backends.kernels`): about 1.4 ms of spinning after a kernel here, where the default
#: 300,000 spun 5-7 ms. The seed preset's 100 epochs took the same wall time with either
#: (paired runs, ratio 1.01), and the low-rank gradient's GEMM blocks got their second core
#: back.
OMP_SPIN_COUNT = 20000
#: Populations x batch rows up to which a generation runs on one thread: below it, a
#: fork/join per phase costs more than the arithmetic it would share out.
SERIAL_MAX_MEMBER_ROWS = 4096


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
