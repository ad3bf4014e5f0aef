"""Backends: who evaluates a population and sums its noise.

``numba`` runs the kernels of :mod:`fastes.kernels`; ``numpy`` runs the reference of
:mod:`fastes.reference`. Both see the same data, parameters and noise offsets, so for the
same seed they follow the same trajectory (within float32 rounding). The ``ray`` backend
(:mod:`fastes.ray_backend`) spreads the numba backend over a cluster.
"""

from __future__ import annotations

import numba
import numpy as np
from threadpoolctl import ThreadpoolController

from . import kernels, reference
from .errors import ConfigError


def to_csr(x: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR form of a dense (N, d) array times ``scale``: (indptr int64, indices int32, values float32)."""
    return kernels.dense_to_csr(x, scale)


def set_threads(threads: int | None) -> int:
    """Set Numba's thread count (None: all cores) and return it."""
    if threads is None:
        threads = numba.config.NUMBA_NUM_THREADS
    if threads > numba.config.NUMBA_NUM_THREADS:
        raise ConfigError(
            f"threads={threads} but this machine allows at most {numba.config.NUMBA_NUM_THREADS}; "
            "lower --threads (or set NUMBA_NUM_THREADS)"
        )
    numba.set_num_threads(threads)
    return threads


class NumbaBackend:
    """Population evaluation with the Numba kernels.

    Parameters
    ----------
    config : Config
    layout : ParamLayout
    table : ndarray of shape (T,), float32
    dataset : Dataset
        Its training split is what the population is scored on.
    """

    name = "numba"

    def __init__(self, config, layout, table, dataset):
        self.config = config
        self.layout = layout
        self.table = table
        self.threads = set_threads(config.threads)
        self.csr = dataset.csr("train")
        self.labels = np.ascontiguousarray(dataset.y_train, dtype=np.int32)
        self.loss_code = kernels.LOSS_CODES[config.loss]
        self.lowrank = config.perturbation == "lowrank"
        batch = min(config.batch_size, len(dataset.y_train))  # a batch never holds more rows than the data
        self.workspace = kernels.PopulationWorkspace(
            layout, config.n_noise, config.antithetic, batch, config.perturbation, config.rank, self.threads
        )
        self.grad = np.empty(layout.size, dtype=np.float64)
        self.stacks = kernels.lowrank_stacks(layout, config.n_noise, config.rank) if self.lowrank else None
        # The low-rank gradient's products run in BLAS on one thread: BLAS threads left
        # spinning after a call take the cores from the next kernel's threads (and the
        # kernels' OpenMP threads from BLAS), which cost 6x the product itself here.
        self.blas = ThreadpoolController() if self.lowrank else None
        self.forward = kernels.ForwardWorkspace(layout, batch)
        self._checked = False

    def begin(self, theta, optimizer, generation):
        """Training starts or resumes from these parameters (only remote backends care)."""

    def record_step(self, weights, lr):
        """An update was taken with these noise weights and learning rate (remote backends
        replay it on their own copy of the parameters)."""

    def population_losses(self, theta, offsets, sigma, rows, generation=None, timings=None):
        """Mean batch loss of every member, shape (n,), float64 (a view reused next call).

        The arrays are validated on the first call of a run (their dtypes and shapes do not
        change afterwards; every generation's offsets fit the table by construction)."""
        if not self._checked:
            self.workspace.check(theta, self.table, offsets, self.csr, rows, self.labels)
            self._checked = True
        return self.workspace.losses(theta, self.table, offsets, sigma, self.csr, rows, self.labels, self.loss_code,
                                     timings=timings)

    def noise_sum(self, offsets, weights):
        """``sum_k weights[k] * noise_k`` in parameter layout, shape (P,), float64."""
        if self.lowrank:
            with self.blas.limit(limits=1, user_api="blas"):
                return kernels.lowrank_weighted_sum(self.table, offsets, weights, self.layout, self.config.rank,
                                                    self.grad, self.stacks)
        kernels._noise_weighted_sum(self.table, offsets, weights, 2048, self.grad)
        return self.grad

    def batch_metrics(self, theta, rows):
        """Summed loss (float) and correct count (int) of the model on training rows."""
        return self.forward.metrics(theta, self.csr, rows, self.labels, self.loss_code)


class NumpyBackend:
    """Population evaluation with the plain NumPy reference (same interface)."""

    begin = NumbaBackend.begin
    record_step = NumbaBackend.record_step

    name = "numpy"

    def __init__(self, config, layout, table, dataset):
        self.config = config
        self.layout = layout
        self.table = table
        self.dataset = dataset
        self.labels = np.ascontiguousarray(dataset.y_train, dtype=np.int32)

    def population_losses(self, theta, offsets, sigma, rows, generation=None):
        c = self.config
        losses, _ = reference.population_losses(
            theta, self.table, offsets, sigma, c.antithetic, self.layout, self.dataset.dense("train", rows), self.labels[rows],
            c.loss, c.perturbation, c.rank,
        )
        return losses

    def noise_sum(self, offsets, weights):
        if self.config.perturbation == "lowrank":
            return reference.lowrank_weighted_sum(self.table, offsets, weights, self.layout, self.config.rank)
        return reference.noise_weighted_sum(self.table, offsets, weights, self.layout.size)

    def batch_metrics(self, theta, rows):
        logits = reference.forward_logits(theta, self.layout, self.dataset.dense("train", rows))
        row_loss, ok = reference.losses_from_logits(logits, self.labels[rows], self.config.loss)
        return float(row_loss.sum()), int(ok.sum())


def make_backend(config, layout, table, dataset, in_memory: bool = False):
    """The backend named by ``config.backend``; ``in_memory`` data cannot be reloaded by
    name (remote workers must be sent it)."""
    if config.backend == "numba":
        return NumbaBackend(config, layout, table, dataset)
    if config.backend == "numpy":
        return NumpyBackend(config, layout, table, dataset)
    from .ray_backend import RayBackend

    return RayBackend(config, layout, table, dataset, in_memory=in_memory)


def predict_logits(theta, layout, x=None, csr=None) -> np.ndarray:
    """Logits (N, C) of a model for dense inputs ``x`` (N, d), or for ``csr`` (a
    :meth:`Dataset.csr` split, kept by the caller), with the Numba forward kernel."""
    theta = np.ascontiguousarray(theta, dtype=np.float32)
    csr = csr if csr is not None else to_csr(x)
    rows = np.arange(len(csr[0]) - 1, dtype=np.int64)
    return kernels.forward_logits(theta, layout, csr, rows)
