"""``ESClassifier``: an ES-trained MLP behind the scikit-learn estimator API.

Its parameters are the training options declared in :class:`fastes.config.Config` (the
``__init__`` signature is generated from those declarations), it builds the same Config as
the CLI (so the same validation) and trains with the same :class:`fastes.trainer.Trainer`
and kernels; nothing of the algorithm is repeated here.
"""

from __future__ import annotations

import inspect
import math
import numbers
import textwrap
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any, Iterator

import numba
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from .backends import predict_logits
from .config import OPTIONS, PRESETS, Config
from .io.data import Dataset
from .errors import ConfigError
from .cli.evaluate import softmax
from .memory import check_fits
from .trainer import Trainer

#: The estimator's starting point, by :class:`Config` field: the ``tabular`` preset, with no
#: fixed seed (``random_state=None``, scikit-learn's convention).
DEFAULTS: dict[str, Any] = {**asdict(Config(**PRESETS["tabular"])), "seed": None}

#: Estimator parameter -> :class:`Config` field, for every option the estimator exposes.
PARAMETERS: dict[str, str] = {opt.parameter: name for name, opt in OPTIONS.items() if opt.parameter}

#: What a parameter means here where that differs from the option's help.
_NOTES = {
    "random_state": "Seeds the run: an int (the same model each fit), a RandomState, or None (a new seed from "
                    "NumPy's global random state each fit). Initial weights, noise and batch order follow from it.",
    "n_threads": "Numba threads of each fit and partial_fit call (None: all cores), restored when it returns.",
}
_TYPES = {"int": "int", "float": "float", "bool": "bool", "text": "str", "hidden": "tuple of int"}


def _signature() -> inspect.Signature:
    """``__init__(self, *, <every exposed option>=<its default>)``."""
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for param, name in PARAMETERS.items():
        default = DEFAULTS[name]
        params.append(inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY, default=default))
    return inspect.Signature(params)


_SIGNATURE = _signature()


def _parameters_doc() -> str:
    """The numpydoc ``Parameters`` entries, from the options' declarations."""
    lines = []
    for param, name in PARAMETERS.items():
        opt = OPTIONS[name]
        kind = _TYPES.get(opt.kind) or "{" + ", ".join(repr(c) for c in opt.choices) + "}"
        if param == "random_state":
            kind = "int, RandomState instance or None"
        elif opt.optional:
            kind += " or None"
        default = _SIGNATURE.parameters[param].default
        lines.append(f"    {param} : {kind}, default={default!r}")
        note = _NOTES.get(param, f"{opt.help[0].upper()}{opt.help[1:]} (``fastes train {opt.flag}``).")
        lines.append(textwrap.fill(note, 88, initial_indent=" " * 8, subsequent_indent=" " * 8))
    return "\n".join(lines)


@contextmanager
def _numba_threads() -> Iterator[None]:
    """Numba's thread count is restored when the block ends: ``n_threads`` applies to one
    call (as scikit-learn scopes BLAS threads with threadpoolctl), not to the process."""
    before = numba.get_num_threads()
    try:
        yield
    finally:
        numba.set_num_threads(before)


