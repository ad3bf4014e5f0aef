"""The Numba backend: the population scored by the kernels of :mod:`.kernels` (through the
validating wrappers of :mod:`.workspace`), in this process; and the pieces the Ray backend
builds its driver and workers from (:class:`NoiseSum`, :class:`ModelMetrics`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numba
import numpy as np
from threadpoolctl import ThreadpoolController

from . import kernels, workspace
from ..errors import ConfigError
from .protocol import InProcess, batch_rows, train_labels


@cache
def _blas_controller() -> ThreadpoolController:
    """The process's BLAS libraries, found once: looking them up reads the loaded libraries
    of the process, a cost each small ``ESClassifier.fit`` would otherwise pay again."""
    return ThreadpoolController()


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


class NoiseSum:
    """The gradient's noise sums with the Numba kernels (full-rank or low-rank noise): what a
    strategy's ``gradient`` asks of a backend; the Numba and Ray backends are one.

    Parameters
    ----------
    config : Config
    layout : ParamLayout
    table : ndarray of shape (T,), float32
    """

    def __init__(self, config, layout, table):
        self.layout, self.table, self.rank = layout, table, config.rank
        self.lowrank = config.perturbation == "lowrank"
        self.n_params = layout.size  # a property that sums the layers: read once
        self.grad = np.empty(self.n_params, dtype=np.float64)
        self.square = np.empty(layout.size if config.learns_sigma else 0, dtype=np.float64)
        self.stacks = workspace.lowrank_stacks(layout, config.n_noise, config.rank) if self.lowrank else None
        # Low-rank GEMM blocks on a pool of one-thread BLAS calls: BLAS's own threads, spinning
        # after a call, would take the cores from the next kernel's threads.
        self.blas = _blas_controller() if self.lowrank else None
        threads = numba.get_num_threads()
        gemm_threads = threads if self.lowrank and threads > 1 else 0
        self.pool = ThreadPoolExecutor(gemm_threads, thread_name_prefix="fastes-gemm") if gemm_threads else None

    def noise_sum(self, offsets: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """``sum_k weights[k] * noise_k`` in parameter layout, shape (P,), float64 (a buffer
        reused next call)."""
        if self.lowrank:
            with self.blas.limit(limits=1, user_api="blas"):
                return workspace.lowrank_weighted_sum(self.table, offsets, weights, self.layout, self.rank,
                                                    self.grad, self.stacks, self.pool)
        return workspace.noise_weighted_sum(self.table, offsets, weights, self.n_params, self.grad)

    def noise_moments(self, offsets: np.ndarray, weights: np.ndarray,
                      square_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``sum_k weights[k] u_k`` and ``sum_k square_weights[k] (u_k**2 - 1)``, (P,) float64
        each, full-rank noise (buffers reused next call)."""
        return workspace.noise_moments(self.table, offsets, weights, square_weights, self.n_params, self.grad,
                                       self.square)


class ModelMetrics:
    """Loss and correct count of the unperturbed model on training rows (Numba forward).

    Parameters
    ----------
    config : Config
    layout : ParamLayout
    dataset : Dataset
    """

    def __init__(self, config, layout, dataset):
        self.csr = dataset.csr("train")
        self.labels = train_labels(dataset)
        self.loss_code = kernels.LOSS_CODES[config.loss]
        self.forward = workspace.ForwardWorkspace(layout, batch_rows(config, dataset))
        self._checked = False

    def __call__(self, theta: np.ndarray, rows: np.ndarray) -> tuple[float, int]:
        """Summed loss (float) and correct count (int) of ``theta`` on training ``rows``
        (the arrays validated on the first call: a run's dtypes and shapes do not change)."""
        if not self._checked:
            self.forward.check(theta, self.csr, rows, self.labels)
            self._checked = True
        return self.forward.metrics(theta, self.csr, rows, self.labels, self.loss_code)


class NumbaBackend(InProcess, NoiseSum):
    """The :class:`Backend` of the Numba kernels, all in this process: its noise sums are
    :class:`NoiseSum`'s.

    Parameters
    ----------
    config : Config
    layout : ParamLayout
    table : ndarray of shape (T,), float32
    dataset : Dataset
        Its training split is what the population is scored on.
    """

    def __init__(self, config, layout, table, dataset):
        self.table = table
        self.threads = set_threads(config.threads)
        self.metrics = ModelMetrics(config, layout, dataset)
        self.csr, self.labels, self.loss_code = self.metrics.csr, self.metrics.labels, self.metrics.loss_code
        self.workspace = workspace.PopulationWorkspace(
            layout, config.n_noise, config.antithetic, batch_rows(config, dataset), config.perturbation,
            config.rank, self.threads, scaled=config.learns_sigma,
        )
        NoiseSum.__init__(self, config, layout, table)
        self._checked = False
        # from a population call to the step, the workspace's first layer is the centre's
        self._centre_scored = False

    def population_losses(self, theta, offsets, sigma, rows, generation=None):
        """Mean batch loss of every member, shape (n,), float64 (a view reused next call).

        The arrays are validated on the first call of a run (their dtypes and shapes do not
        change afterwards; every generation's offsets fit the table by construction)."""
        if not self._checked:
            self.workspace.check(theta, self.table, offsets, self.csr, rows, self.labels,
                                 sigma if self.workspace.scaled else None)
            self._checked = True
        losses = self.workspace.losses(theta, self.table, offsets, sigma, self.csr, rows, self.labels,
                                       self.loss_code)
        self._centre_scored = True
        return losses

    def batch_metrics(self, theta, rows):
        """Summed loss and correct count of ``theta`` on training ``rows``. Between a
        population call and the step (the protocol's order: the same ``theta`` and ``rows``)
        they come from that call's first layer; otherwise from a forward pass."""
        if self._centre_scored:
            return self.workspace.centre_metrics(self.labels, self.loss_code)
        return self.metrics(theta, rows)

    def record_step(self, weights, lr):
        """The step moved the parameters: the last population call's first layer is stale."""
        self._centre_scored = False


def predict_logits(theta, layout, x=None, csr=None) -> np.ndarray:
    """Logits (N, C) of a model for dense inputs ``x`` (N, d), or for ``csr`` (a
    :meth:`Dataset.csr` split, kept by the caller), with the Numba forward kernel."""
    theta = np.ascontiguousarray(theta, dtype=np.float32)
    csr = csr if csr is not None else workspace.dense_to_csr(x)
    rows = np.arange(len(csr[0]) - 1, dtype=np.int64)
    return workspace.forward_logits(theta, layout, csr, rows)
