"""``ESClassifier``: an ES-trained MLP behind the scikit-learn estimator API.

Its parameters are the training options declared in :class:`fastes.config.Config` (the
``__init__`` signature is generated from those declarations), it builds the same Config as
the CLI (so the same validation) and trains with the same :class:`fastes.trainer.Trainer`
and kernels; nothing of the algorithm is repeated here.
"""

from __future__ import annotations

import dataclasses
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
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from .backends import predict_logits
from .config import (FRACTION, MAX_POPULATION, MIN_POPULATION, OPTIONS, PARAMETERS_PER_MEMBER, PRESETS, Config,
                     Option, check_value, sized_population)
from .io.data import Dataset
from .errors import ConfigError
from .cli.evaluate import softmax
from .layout import ParamLayout
from .memory import check_fits
from .trainer import Trainer

#: Estimator parameter -> :class:`Config` field, for every option the estimator exposes.
PARAMETERS: dict[str, str] = {opt.parameter: name for name, opt in OPTIONS.items() if opt.parameter}

#: Options whose estimator default is None, "sized to the data" when ``fit`` sees it (see
#: :func:`fastes.config.sized_population` and :func:`sized_epochs`); a value given is used as it is.
SIZED = ("population", "epochs")

#: The estimator's starting point, by :class:`Config` field: the ``tabular`` preset, with no
#: fixed seed (``random_state=None``, scikit-learn's convention) and the :data:`SIZED` options None.
DEFAULTS: dict[str, Any] = {**asdict(Config(**PRESETS["tabular"])), "seed": None, **dict.fromkeys(SIZED)}

#: ``epochs=None``: at least this many generations, however few rows a pass has ...
MIN_GENERATIONS = 120
#: ... and at least the ``tabular`` preset's passes.
MIN_EPOCHS: int = PRESETS["tabular"]["epochs"]
#: Standardised inputs are clipped to this many standard deviations.
CLIP = 3.0
#: ``n_threads=None``: generations of less work than this (members x batch rows x parameters)
#: run on one thread, larger ones on every core.
SHARED_WORK = 2**27


def sized_epochs(n_rows: int, batch_size: int) -> int:
    """``epochs=None``: :data:`MIN_EPOCHS` passes over ``n_rows`` rows, or more where those
    would be fewer than :data:`MIN_GENERATIONS` generations (a small table has few batches
    a pass, and an ES needs generations, not passes)."""
    return max(MIN_EPOCHS, math.ceil(MIN_GENERATIONS / math.ceil(n_rows / batch_size)))


#: The estimator's own parameters, declared as the options are (the CLI has no use for them: its
#: data are images on one scale, with a test split of their own): how ``fit`` prepares X and
#: when it stops. Parameter -> (default, declaration).
OWN: dict[str, tuple[Any, Option]] = {name: (default, dataclasses.replace(opt, name=name, estimator=name)) for
                                      name, (default, opt) in {
    "scale_inputs": (True, Option(
        f"standardise each feature with the mean and standard deviation of the X that fit (or the first "
        f"partial_fit) sees, clipped to ±{CLIP:g} standard deviations, in fit and predict alike (a constant "
        "feature becomes 0); off: X as given", "bool")),
    "early_stopping": (False, Option(
        "hold out validation_fraction of the rows (stratified) and stop when their accuracy has not improved for "
        "n_iter_no_change epochs, keeping the best model; epochs stays the most it trains (partial_fit ignores "
        "it)", "bool")),
    "validation_fraction": (0.1, Option("share of the rows early_stopping holds out", "float", interval=FRACTION)),
    "n_iter_no_change": (10, Option("epochs without a better validation accuracy before early_stopping stops",
                                    "int")),
}.items()}