class ESClassifier(ClassifierMixin, BaseEstimator):
    """Multi-layer perceptron classifier trained by an evolution strategy.

    Its parameters are the training options of ``fastes train`` (declared once, in
    :class:`fastes.config.Config`), keyword-only, with defaults for small tabular problems;
    ``random_state`` is the run seed and ``n_threads`` the Numba thread count of each
    ``fit``/``partial_fit`` call. Values are checked when fitting, as the CLI checks them.

    Parameters
    ----------
{parameters}

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

    __doc__ = __doc__.replace("{parameters}", _parameters_doc())

    def __init__(self, **params: Any) -> None:
        bound = _SIGNATURE.bind(self, **params)  # an unknown name is a TypeError, as for any function
        bound.apply_defaults()
        for param, value in list(bound.arguments.items())[1:]:
            setattr(self, param, value)

    __init__.__signature__ = _SIGNATURE  # what scikit-learn's get_params/clone read

    # ------------------------------------------------------------------ helpers

    def _config(self, seed: int) -> Config:
        """The run's :class:`Config`: every exposed option from its parameter, ``seed``
        for ``random_state``, the ``tabular`` preset for the rest (data, budget, evaluation cadence)."""
        values = {name: getattr(self, param) for param, name in PARAMETERS.items()}
        return Config(**{**PRESETS["tabular"], **values, "seed": seed})

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
        X, y = self._validate(X, y, reset=True)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        with _numba_threads():
            trainer = self._trainer(self._config(seed), X, y)
            self._set_model(trainer, trainer.run(), seed)
        return self

    def partial_fit(self, X, y, classes=None, n_generations=None):
        """Train one more epoch on (X, y): a pass over X (or ``n_generations``
        generations), continuing from the parameters, optimizer state and counters of the
        calls before (and of ``fit``).

        Each call is an epoch of ``fit``, as in scikit-learn's SGD estimators: the epoch
        and generation counters carry over, and the learning-rate and sigma schedules
        follow them exactly as in ``fit``, so ``epochs`` calls on ``fit``'s data train
        ``fit``'s model. Constant and exponential schedules have no end (an exponential
        one decays once per pass, counted across calls). A cosine schedule anneals the
        learning rate to 0 over ``epochs`` passes (its progress is the generations so far
        over ``epochs`` times the batches of a pass over X): a call stops at its end, and
        a call after its end raises ``ValueError`` (``fit`` starts again).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), numeric
        y : array-like of shape (n_samples,), any label type
        classes : array-like of shape (n_classes,), optional
            Every label, needed by the first call unless y holds them all.
        n_generations : int, optional
            Generations to train (default: one pass over X); a pass that ends starts
            the next epoch.

        Returns
        -------
        self
        """
        if n_generations is not None and (isinstance(n_generations, bool)
                                          or not isinstance(n_generations, numbers.Integral) or n_generations < 1):
            raise ConfigError(f"n_generations must be a positive integer or None, got {n_generations!r}")
        first = not hasattr(self, "classes_")
        seed = None if first else getattr(self, "seed_", None)
        if seed is None:
            seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        config = self._config(seed)
        state = None if first else self.state_
        epoch = 0 if state is None else state.epoch
        if config.lr_schedule == "cosine" and epoch >= config.epochs:
            raise ConfigError(
                f"lr_schedule='cosine' has annealed the learning rate to 0 over its epochs={config.epochs} passes, "
                "which are done; call fit to train again, or use lr_schedule='constant' or 'exponential' for "
                "open-ended training"
            )
        X, y = self._validate(X, y, reset=first)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if first:
            self.classes_ = np.unique(classes if classes is not None else y)
        n_batches = math.ceil(X.shape[0] / config.batch_size)
        if n_generations is None:
            n_generations = n_batches
        if config.lr_schedule != "cosine":  # a schedule without an end: the run's epochs end with this call
            config = config.replace(epochs=epoch + math.ceil(n_generations / n_batches))
        with _numba_threads():
            trainer = self._trainer(config, X, y)
            if state is None:
                state = trainer.initial_state()
            state.batch, state.loss_sum, state.correct, state.seen = 0, 0.0, 0, 0  # a new pass over this X
            self._set_model(trainer, trainer.run(state, max_generations=int(n_generations)), seed)
        return self

    def _validate(self, X, y="no_validation", reset: bool = False):
        """scikit-learn's checks of ``X`` (and ``y`` when given, as ``validate_data`` takes it),
        then ``X`` as float32, refusing values float32 cannot hold (the cast would overflow to
        infinity, with a warning)."""
        checked = validate_data(self, X, y, dtype=(np.float64, np.float32), reset=reset)
        with_y = not (isinstance(y, str) and y == "no_validation")
        X = checked[0] if with_y else checked
        largest = float(np.abs(X).max(initial=0.0))
        if largest > float(np.finfo(np.float32).max):
            raise ValueError(f"X holds values beyond float32's range (largest magnitude {largest:.3g}), which the model "
                             "computes in; scale the features, for example with StandardScaler")
        X = X.astype(np.float32, copy=False)
        return (X, checked[1]) if with_y else X

    def _logits(self, X) -> np.ndarray:
        check_is_fitted(self, "state_")
        X = self._validate(X, reset=False)
        return predict_logits(self.state_.theta, self.layout_, np.ascontiguousarray(X))

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (softmax of the logits), shape (n_samples, n_classes)."""
        return softmax(self._logits(X))

    def predict(self, X) -> np.ndarray:
        """Predicted labels, shape (n_samples,)."""
        best = self._logits(X).argmax(axis=1)
        return self.classes_[best]
