"""The state of a run: what the strategy evolves (:class:`ESState`) and what a run adds to
it to continue exactly where it stopped (:class:`TrainState`), as arrays and back.

NumPy only: reading a checkpoint or a run's metrics loads no training code.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

#: Test-accuracy levels whose first wall second ``summary.json`` records.
ACCURACY_LEVELS = ("0.80", "0.85", "0.89", "0.95", "0.97", "0.98")

#: Columns of a run's metrics (one row per epoch and per ``eval_every_seconds``).
METRIC_COLUMNS = ("epoch", "generation", "wall_seconds", "train_loss", "train_accuracy", "test_loss", "test_accuracy")


@dataclass
class ESState:
    """Everything the strategy evolves; :meth:`fastes.strategies.base.Strategy.tell` returns
    the next generation's as a new object.

    Attributes
    ----------
    theta : ndarray of shape (P,), float32
        Current parameters (the centre of the search distribution).
    generation : int
        Generations done so far (indexes the noise).
    optimizer : dict of str to ndarray
        The optimizer's step count and moments (:meth:`fastes.strategies.optimizers.Optimizer.state`).
    sigma : ndarray of shape (P,), float32, or None
        Each parameter's standard deviation, for the strategies that learn them (PGPE, SNES).
    """

    theta: np.ndarray
    generation: int = 0
    optimizer: dict = field(default_factory=dict)
    sigma: np.ndarray | None = None

    def advanced(self, theta: np.ndarray, optimizer: dict, sigma: np.ndarray | None):
        """A copy of this state (of its class, every other field shared) one generation on,
        with these arrays; this state is left as it was."""
        new = copy.copy(self)
        new.theta, new.optimizer, new.sigma, new.generation = theta, optimizer, sigma, self.generation + 1
        return new


@dataclass
class TrainState(ESState):
    """An :class:`ESState` and the progress of the run around it: everything needed to
    continue a run exactly where it stopped.

    Attributes
    ----------
    epoch, batch : int
        Epoch in progress and index of its next batch.
    loss_sum, correct, seen : float, int, int
        Running sums over the epoch's batches so far (each batch's model, before its step, on it).
    elapsed : float
        Wall seconds of training so far.
    history : list of dict
        Rows of metrics.csv so far (keys :data:`METRIC_COLUMNS`).
    time_to_accuracy : dict
        First wall second at which test accuracy reached each of :data:`ACCURACY_LEVELS`.
    """

    epoch: int = 0
    batch: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    elapsed: float = 0.0
    history: list = field(default_factory=list)
    time_to_accuracy: dict = field(default_factory=lambda: {k: None for k in ACCURACY_LEVELS})

    #: Fields kept as JSON numbers: counts (integers >= 0) and sums (numbers >= 0).
    COUNTS = ("generation", "epoch", "batch", "correct", "seen")
    SUMS = ("loss_sum", "elapsed")

    @property
    def train_loss(self) -> float:
        """Mean loss of each batch's model (before its step) over the epoch's batches so far (NaN before any)."""
        return self.loss_sum / self.seen if self.seen else float("nan")

    @property
    def train_accuracy(self) -> float:
        """Accuracy of each batch's model (before its step) over the epoch's batches so far (NaN before any)."""
        return self.correct / self.seen if self.seen else float("nan")

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict]:
        """The state as arrays (``theta``, ``opt_<name>`` per optimizer array, and ``sigma``
        where the strategy learns one per parameter) and a JSON-ready dict of everything else
        (:meth:`from_arrays` reverses it)."""
        arrays = {"theta": self.theta, **{f"opt_{k}": np.asarray(v) for k, v in self.optimizer.items()}}
        if self.sigma is not None:
            arrays["sigma"] = self.sigma
        progress = {k: getattr(self, k) for k in (*self.COUNTS, *self.SUMS, "history", "time_to_accuracy")}
        progress["optimizer_keys"] = sorted(self.optimizer)
        return arrays, progress

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], progress: dict) -> TrainState:
        """The state :meth:`to_arrays` wrote (its values already checked by the reader)."""
        return cls(
            theta=np.ascontiguousarray(arrays["theta"], dtype=np.float32),
            optimizer={k: arrays[f"opt_{k}"] for k in progress["optimizer_keys"]},
            sigma=np.array(arrays["sigma"], dtype=np.float32) if "sigma" in arrays else None,
            history=progress["history"],
            time_to_accuracy=progress["time_to_accuracy"],
            **{k: int(progress[k]) for k in cls.COUNTS},
            **{k: float(progress[k]) for k in cls.SUMS},
        )
