"""Backends: who evaluates a population and sums its noise.

``numba`` runs the kernels of :mod:`fastes.backends.kernels`; ``numpy`` runs the reference of
:mod:`fastes.backends.reference`. Both see the same data, parameters and noise offsets, so for the
same seed they follow the same trajectory (within float32 rounding). The ``ray`` backend
(:mod:`fastes.backends.ray_backend`) spreads the population over a cluster and builds its driver
and workers from the pieces here (:class:`NoiseSum`, :class:`ModelMetrics`). What every
backend does is the :class:`Backend` protocol; the trainer picks one by name.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numba
import numpy as np
from threadpoolctl import ThreadpoolController

from . import kernels, reference, workspace
from ..errors import ConfigError


class Backend(Protocol):
    """What the trainer asks of a backend, once per generation in this order:
    :meth:`population_losses`, :meth:`batch_metrics` (on the same rows, before the step),
    :meth:`noise_sum` (or :meth:`noise_moments`, for a strategy that learns its standard
    deviations), :meth:`record_step`.

    Attributes
    ----------
    threads : int or None
        Numba threads of this process (None where no kernel runs here).
    """

    threads: int | None

    def begin(self, state) -> None:
        """Training starts or resumes from ``state`` (an :class:`fastes.state.ESState`: its
        parameters, optimizer state, standard deviations and generation; remote backends ship
        them to their workers)."""

    def population_losses(self, theta: np.ndarray, offsets: np.ndarray, sigma: float | np.ndarray, rows: np.ndarray,
                          generation: int | None = None) -> np.ndarray:
        """Mean batch loss of every member, shape (n,), float64, of the population around
        ``theta`` drawn from the table at ``offsets`` (n_noise,) and scaled by ``sigma`` (a
        float, or (P,) float32 standard deviations), on training ``rows`` (B,)."""

    def noise_sum(self, offsets: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """``sum_k weights[k] * noise_k`` in parameter layout, shape (P,), float64."""

    def noise_moments(self, offsets: np.ndarray, weights: np.ndarray,
                      square_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``sum_k weights[k] * noise_k`` and ``sum_k square_weights[k] * (noise_k**2 - 1)``,
        each (P,) float64 (full-rank noise)."""

    def record_step(self, weights: np.ndarray, lr: float) -> None:
        """An update was taken with these noise weights and learning rate (remote backends
        replay it on their own copies of the parameters)."""

    def batch_metrics(self, theta: np.ndarray, rows: np.ndarray) -> tuple[float, int]:
        """Summed loss and correct count of the model ``theta`` on training ``rows``."""


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


def train_labels(dataset) -> np.ndarray:
    """The training labels as the kernels take them, shape (N,), int32."""
    return np.ascontiguousarray(dataset.y_train, dtype=np.int32)


def batch_rows(config, dataset) -> int:
    """Rows a batch holds: the batch size, or the whole training set when it is smaller."""
    return min(config.batch_size, len(dataset.y_train))