#: What a parameter means here where that differs from the option's help.
_NOTES = {
    "random_state": "Seeds the run: an int (the same model each fit), a RandomState, or None (a new seed from "
                    "NumPy's global random state each fit). Initial weights, noise, batch order and the "
                    "early-stopping split follow from it.",
    "n_threads": "Numba threads of each fit and partial_fit call, restored when it returns. None: every core, or "
                 f"one where a generation is small (members x batch rows x parameters below "
                 f"2**{SHARED_WORK.bit_length() - 1}): threads that "
                 "share a small generation wait on each other at every kernel, for longer than they work when the "
                 "cores have other work (other fits of a cross-validation, say).",
    "population": f"Members per generation (``fastes train --population``). None: sized to the network, one "
                  f"member per {PARAMETERS_PER_MEMBER} parameters rounded up to an even number, from "
                  f"{MIN_POPULATION} to {MAX_POPULATION}.",
    "epochs": f"Passes over the training data, and the length of a cosine lr schedule (``fastes train --epochs``). "
              f"None: {MIN_EPOCHS} passes, or as many as {MIN_GENERATIONS} generations need where a pass has few "
              "batches (a small table).",
}
_TYPES = {"int": "int", "float": "float", "bool": "bool", "text": "str", "hidden": "tuple of int"}


def _signature() -> inspect.Signature:
    """``__init__(self, *, <every exposed option>=<its default>, <the estimator's own>=<its default>)``."""
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    defaults = {**{param: DEFAULTS[name] for param, name in PARAMETERS.items()},
                **{param: default for param, (default, _) in OWN.items()}}
    for param, default in defaults.items():
        params.append(inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY, default=default))
    return inspect.Signature(params)


_SIGNATURE = _signature()


def _parameters_doc() -> str:
    """The numpydoc ``Parameters`` entries, from the options' declarations."""
    lines = []
    declared = [(param, OPTIONS[name]) for param, name in PARAMETERS.items()] + [(p, o) for p, (_, o) in OWN.items()]
    for param, opt in declared:
        kind = _TYPES.get(opt.kind) or "{" + ", ".join(repr(c) for c in opt.choices) + "}"
        if param == "random_state":
            kind = "int, RandomState instance or None"
        elif opt.optional or opt.name in SIZED:
            kind += " or None"
        default = _SIGNATURE.parameters[param].default
        lines.append(f"    {param} : {kind}, default={default!r}")
        flag = f" (``fastes train {opt.flag}``)" if param not in OWN else ""
        note = _NOTES.get(param, f"{opt.help[0].upper()}{opt.help[1:]}{flag}.")
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


class _EarlyStopping:
    """``on_epoch`` of a run with ``early_stopping``: the validation accuracy of each epoch
    (the run's test split is the held-out rows), the best model so far, and a stop request
    to ``trainer`` once ``patience`` epochs have not bettered it."""

    def __init__(self, trainer: Trainer, patience: int):
        self.trainer, self.patience = trainer, patience
        self.scores: list[float] = []
        self.best_theta: np.ndarray | None = None
        self.waited = 0

    def __call__(self, state) -> None:
        score = state.history[-1]["test_accuracy"]
        if not self.scores or score > max(self.scores):
            self.best_theta, self.waited = state.theta.copy(), 0
        else:
            self.waited += 1
            self.trainer.stop_requested = self.waited >= self.patience
        self.scores.append(score)


