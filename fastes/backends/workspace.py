"""The kernels' buffers and validating entry points: plans of what a generation allocates,
the workspaces that allocate it once per run, and public functions that check their inputs
and call the compiled kernels of :mod:`fastes.backends.kernels`.

:func:`population_plan` and :func:`forward_plan` say once what each workspace allocates;
the workspaces allocate from them and :mod:`fastes.memory` adds them up before a run starts.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from .kernels import (
    ACTIVATION_CODES, FORWARD_BLOCK, GEO_ROWS, G_ACT, G_DIMS, G_B, G_LRA, G_LRB, G_LRE, G_T, G_W, GATHER_COLUMNS,
    GROUPED_MAX_WIDTH, LOSS_CODES, LOSS_MSE, ROW_GROUP, SERIAL_MAX_MEMBER_ROWS, FIRST_LAYER_PARALLEL, GROUP_MIN_ROWS,
    Batch, FirstLayer, Noise, Plan, Work,
    _base_logits, _fill_csr, _first_layer, _first_layer_serial, _forward_rows, _gather_lowrank, _member_logits,
    _member_logits_serial, _member_losses, _member_losses_serial, _member_responses, _member_responses_serial,
    _noise_sums, _offsets_fit, _reduce_members, _reduce_members_serial, _row_groups, _row_losses, _row_nonzeros, _task_rows,
    _transpose_layers,
)

#: Values per chunk of the noise sums (:func:`noise_weighted_sum`, :func:`noise_moments`):
#: each thread's share of the accumulators, small enough to stay in cache.
NOISE_CHUNK = 2048


def dense_to_csr(x: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR form of ``x * scale`` for a dense (N, d) array (uint8 pixels or floats).

    Returns
    -------
    indptr : ndarray of shape (N + 1,), int64
    indices : ndarray of shape (nnz,), int32
    values : ndarray of shape (nnz,), float32
    """
    x = np.ascontiguousarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-d (rows, features), got shape {x.shape}")
    if x.dtype not in (np.uint8, np.float32):
        x = x.astype(np.float32)
    counts = np.empty(x.shape[0], dtype=np.int64)
    _row_nonzeros(x, counts)
    indptr = np.zeros(x.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = np.empty(indptr[-1], dtype=np.int32)
    values = np.empty(indptr[-1], dtype=np.float32)
    _fill_csr(x, np.float32(scale), indptr, indices, values)
    return indptr, indices, values


def transposed_starts(layout) -> np.ndarray:
    """Offsets of each layer >= 1 in a member's transposed weights; last entry = total size."""
    starts = np.zeros(layout.n_layers + 1, dtype=np.int64)
    pos = 0
    for l in range(1, layout.n_layers):
        starts[l] = pos
        pos += layout.dims[l + 1] * (layout.dims[l] + 1)
    starts[-1] = pos
    return starts


def geometry(layout, rank: int = 1) -> np.ndarray:
    """The kernels' view of a layout, int64 (GEO_ROWS, n_layers + 1): rows ``G_DIMS`` (widths),
    ``G_W``/``G_B`` (weight and bias offsets), ``G_T`` (offsets in the transposed later
    layers, last column their total), ``G_LRA``/``G_LRB``/``G_LRE`` (low-rank factor
    offsets for ``rank``) and ``G_ACT`` (the activation code after each hidden layer)."""
    n = layout.n_layers
    geo = np.zeros((GEO_ROWS, n + 1), dtype=np.int64)
    geo[G_ACT, : n - 1] = ACTIVATION_CODES[layout.activation]
    geo[G_DIMS] = layout.dims
    geo[G_W, :n] = layout.w_start
    geo[G_B, :n] = layout.b_start
    geo[G_T] = transposed_starts(layout)
    a, b, e = layout.lowrank_starts(rank)
    geo[G_LRA, :n], geo[G_LRB, :n], geo[G_LRE, :n] = a, b, e
    return geo


def _check(name: str, array: np.ndarray, dtype, ndim: int) -> None:
    if not isinstance(array, np.ndarray) or array.dtype != dtype or array.ndim != ndim:
        got = f"{array.dtype} with {array.ndim} dims" if isinstance(array, np.ndarray) else type(array).__name__
        raise TypeError(f"{name} must be a {ndim}-d {np.dtype(dtype)} array, got {got}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")


def check_offsets(offsets, width: int, table) -> None:
    """Every noise window ``table[offset : offset + width]`` must lie inside the table."""
    if not _offsets_fit(offsets, width, len(table)):
        raise IndexError("a noise offset runs past the end of the noise table")


def check_csr(indptr, indices, values, rows) -> None:
    """Validate CSR inputs and the batch's row numbers."""
    _check("indptr", indptr, np.int64, 1)
    _check("indices", indices, np.int32, 1)
    _check("values", values, np.float32, 1)
    _check("rows", rows, np.int64, 1)
    if len(rows) and (rows.min() < 0 or rows.max() >= len(indptr) - 1):
        raise IndexError("rows out of range of the CSR matrix")


def population_plan(layout, n_noise, antithetic, batch, perturbation="full", rank=1, threads=None, serial=None,
                    scaled=False) -> dict:
    """How a :class:`PopulationWorkspace` runs and what it allocates: ``grouped``, ``serial``,
    ``serial_first_layer``, ``gathered_members``, ``n_blocks``, ``row_groups`` and ``buffers``
    (name -> (shape, dtype)). The one place both are derived:
    the workspace allocates these buffers and :mod:`fastes.memory` adds them up before a
    run starts. ``scaled``: a standard deviation per parameter (full rank only), which needs
    a thread's scaled noise vector (P values)."""
    n_noise, batch, rank = int(n_noise), int(batch), int(rank)
    members = n_noise * (2 if antithetic else 1)
    lowrank = perturbation == "lowrank"
    dims = layout.dims
    width0 = dims[1]
    # Gather the first layer side by side (one long vectorised pass per row, not n short ones)
    grouped = lowrank or n_noise * width0 <= GROUPED_MAX_WIDTH
    cols = rank if lowrank else width0
    # at least two gathered blocks, so that two threads share a small population's gathering
    gathered_members = max(1, min(GATHER_COLUMNS // cols, (n_noise + 1) // 2)) if grouped else 1
    gathered = gathered_members * cols if grouped else 0
    n_threads = threads or numba.get_num_threads()
    if serial is None:
        serial = n_threads == 1 or members * batch <= SERIAL_MAX_MEMBER_ROWS
    # Split rows into blocks only when members alone cannot keep every thread busy.
    n_blocks = 1 if serial else int(min(batch, max(1, -(-4 * n_threads // max(n_noise, 1)))))
    block = int(_task_rows(batch, n_blocks))  # whole groups of four rows
    n_blocks = -(-batch // block)
    slots = numba.config.NUMBA_NUM_THREADS
    transposed = max(int(transposed_starts(layout)[-1]), 1)
    f32, f64 = np.float32, np.float64
    buffers = {
        "wide": ((slots, (dims[0] + batch + 3) * gathered), f32),  # + a short last group's spare rows
        "base": ((batch * width0,), f32),
        "proj": ((n_noise * batch * cols if grouped else 1,), f32),
        "wt_base": ((transposed,), f32),
        "wscratch": ((slots, transposed), f32),
        "zscratch": ((slots, block * width0), f32),
        "hscratch": ((slots, 2 * (block + ROW_GROUP - 1) * max(dims[1:])), f32),
        "lscratch": ((slots, dims[-1] * (block + ROW_GROUP)), f32),
        "vscratch": ((slots, 6, block + 1), f32),
        "row_loss": ((members * batch,), f64),  # (members, rows) of the current batch, C-ordered
        "out_loss": ((members,), f64),
        # the centre's batch metrics from phase 1's first layer (PopulationWorkspace.centre_metrics)
        "centre_zeros": ((block * width0,), f32),
        "centre_logits": ((batch * dims[-1],), f32),
        "centre_loss": ((batch,), f64),
        "centre_correct": ((batch,), np.int64),
        "sscratch": ((slots, layout.size) if scaled else (1, 1), f32),
    }
    # Row groups depend on the batch alone, so any split of the population sums the same terms
    n_groups = -(-batch // 4) if batch >= GROUP_MIN_ROWS else 0
    d = dims[0]
    buffers.update({
        "bits": ((batch if n_groups else 1, -(-d // 64)), np.uint64),
        "chain": ((batch if n_groups else 1,), np.int64),
        "mark": ((d if n_groups else 1,), np.int64),
        "ordered": ((batch if n_groups else 1,), np.int64),
        "groups": ((2 + n_groups + n_groups * (d + 3),), np.int64),
        "group_values": ((4 * n_groups * (d + 3),), f32),
    })
    # the first layer (sparse rows x every gathered column) is worth both threads before phase 2 is
    serial_first_layer = n_threads == 1 or batch * (width0 + (n_noise * cols if grouped else 0)) < FIRST_LAYER_PARALLEL
    return {"grouped": bool(grouped), "serial": bool(serial), "serial_first_layer": bool(serial_first_layer),
            "gathered_members": gathered_members, "n_blocks": n_blocks, "row_groups": n_groups > 0, "buffers": buffers}


def plan_bytes(plan: dict) -> int:
    """Bytes of a plan's buffers (:func:`population_plan`, :func:`forward_plan`)."""
    return sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in plan["buffers"].values())


def forward_plan(layout, batch: int) -> dict:
    """What a :class:`ForwardWorkspace` allocates: ``buffers`` (name -> (shape, dtype)).
    The forward pass runs on one thread, so its scratch has one slot."""
    slots = 1
    width0, n_out = layout.dims[1], layout.dims[-1]
    return {"buffers": {
        "wt_base": ((max(int(transposed_starts(layout)[-1]), 1),), np.float32),
        "bscratch": ((slots, FORWARD_BLOCK * width0), np.float32),
        "zeros": ((FORWARD_BLOCK * width0,), np.float32),
        "hscratch": ((slots, 2 * (FORWARD_BLOCK + ROW_GROUP - 1) * max(layout.dims[1:])), np.float32),
        "lscratch": ((slots, n_out * (FORWARD_BLOCK + ROW_GROUP)), np.float32),
        "logits": ((batch * n_out,), np.float32),
        "row_loss": ((batch,), np.float64),
        "row_correct": ((batch,), np.int64),
    }}


class ForwardWorkspace:
    """Buffers for the unperturbed model's logits on up to ``batch`` rows, reused per call.

    Parameters
    ----------
    layout : ParamLayout
    batch : int
        Most rows per call.
    """

    def __init__(self, layout, batch: int):
        self.layout = layout
        self.batch = int(batch)
        self.geo = geometry(layout)
        buffers = {name: np.zeros(shape, dtype) for name, (shape, dtype) in forward_plan(layout, batch)["buffers"].items()}
        self.wt_base, self.bscratch, self.zeros = buffers["wt_base"], buffers["bscratch"], buffers["zeros"]
        self.hscratch, self.lscratch, self.logits = buffers["hscratch"], buffers["lscratch"], buffers["logits"]
        self.row_loss, self.row_correct = buffers["row_loss"], buffers["row_correct"]

    def check(self, theta, csr, rows, labels=None) -> None:
        """Validate a run's arrays against this workspace (once per run, not per call)."""
        check_csr(*csr, rows)
        _check("theta", theta, np.float32, 1)
        if theta.shape[0] != self.layout.size:
            raise ValueError(f"theta has {theta.shape[0]} values, layout needs {self.layout.size}")
        if labels is not None:
            _check("labels", labels, np.int32, 1)
        if len(rows) > self.batch:
            raise ValueError(f"{len(rows)} rows, workspace built for at most {self.batch}")

    def logits_of(self, theta, csr, rows) -> np.ndarray:
        """Logits (B, C) float32, a view of the workspace (valid until the next call)."""
        n, n_out = len(rows), self.layout.dims[-1]
        out = self.logits[: n * n_out]
        _transpose_layers(theta, self.geo, self.wt_base)
        _forward_rows(theta, self.geo, tuple(csr), rows, self.wt_base, self.bscratch, self.zeros, self.hscratch,
                      self.lscratch, out)
        return out.reshape(n, n_out)

    def metrics(self, theta, csr, rows, labels, loss_code) -> tuple[float, int]:
        """Summed loss and correct count of the model on ``rows``."""
        n = len(rows)
        return _summed_metrics(self.logits_of(theta, csr, rows), labels, rows, loss_code, self.row_loss[:n],
                               self.row_correct[:n])


def _summed_metrics(logits, labels, rows, loss_code, row_loss, row_correct) -> tuple[float, int]:
    """Summed loss (float) and correct count (int) of ``logits`` (B, C) against ``labels[rows]``,
    through the (B,) buffers ``row_loss`` and ``row_correct``."""
    _row_losses(logits, labels, rows, loss_code, row_loss, row_correct)
    return float(row_loss.sum()), int(row_correct.sum())


def forward_logits(theta, layout, csr, rows, out=None) -> np.ndarray:
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
    forward = ForwardWorkspace(layout, max(len(rows), 1))
    forward.check(theta, csr, rows)
    logits = forward.logits_of(theta, csr, rows)
    if out is None:
        return logits.copy()
    out[...] = logits
    return out


def population_losses(theta, noise, sigma, layout, data, loss="mse", antithetic=False, perturbation="full", rank=1,
                      serial=None) -> np.ndarray:
    """Mean batch loss of each population member.

    Parameters
    ----------
    theta : ndarray of shape (P,), float32
    noise : tuple (table (T,) float32, the shared noise table; offsets (n_noise,) int64)
    sigma : float, or ndarray of shape (P,), float32
        The noise scale: one for every parameter, or each parameter's own (full rank only).
    layout : ParamLayout
    data : tuple (csr (indptr, indices, values), rows (B,) int64, labels (N,) int32)
    antithetic : bool
        Evaluate each noise vector with both signs (population = 2 * n_noise).
    serial : bool, optional
        Run on one thread (default: when the population x batch is small).

    Returns
    -------
    ndarray of shape (n,), float64; member ``k * n_signs + i`` is noise vector k with sign
    ``+1`` (i = 0) or ``-1`` (i = 1).
    """
    (table, offsets), (csr, rows, labels) = noise, data
    scaled = np.ndim(sigma) > 0
    ws = PopulationWorkspace(layout, len(offsets), antithetic, len(rows), perturbation, rank, serial=serial,
                             scaled=scaled)
    ws.check(theta, table, offsets, csr, rows, labels, sigma if scaled else None)
    return ws.losses(theta, table, offsets, sigma, csr, rows, labels, LOSS_CODES[loss]).copy()


class PopulationCall(NamedTuple):
    """One population call's arguments as the phase kernels take them
    (:meth:`PopulationWorkspace.arguments`): the bundles as plain tuples in their fields' order."""

    noise: tuple  #: :class:`Noise`
    sigmas: np.ndarray | None  #: a scaled workspace's standard deviations, else None
    batch: tuple  #: :class:`Batch`
    plan: tuple  #: :class:`Plan`
    work: tuple  #: :class:`Work`


class PopulationWorkspace:
    """Preallocated buffers for the population phase kernels, reused every generation.

    Created once per run for a given population, batch size and layout (a smaller last
    batch uses the leading rows). :meth:`check` validates a run's arrays once;
    :meth:`losses` is the hot path: no allocation beyond the call's small bundles, four
    compiled calls at most (:meth:`arguments`, then phases 1, 2 and 3, which the profile
    also calls one by one). A ``scaled`` workspace takes a standard deviation per parameter
    (PGPE, SNES).
    """

    def __init__(self, layout, n_noise, antithetic, batch, perturbation="full", rank=1, threads=None, serial=None,
                 scaled=False):
        if scaled and perturbation != "full":
            raise ValueError("a standard deviation per parameter needs full-rank noise")
        self.layout = layout
        self.n_noise = int(n_noise)
        self.n_signs = 2 if antithetic else 1
        self.n_members = self.n_noise * self.n_signs
        self.lowrank = perturbation == "lowrank"
        self.rank = int(rank)
        self.noise_size = layout.noise_size(perturbation, self.rank)
        self.batch = int(batch)
        self.geo = geometry(layout, self.rank)
        plan = population_plan(layout, n_noise, antithetic, batch, perturbation, rank, threads, serial, scaled)
        self.grouped, self.serial, self.n_blocks = plan["grouped"], plan["serial"], plan["n_blocks"]
        self.row_groups = plan["row_groups"]
        buffers = {name: np.zeros(shape, dtype) for name, (shape, dtype) in plan["buffers"].items()}
        self.wide, self.base, self.proj = buffers["wide"], buffers["base"], buffers["proj"]
        self.wt_base, self.wscratch, self.zscratch = buffers["wt_base"], buffers["wscratch"], buffers["zscratch"]
        self.hscratch, self.lscratch, self.vscratch = buffers["hscratch"], buffers["lscratch"], buffers["vscratch"]
        self.row_loss, self.out_loss, self.sscratch = buffers["row_loss"], buffers["out_loss"], buffers["sscratch"]
        self.bits, self.chain, self.mark = buffers["bits"], buffers["chain"], buffers["mark"]
        self.ordered, self.groups, self.group_values = buffers["ordered"], buffers["groups"], buffers["group_values"]
        self.centre = {name: buffers[name]
                       for name in ("centre_zeros", "centre_logits", "centre_loss", "centre_correct")}
        self.last_rows = None  # the rows of the last losses() call, in the order it evaluated them
        self.scaled = bool(scaled)
        # the kernels' bundles travel as plain tuples (kernels.common): typed fast per call
        self.plan = Plan(self.geo, self.n_signs, self.lowrank, self.rank, LOSS_MSE, int(self.n_blocks),
                         bool(self.grouped), int(threads or numba.get_num_threads()), int(plan["gathered_members"]))
        self.plan_tuple = tuple(self.plan)
        self.first = tuple(FirstLayer(self.base, self.proj, self.wt_base))
        self.work = None  # phase 2's buffers for the last batch size (their row_loss is shaped by it)
        self.member_row_loss = None
        serial_kernels = 1 if self.serial else 0
        self.first_kernel = _first_layer_serial if plan["serial_first_layer"] else _first_layer
        self.reduce_kernel = (_reduce_members, _reduce_members_serial)[serial_kernels]
        #: phase 2's kernels by how far each task goes: the production one ("loss") and the
        #: profile's, that stop after the noise response or the logits
        self.member_kernels = {
            "loss": (_member_losses, _member_losses_serial)[serial_kernels],
            "response": (_member_responses, _member_responses_serial)[serial_kernels],
            "logits": (_member_logits, _member_logits_serial)[serial_kernels],
        }

    def check(self, theta, table, offsets, csr, rows, labels, sigmas=None) -> None:
        """Validate a run's arrays against this workspace (once per run, not per call);
        ``sigmas``: a scaled workspace's standard deviations."""
        indptr, indices, values = csr
        check_csr(indptr, indices, values, rows)
        _check("theta", theta, np.float32, 1)
        _check("offsets", offsets, np.int64, 1)
        _check("labels", labels, np.int32, 1)
        if theta.shape[0] != self.layout.size:
            raise ValueError(f"theta has {theta.shape[0]} values, layout needs {self.layout.size}")
        if self.scaled:
            _check("sigmas", sigmas, np.float32, 1)
            if sigmas.shape[0] != self.layout.size:
                raise ValueError(f"sigmas has {sigmas.shape[0]} values, layout needs {self.layout.size}")
        if len(offsets) != self.n_noise:
            raise ValueError(f"{len(offsets)} noise offsets, workspace built for {self.n_noise}")
        if len(rows) > self.batch:
            raise ValueError(f"{len(rows)} rows, workspace built for at most {self.batch}")
        check_offsets(offsets, self.noise_size, table)

    def losses(self, theta, table, offsets, sigma, csr, rows, labels, loss_code):
        """Mean loss of every member, shape (n,), float64 (a view reused next call).

        ``offsets`` must be a generation's offsets from :func:`fastes.strategies.noise.member_offsets`
        for this workspace's noise size (in the table by construction); ``sigma`` a float,
        or for a scaled workspace the (P,) float32 standard deviations.
        """
        call = self.arguments(table, offsets, sigma, (csr, rows, labels), loss_code)
        self.first_layer(theta, call)
        self.member_losses(call)
        return self.reduce(call)

    def arguments(self, table, offsets, sigma, data, loss_code) -> PopulationCall:
        """The bundles of a call on ``data`` (csr, rows, labels); batches of
        :data:`GROUP_MIN_ROWS` rows or more are first chained into groups of four similar
        rows (:func:`_row_groups`), evaluated in that order (:attr:`last_rows`)."""
        (indptr, indices, values), rows, labels = data
        n_rows = len(rows)
        if self.row_groups:
            _row_groups(indptr, indices, values, rows, self.bits, self.chain, self.mark, self.ordered, self.groups,
                        self.group_values)
            rows = self.ordered[:n_rows]
        self.last_rows = rows
        if self.plan.loss != loss_code:
            self.plan = self.plan._replace(loss=int(loss_code))
            self.plan_tuple = tuple(self.plan)
        if self.work is None or self.member_row_loss.shape[1] != n_rows:
            # a C-contiguous (n, rows) view for every batch size: a strided view for the last,
            # smaller batch would be another type and compile a second kernel
            self.member_row_loss = self.row_loss[: self.n_members * n_rows].reshape(self.n_members, n_rows)
            self.work = tuple(Work(self.wscratch, self.zscratch, self.hscratch, self.lscratch, self.vscratch,
                                   self.sscratch, self.member_row_loss, self.out_loss))
        if self.scaled:
            noise, sigmas = (table, offsets, np.float32(1.0)), sigma
        else:
            noise, sigmas = (table, offsets, np.float32(sigma)), None
        batch = (indptr, indices, values, rows, self.groups, self.group_values, labels)  # Batch's fields
        return PopulationCall(noise, sigmas, batch, self.plan_tuple, self.work)

    def first_layer(self, theta, call: PopulationCall) -> None:
        """Phase 1: the centre's first layer on the batch (and the grouped noise projections)."""
        self.first_kernel(theta, call.noise, call.sigmas, call.batch, call.plan, self.wide, *self.first)

    def member_losses(self, call: PopulationCall, through: str = "loss") -> None:
        """Phase 2: every member's loss on every row (and its mean where a task holds every
        row). ``through`` "response" or "logits": the profile's variant that stops each task
        after that part (the losses are then not computed)."""
        self.member_kernels[through](call.noise, call.sigmas, call.batch, call.plan, self.first, call.work)

    def reduce(self, call: PopulationCall) -> np.ndarray:
        """Phase 3 where phase 2 split members' rows into blocks: each member's mean loss."""
        if self.n_blocks > 1:
            self.reduce_kernel(self.member_row_loss, len(self.last_rows), self.out_loss)
        return self.out_loss

    def centre_metrics(self, labels, loss_code) -> tuple[float, int]:
        """Summed loss and correct count of the unperturbed model of the last :meth:`losses`
        call on its rows, from the first layer that call left (``base``, ``wt_base``): the
        model the population was drawn around, scored without a second pass over the batch.
        Valid until the next :meth:`losses` call."""
        if self.last_rows is None:
            raise RuntimeError("centre_metrics needs a losses() call first")
        rows, c = self.last_rows, self.centre
        n = len(rows)
        logits = c["centre_logits"][: n * self.layout.dims[-1]]
        _base_logits(self.base, self.geo, n, self.wt_base, c["centre_zeros"], self.hscratch[0], self.lscratch[0],
                     logits)
        return _summed_metrics(logits.reshape(n, -1), labels, rows, loss_code, c["centre_loss"][:n],
                               c["centre_correct"][:n])


def noise_weighted_sum(table, offsets, weights, size, out=None, chunk=NOISE_CHUNK) -> np.ndarray:
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
    out = _sum_buffer(out, size, "out")
    _noise_sums(table, offsets, weights, None, chunk, out, None)
    return out


def noise_moments(table, offsets, weights, square_weights, size, out=None, out_sq=None, chunk=NOISE_CHUNK):
    """``sum_k weights[k] u_k`` and ``sum_k square_weights[k] (u_k**2 - 1)`` in float64, with
    ``u_k = table[offsets[k] : offsets[k] + size]``, in one pass over each window.

    Parameters
    ----------
    table : ndarray of shape (T,), float32
    offsets : ndarray of shape (n_noise,), int64
    weights, square_weights : ndarray of shape (n_noise,), float64
    size : int
    out, out_sq : ndarray of shape (size,), float64, optional

    Returns
    -------
    (ndarray of shape (size,), ndarray of shape (size,)), float64
    """
    _check("offsets", offsets, np.int64, 1)
    _check("weights", weights, np.float64, 1)
    _check("square_weights", square_weights, np.float64, 1)
    if not len(offsets) == len(weights) == len(square_weights):
        raise ValueError(f"{len(offsets)} offsets but {len(weights)} and {len(square_weights)} weights")
    check_offsets(offsets, size, table)
    out, out_sq = _sum_buffer(out, size, "out"), _sum_buffer(out_sq, size, "out_sq")
    _noise_sums(table, offsets, weights, square_weights, chunk, out, out_sq)
    return out, out_sq


def _sum_buffer(out, size: int, name: str) -> np.ndarray:
    """``out`` checked to hold a (size,) float64 sum, or a new one."""
    if out is None:
        return np.empty(size, dtype=np.float64)
    _check(name, out, np.float64, 1)
    if out.shape[0] != size:
        raise ValueError(f"{name} has {out.shape[0]} values, the sum needs {size}")
    return out


def lowrank_stack_shapes(layout, n_noise: int, rank: int) -> list[tuple[tuple, tuple]]:
    """Shapes of :func:`lowrank_stacks`' float64 buffers: per layer (n*r, fan_in) and (n*r, fan_out)."""
    return [((n_noise * rank, fan_in), (n_noise * rank, fan_out)) for fan_in, fan_out in zip(layout.dims[:-1], layout.dims[1:])]


def lowrank_stacks(layout, n_noise: int, rank: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Buffers for :func:`lowrank_weighted_sum`: per layer (n*r, fan_in) and (n*r, fan_out), float64."""
    return [(np.empty(left), np.empty(right)) for left, right in lowrank_stack_shapes(layout, n_noise, rank)]


#: Blocks of output rows each BLAS product of :func:`lowrank_weighted_sum` is cut into, on
#: a pool's threads when one is given: the same blocks (the same sums, bit for bit) for any
#: thread count; fewer, larger blocks were faster than row blocks of 64 or 128, or one
#: product on one thread.
GRADIENT_BLOCKS = 4


def lowrank_weighted_sum(table, offsets, weights, layout, rank, out=None, stacks=None, pool=None) -> np.ndarray:
    """Gradient-shaped sum of low-rank noise: per layer ``sum_k w_k A_k.T @ B_k / sqrt(r)``.

    Never forms an (n, P) block: each layer's factors are stacked, (n*r, fan_in) and
    (n*r, fan_out), and multiplied in float64 GEMMs outside any parallel loop, in
    :data:`GRADIENT_BLOCKS` blocks of output rows per layer.

    Parameters
    ----------
    table : ndarray of shape (T,), float32
    offsets : ndarray of shape (n_noise,), int64
    weights : ndarray of shape (n_noise,), float64
    layout : ParamLayout
    rank : int
    out : ndarray of shape (P,), float64, optional
    stacks : list from :func:`lowrank_stacks`, optional
    pool : concurrent.futures.Executor, optional
        Runs the GEMM blocks (each a single-threaded BLAS call where the caller limits BLAS
        to one thread) on its threads; without one they run here, in order.

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
    blocks = []
    for l, (left, right) in enumerate(stacks):
        fan_in, fan_out = left.shape[1], right.shape[1]
        _gather_lowrank(table, offsets, weights, int(a_start[l]), fan_in, rank, scale, left)
        _gather_lowrank(table, offsets, ones, int(b_start[l]), fan_out, rank, 1.0, right)
        w0, b0 = int(layout.w_start[l]), int(layout.b_start[l])
        product = out[w0:b0].reshape(fan_in, fan_out)
        step = -(-fan_in // GRADIENT_BLOCKS)
        blocks += [(left[:, i : i + step].T, right, product[i : i + step]) for i in range(0, fan_in, step)]
        _noise_sums(table, offsets + int(e_start[l]), weights, None, NOISE_CHUNK, out[b0 : b0 + fan_out], None)
    if pool is None:
        for block in blocks:
            _matmul_into(block)
    else:
        list(pool.map(_matmul_into, blocks))
    return out


def _matmul_into(block: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    """One block of :func:`lowrank_weighted_sum`: ``np.matmul(left, right, out=out)``."""
    left, right, out = block
    np.matmul(left, right, out=out)
