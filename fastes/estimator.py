"""``ESClassifier``: an ES-trained MLP behind the scikit-learn estimator API.

It builds the same :class:`fastes.config.Config` as the CLI (so the same validation) and
trains with the same :class:`fastes.trainer.Trainer` and kernels; nothing of the algorithm
is repeated here.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from .backends import predict_logits
from .config import Config
from .data import Dataset
from .evaluate import softmax
from .memory import check_fits
from .trainer import Trainer


class ESClassifier(ClassifierMixin, BaseEstimator):
    """Multi-layer perceptron classifier trained by an evolution strategy.

    Parameters mirror :class:`fastes.config.Config` (see ``fastes train --help``);
    ``random_state`` is the run seed and ``n_threads`` the Numba thread count.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,), when X has string column names
    coefs_ : list of ndarray, ``W0 (n_features, h1), W1 (h1, h2), ...``
    intercepts_ : list of ndarray
    n_generations_ : int
        Generations trained so far (``fit`` plus every ``partial_fit``).
    history_ : list of dict
        Per-epoch training loss and accuracy.
    """

    def __init__(
        self,
        hidden=(64,),
        population=128,
        sigma=0.05,
        lr=0.01,
        batch_size=64,
        epochs=20,
        max_seconds=None,
        antithetic=True,
        shaping="centered-rank",
        loss="cross-entropy",
        optimizer="adam",
        weight_decay=0.0,
        perturbation="full",
        rank=1,
        init="he",
        init_std=0.1,
        shuffle=True,
        lr_schedule="constant",
        random_state=None,
        n_threads=None,
        backend="numba",
        address=None,
        workers=2,
    ):
        self.hidden = hidden
        self.population = population
        self.sigma = sigma
        self.lr = lr
        self.batch_size = batch_size
        self.epochs = epochs
        self.max_seconds = max_seconds
        self.antithetic = antithetic
        self.shaping = shaping
        self.loss = loss
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.perturbation = perturbation
        self.rank = rank
        self.init = init
        self.init_std = init_std
        self.shuffle = shuffle
        self.lr_schedule = lr_schedule
        self.random_state = random_state
        self.n_threads = n_threads
        self.backend = backend
        self.address = address
        self.workers = workers

    # ------------------------------------------------------------------ helpers

    def _config(self, seed: int, epochs: int | None = None) -> Config:
        return Config(
            hidden=self.hidden, population=self.population, sigma=self.sigma, lr=self.lr,
            batch_size=self.batch_size, epochs=epochs if epochs is not None else self.epochs,
            max_seconds=self.max_seconds, antithetic=self.antithetic, shaping=self.shaping, loss=self.loss,
            optimizer=self.optimizer, weight_decay=self.weight_decay, perturbation=self.perturbation,
            rank=self.rank, init=self.init, init_std=self.init_std, shuffle=self.shuffle,
            lr_schedule=self.lr_schedule, seed=seed, threads=self.n_threads, backend=self.backend,
            address=self.address, workers=self.workers,
        )

    def _dataset(self, X, y) -> Dataset:
        n = X.shape[1]
        empty = np.zeros((0, n), dtype=np.float32)
        return Dataset("array", X, y, empty, np.zeros(0, np.int32), len(self.classes_), (1, n))

    def _trainer(self, config: Config, X, y) -> Trainer:
        """A trainer for (X, y), once the run is known to fit in memory."""
        dataset = self._dataset(np.ascontiguousarray(X), self._encode(y))
        check_fits(config, dataset)
        return Trainer(config, dataset)

    def _encode(self, y) -> np.ndarray:
        index = np.searchsorted(self.classes_, y)
        index = np.clip(index, 0, len(self.classes_) - 1)
        if not np.all(self.classes_[index] == y):
            unseen = np.setdiff1d(np.unique(y), self.classes_)
            raise ValueError(f"y has labels {unseen[:5].tolist()} not in classes_ {self.classes_.tolist()}")
        return index.astype(np.int32)

    def _set_model(self, trainer: Trainer, state, seed: int) -> None:
        self.seed_ = seed  # the noise stream partial_fit continues
        self.layout_ = trainer.layout
        self.state_ = state
        layers = trainer.layout.unpack(state.theta)
        self.coefs_ = [w.copy() for w, _ in layers]
        self.intercepts_ = [b.copy() for _, b in layers]
        self.n_generations_ = state.generation
        self.history_ = list(state.history)

    # ------------------------------------------------------------------ API

    def fit(self, X, y):
        """Train from scratch.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), numeric
        y : array-like of shape (n_samples,), any label type

        Returns
        -------
        self
        """
        X, y = validate_data(self, X, y, dtype=np.float32, reset=True)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        trainer = self._trainer(self._config(seed), X, y)
        self._set_model(trainer, trainer.run(), seed)
        return self

    def partial_fit(self, X, y, classes=None, n_generations=None):
        """Train ``n_generations`` more generations (default: one pass over X) on (X, y).

        The first call needs ``classes`` unless the estimator is already fitted (or y
        holds every class). Parameters, optimizer state and the noise counter carry over.
        """
        first = not hasattr(self, "classes_")
        X, y = validate_data(self, X, y, dtype=np.float32, reset=first)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if first:
            self.classes_ = np.unique(classes if classes is not None else y)
        seed = getattr(self, "seed_", None)
        if first or seed is None:
            seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        trainer = self._trainer(self._config(seed, epochs=10**9), X, y)
        if n_generations is None:
            n_generations = trainer.n_batches
        state = trainer.initial_state() if first else self.state_
        state.epoch, state.batch, state.loss_sum, state.correct, state.seen = 0, 0, 0.0, 0, 0
        self._set_model(trainer, trainer.run(state, max_generations=int(n_generations)), seed)
        return self

    def _logits(self, X) -> np.ndarray:
        check_is_fitted(self, "state_")
        X = validate_data(self, X, dtype=np.float32, reset=False)
        return predict_logits(self.state_.theta, self.layout_, np.ascontiguousarray(X))

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (softmax of the logits), shape (n_samples, n_classes)."""
        return softmax(self._logits(X))

    def predict(self, X) -> np.ndarray:
        """Predicted labels, shape (n_samples,)."""
        best = self._logits(X).argmax(axis=1)
        return self.classes_[best]
