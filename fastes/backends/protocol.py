"""What every backend does (:class:`Backend`), and what the in-process backends share."""

from __future__ import annotations

from typing import Protocol

import numpy as np


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


class InProcess:
    """What a backend whose parameters live in this process does at a run's start and after
    each step: nothing (the caller's parameters are the only copy)."""

    def begin(self, state):
        """Nothing to ship: the parameters are already here."""

    def record_step(self, weights, lr):
        """Nothing to replay: the caller's parameters are the only copy."""


def train_labels(dataset) -> np.ndarray:
    """The training labels as the kernels take them, shape (N,), int32."""
    return np.ascontiguousarray(dataset.y_train, dtype=np.int32)


def batch_rows(config, dataset) -> int:
    """Rows a batch holds: the batch size, or the whole training set when it is smaller."""
    return min(config.batch_size, len(dataset.y_train))