class ESClassifier(ClassifierMixin, BaseEstimator):
    """Multi-layer perceptron classifier trained by an evolution strategy.

    Its parameters are the training options of ``fastes train`` (declared once, in
    :class:`fastes.config.Config`), keyword-only, with defaults for small tabular problems,
    then its own: input scaling and early stopping. ``random_state`` is the run seed and
    ``n_threads`` the Numba thread count of each ``fit``/``partial_fit`` call; ``population``
    and ``epochs`` are sized to the data unless given. Values are checked when fitting, as
    the CLI checks them.

    Parameters
    ----------
{parameters}

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,), when X has string column names
    input_mean_, input_scale_ : ndarray of shape (n_features_in_,), or None
        What ``scale_inputs`` subtracts from each feature and divides it by (None: off).
    coefs_ : list of ndarray, ``W0 (n_features, h1), W1 (h1, h2), ...``
        On the scaled inputs where ``scale_inputs`` is on.
    intercepts_ : list of ndarray
    config_ : Config
        The configuration the last ``fit`` or ``partial_fit`` call trained with: every
        option, ``population`` and ``epochs`` as sized to the data.
    n_generations_ : int
        Generations trained so far (``fit`` plus every ``partial_fit``).
    history_ : list of dict
        Per-epoch training loss and accuracy (with ``early_stopping``, the test columns are
        the held-out rows').
    validation_scores_ : list of float, or None
        With ``early_stopping``, the held-out rows' accuracy after each epoch of ``fit``.
    best_validation_score_ : float or None
        With ``early_stopping``, the best of them: that epoch's model is the one kept.
    """

    __doc__ = __doc__.replace("{parameters}", _parameters_doc())

    def __init__(self, **params: Any) -> None:
        bound = _SIGNATURE.bind(self, **params)  # an unknown name is a TypeError, as for any function
        bound.apply_defaults()
        for param, value in list(bound.arguments.items())[1:]:
            setattr(self, param, value)

    __init__.__signature__ = _SIGNATURE  # what scikit-learn's get_params/clone read

    # ------------------------------------------------------------------ helpers

    def _own(self, param: str) -> Any:
        """The estimator's own parameter ``param``, checked as it is declared."""
        return check_value(OWN[param][1], getattr(self, param))

    def _config(self, seed: int, n_rows: int, n_features: int) -> Config:
        """The run's :class:`Config` on ``n_rows`` training rows of ``n_features`` features:
        every exposed option from its parameter (the :data:`SIZED` ones, when None, sized to
        the data; ``n_threads`` None one thread for a small generation, :data:`SHARED_WORK`),
        ``seed`` for ``random_state``, the ``tabular`` preset for the rest (data, budget,
        evaluation cadence)."""
        values = {name: getattr(self, param) for param, name in PARAMETERS.items()}
        config = Config(**{**PRESETS["tabular"], **{k: v for k, v in values.items() if v is not None}, "seed": seed})
        layout = ParamLayout.for_mlp(n_features, config.hidden, len(self.classes_))
        if values["population"] is None:
            config = config.replace(population=sized_population(layout.size))
        if values["epochs"] is None:
            config = config.replace(epochs=sized_epochs(n_rows, config.batch_size))
        if values["threads"] is None and config.population * min(config.batch_size, n_rows) * layout.size < SHARED_WORK:
            config = config.replace(threads=1)
        return config

    def _dataset(self, X, y, X_test, y_test) -> Dataset:
        n = X.shape[1]
        return Dataset("array", X, y, X_test, y_test, len(self.classes_), (1, n))

    def _trainer(self, config: Config, X, y, X_test=None, y_test=None) -> Trainer:
        """A trainer for (X, y) (and held-out rows as its test split), once the run is known
        to fit in memory."""
        if X_test is None:
            X_test, y_test = np.zeros((0, X.shape[1]), dtype=np.float32), np.zeros(0, y.dtype)
        dataset = self._dataset(np.ascontiguousarray(X), self._encode(y),
                                np.ascontiguousarray(X_test), self._encode(y_test))
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
        self.config_ = trainer.config
        self.layout_ = trainer.layout
        self.state_ = state
        layers = trainer.layout.unpack(state.theta)
        self.coefs_ = [w.copy() for w, _ in layers]
        self.intercepts_ = [b.copy() for _, b in layers]
        self.n_generations_ = state.generation
        self.history_ = list(state.history)

    def _fit_scaling(self, X) -> None:
        """Learn ``scale_inputs``'s centre and scale per feature from ``X`` (None: off)."""
        self.input_mean_ = self.input_scale_ = None
        if self._own("scale_inputs"):
            # moments of X over its largest magnitude: squares of any finite float64 stay finite
            peak = np.abs(X).max(axis=0).astype(np.float64)
            peak[peak == 0] = 1.0
            unit = X / peak
            mean, std = unit.mean(axis=0), unit.std(axis=0)
            self.input_mean_ = mean * peak
            # a feature constant up to rounding is divided by 1, as StandardScaler does
            self.input_scale_ = np.where(std < 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1), 1.0,
                                         std * peak)

    def _split(self, X, y, seed: int):
        """``(X, y, X_val, y_val)``: with ``early_stopping``, ``validation_fraction`` of the
        rows held out, stratified by class; without, no rows."""
        if not self._own("early_stopping"):
            return X, y, None, None
        fraction = self._own("validation_fraction")
        try:
            X, X_val, y, y_val = train_test_split(X, y, test_size=fraction, stratify=y, random_state=seed)
        except ValueError as exc:
            raise ValueError(f"early_stopping cannot hold out validation_fraction={fraction:g} of {len(y)} rows "
                             f"stratified by class ({exc}); raise validation_fraction, or fit without "
                             "early_stopping") from None
        return X, y, X_val, y_val

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
        own = {param: self._own(param) for param in OWN}
        X, y = self._validate(X, y, reset=True)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        self._fit_scaling(X)
        X = self._inputs(X)
        seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        X, y, X_val, y_val = self._split(X, y, seed)
        config = self._config(seed, X.shape[0], X.shape[1])
        with _numba_threads():
            trainer = self._trainer(config, X, y, X_val, y_val)
            stopping = _EarlyStopping(trainer, own["n_iter_no_change"]) if X_val is not None else None
            state = trainer.run(on_epoch=stopping)
            if stopping is not None and stopping.best_theta is not None:
                state.theta = stopping.best_theta
            self._set_model(trainer, state, seed)
        self.validation_scores_ = None if stopping is None else stopping.scores
        self.best_validation_score_ = None if stopping is None or not stopping.scores else max(stopping.scores)
        return self

    def partial_fit(self, X, y, classes=None, n_generations=None):
        """Train one more epoch on (X, y): a pass over X (or ``n_generations``
        generations), continuing from the parameters, optimizer state and counters of the
        calls before (and of ``fit``).

        Each call is an epoch of ``fit``, as in scikit-learn's SGD estimators: the epoch
        and generation counters carry over, and the learning-rate and sigma schedules
        follow them exactly as in ``fit``, so ``epochs`` calls on ``fit``'s data train
        ``fit``'s model (without ``early_stopping``, which partial_fit ignores). Constant
        and exponential schedules have no end (an exponential one decays once per pass,
        counted across calls). A cosine schedule anneals the learning rate to 0 over
        ``epochs`` passes (its progress is the generations so far over ``epochs`` times the
        batches of a pass over X; ``epochs=None`` sizes them to this X): a call stops at its
        end, and a call after its end raises ``ValueError`` (``fit`` starts again). The
        first call learns ``scale_inputs``'s scaling; later calls keep it.

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
        for param in OWN:
            self._own(param)
        first = not hasattr(self, "classes_")
        X, y = self._validate(X, y, reset=first)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if first:
            self.classes_ = np.unique(classes if classes is not None else y)
            self._fit_scaling(X)
            self.validation_scores_ = self.best_validation_score_ = None
        seed = None if first else getattr(self, "seed_", None)
        if seed is None:
            seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        config = self._config(seed, X.shape[0], X.shape[1])
        state = None if first else self.state_
        epoch = 0 if state is None else state.epoch
        if config.lr_schedule == "cosine" and epoch >= config.epochs:
            raise ConfigError(
                f"lr_schedule='cosine' has annealed the learning rate to 0 over its epochs={config.epochs} passes, "
                "which are done; call fit to train again, or use lr_schedule='constant' or 'exponential' for "
                "open-ended training"
            )
        X = self._inputs(X)
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
        """scikit-learn's checks of ``X`` (and ``y`` when given, as ``validate_data`` takes it)."""
        return validate_data(self, X, y, dtype=(np.float64, np.float32), reset=reset)

    def _inputs(self, X) -> np.ndarray:
        """Checked ``X`` as the model reads it: scaled as fitted (``scale_inputs``), as
        float32, refusing values float32 cannot hold (the cast would overflow to infinity,
        with a warning)."""
        if getattr(self, "input_mean_", None) is not None:
            with np.errstate(over="ignore"):  # a value that overflows is far outside the clip, where it ends
                X = np.clip((X - self.input_mean_) / self.input_scale_, -CLIP, CLIP)
        largest = float(np.abs(X).max(initial=0.0))
        if largest > float(np.finfo(np.float32).max):
            raise ValueError(f"X holds values beyond float32's range (largest magnitude {largest:.3g}), which the model "
                             "computes in; scale the features, for example with scale_inputs=True")
        return np.ascontiguousarray(X, dtype=np.float32)

    def _logits(self, X) -> np.ndarray:
        check_is_fitted(self, "state_")
        X = self._inputs(self._validate(X, reset=False))
        return predict_logits(self.state_.theta, self.layout_, X)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (softmax of the logits), shape (n_samples, n_classes)."""
        return softmax(self._logits(X))

    def predict(self, X) -> np.ndarray:
        """Predicted labels, shape (n_samples,)."""
        best = self._logits(X).argmax(axis=1)
        return self.classes_[best]