class NoiseSum:
    """The gradient's noise sums with the Numba kernels (full-rank or low-rank noise).

    Parameters
    ----------
    config : Config
    layout : ParamLayout
    table : ndarray of shape (T,), float32
    """

    def __init__(self, config, layout, table):
        self.layout, self.table, self.rank = layout, table, config.rank
        self.lowrank = config.perturbation == "lowrank"
        self.grad = np.empty(layout.size, dtype=np.float64)
        self.square = np.empty(layout.size if config.learns_sigma else 0, dtype=np.float64)
        self.stacks = workspace.lowrank_stacks(layout, config.n_noise, config.rank) if self.lowrank else None
        # The low-rank gradient's products run in BLAS limited to one thread, by blocks on
        # a pool of this process's kernel threads: BLAS's own threads, left spinning after a
        # call, take the cores from the next kernel's threads (and the kernels' OpenMP threads
        # from BLAS), which cost 6x the product itself here; the pool's threads wait idle.
        self.blas = ThreadpoolController() if self.lowrank else None
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
        kernels._noise_weighted_sum(self.table, offsets, weights, 2048, self.grad)
        return self.grad

    def noise_moments(self, offsets: np.ndarray, weights: np.ndarray,
                      square_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``sum_k weights[k] u_k`` and ``sum_k square_weights[k] (u_k**2 - 1)``, (P,) float64
        each, full-rank noise (buffers reused next call)."""
        kernels._noise_moments(self.table, offsets, weights, square_weights, 2048, self.grad, self.square)
        return self.grad, self.square


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

    def __call__(self, theta: np.ndarray, rows: np.ndarray) -> tuple[float, int]:
        """Summed loss (float) and correct count (int) of ``theta`` on training ``rows``."""
        return self.forward.metrics(theta, self.csr, rows, self.labels, self.loss_code)


class _InProcess:
    """What a backend whose parameters live in this process does at a run's start and after
    each step: nothing (the caller's parameters are the only copy)."""

    def begin(self, state):
        """Nothing to ship: the parameters are already here."""

    def record_step(self, weights, lr):
        """Nothing to replay: the caller's parameters are the only copy."""


class LocalNoiseAndMetrics:
    """Gradient sums and the model's batch metrics computed here, by ``self.noise``
    (:class:`NoiseSum`) and ``self.metrics`` (:class:`ModelMetrics`): the Numba backend's and
    the Ray driver's."""

    def noise_sum(self, offsets, weights):
        return self.noise.noise_sum(offsets, weights)

    def noise_moments(self, offsets, weights, square_weights):
        return self.noise.noise_moments(offsets, weights, square_weights)

    def batch_metrics(self, theta, rows):
        return self.metrics(theta, rows)


class NumbaBackend(_InProcess, LocalNoiseAndMetrics):
    """The :class:`Backend` of the Numba kernels, all in this process.

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
        self.noise = NoiseSum(config, layout, table)
        self._checked = False
        self._scored_rows = None  # rows of the last population call, until the step

    def population_losses(self, theta, offsets, sigma, rows, generation=None, timings=None):
        """Mean batch loss of every member, shape (n,), float64 (a view reused next call).

        The arrays are validated on the first call of a run (their dtypes and shapes do not
        change afterwards; every generation's offsets fit the table by construction).
        ``timings`` (a dict) receives the kernels' phase seconds."""
        if not self._checked:
            self.workspace.check(theta, self.table, offsets, self.csr, rows, self.labels,
                                 sigma if self.workspace.scaled else None)
            self._checked = True
        losses = self.workspace.losses(theta, self.table, offsets, sigma, self.csr, rows, self.labels,
                                       self.loss_code, timings=timings)
        self._scored_rows = rows
        return losses

    def batch_metrics(self, theta, rows):
        """Summed loss and correct count of ``theta`` on training ``rows``. Called between a
        population call on the same ``rows`` and the step (the trainer's order), they come
        from that call's first layer; otherwise from a forward pass."""
        if rows is self._scored_rows:
            self._scored_rows = None
            return self.workspace.centre_metrics(self.labels, self.loss_code)
        return self.metrics(theta, rows)

    def record_step(self, weights, lr):
        """The step moved the parameters: the last population call's first layer is stale."""
        self._scored_rows = None


class NumpyBackend(_InProcess):
    """The :class:`Backend` of the plain NumPy reference (slow; the kernels' yardstick).

    Parameters
    ----------
    config : Config
    layout : ParamLayout
    table : ndarray of shape (T,), float32
    dataset : Dataset
    """

    threads = None

    def __init__(self, config, layout, table, dataset):
        self.config = config
        self.layout = layout
        self.table = table
        self.dataset = dataset
        self.labels = train_labels(dataset)

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

    def noise_moments(self, offsets, weights, square_weights):
        return reference.noise_moments(self.table, offsets, weights, square_weights, self.layout.size)

    def batch_metrics(self, theta, rows):
        logits = reference.forward_logits(theta, self.layout, self.dataset.dense("train", rows))
        row_loss, ok = reference.losses_from_logits(logits, self.labels[rows], self.config.loss)
        return float(row_loss.sum()), int(ok.sum())


def predict_logits(theta, layout, x=None, csr=None) -> np.ndarray:
    """Logits (N, C) of a model for dense inputs ``x`` (N, d), or for ``csr`` (a
    :meth:`Dataset.csr` split, kept by the caller), with the Numba forward kernel."""
    theta = np.ascontiguousarray(theta, dtype=np.float32)
    csr = csr if csr is not None else workspace.dense_to_csr(x)
    rows = np.arange(len(csr[0]) - 1, dtype=np.int64)
    return workspace.forward_logits(theta, layout, csr, rows)
