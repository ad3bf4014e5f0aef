import math
import pickle
import warnings

import numba
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from fastes import ESClassifier
from fastes.estimator import MIN_GENERATIONS, sized_epochs, sized_population

SMALL = dict(hidden=(16,), population=32, epochs=30, batch_size=32, lr=0.03, sigma=0.05, random_state=0)

# Every check applies and runs (pandas, in the dev extra, enables the DataFrame ones).
@parametrize_with_checks([ESClassifier(**SMALL)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_labels_of_any_type_and_attributes():
    X, y = load_digits(return_X_y=True)
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    clf = ESClassifier(**{**SMALL, "epochs": 5}).fit(X / 16, names[y])
    assert clf.classes_.tolist() == sorted(names.tolist())
    assert clf.n_features_in_ == 64
    assert set(clf.predict(X[:20] / 16)) <= set(names)
    proba = clf.predict_proba(X[:20] / 16)
    assert proba.shape == (20, 10) and np.allclose(proba.sum(axis=1), 1)
    assert [w.shape for w in clf.coefs_] == [(64, 16), (16, 10)]


def test_partial_fit_continues():
    X, y = load_digits(return_X_y=True)
    X = X / 16
    clf = ESClassifier(**SMALL)
    clf.partial_fit(X, y, classes=np.arange(10), n_generations=5)
    assert clf.n_generations_ == 5
    before = clf.score(X, y)
    for _ in range(6):
        clf.partial_fit(X, y)
    assert clf.n_generations_ == 5 + 6 * 57  # ceil(1797 / 32) batches per pass
    assert clf.score(X, y) > before


def test_pickle_roundtrip():
    X, y = load_digits(return_X_y=True)
    clf = ESClassifier(**{**SMALL, "epochs": 3}).fit(X / 16, y)
    clone = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(clone.predict_proba(X / 16), clf.predict_proba(X / 16))


def test_pipeline_grid_search_on_digits():
    X, y = load_digits(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), ESClassifier(hidden=(32,), population=128, epochs=12, lr=0.01, random_state=0))
    search = GridSearchCV(pipe, {"esclassifier__sigma": [0.02, 0.1]}, cv=3)
    search.fit(X, y)
    assert search.best_score_ >= 0.90, search.cv_results_["mean_test_score"]


def test_invalid_hyperparameter_is_a_value_error():
    with pytest.raises(ValueError, match="sigma must be positive"):
        ESClassifier(sigma=-1).fit(np.zeros((4, 2)), [0, 1, 0, 1])


@pytest.mark.parametrize("strategy", [dict(strategy="pgpe", perturbation="full", optimizer="clipup", lr=0.05),
                                      dict(strategy="snes", perturbation="full", shaping="nes", optimizer="sgd", lr=1.0)],
                         ids=["pgpe", "snes"])
def test_learned_sigma_strategies_fit_and_partial_fit_continues(strategy):
    """partial_fit carries the standard deviations from call to call: epochs calls train fit's model."""
    X, y = load_digits(return_X_y=True)
    params = {**SMALL, "epochs": 3, **strategy}
    fitted = ESClassifier(**params).fit(X / 16, y)
    stepped = ESClassifier(**params)
    for _ in range(3):
        stepped.partial_fit(X / 16, y, classes=np.arange(10))
    assert stepped.state_.sigma.shape == (64 * 16 + 16 + 16 * 10 + 10,)
    np.testing.assert_array_equal(stepped.state_.sigma, fitted.state_.sigma)
    np.testing.assert_array_equal(stepped.coefs_[0], fitted.coefs_[0])
    assert fitted.score(X / 16, y) > 0.5
    with pytest.raises(ValueError, match="full-rank noise"):
        ESClassifier(**{**params, "perturbation": "lowrank"}).fit(X / 16, y)


# --------------------------------------------------------------------------- options reach the fit

TINY = dict(hidden=(16,), population=32, epochs=3, batch_size=64, lr=0.03, sigma=0.05, random_state=0)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X / 16, y


def _same_model(a: ESClassifier, b: ESClassifier) -> bool:
    return all(np.array_equal(p, q) for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_))


def test_estimator_exponential_schedule_decays(digits):
    X, y = digits
    constant = ESClassifier(**TINY).fit(X, y)
    decayed = ESClassifier(**TINY, lr_schedule="exponential", lr_decay=0.5).fit(X, y)
    assert not _same_model(constant, decayed)




@pytest.mark.parametrize("schedule", [dict(lr_schedule="cosine"),
                                      dict(lr_schedule="exponential", lr_decay=0.5,
                                           sigma_schedule="exponential", sigma_decay=0.5)])
def test_epochs_partial_fits_train_the_model_fit_trains(digits, schedule):
    X, y = digits
    fitted = ESClassifier(**TINY, **schedule).fit(X, y)
    stepped = ESClassifier(**TINY, **schedule)
    for _ in range(TINY["epochs"]):
        stepped.partial_fit(X, y, classes=np.arange(10))
    assert stepped.n_generations_ == fitted.n_generations_ == 3 * 29  # ceil(1797 / 64) batches per pass
    assert _same_model(stepped, fitted)


def test_partial_fit_ends_with_the_cosine_schedule(digits):
    X, y = digits
    clf = ESClassifier(**TINY, lr_schedule="cosine")
    clf.partial_fit(X, y, classes=np.arange(10), n_generations=10**6)
    assert clf.n_generations_ == 3 * 29  # it stops where the schedule ends
    with pytest.raises(ValueError, match="cosine.*epochs=3.*call fit"):
        clf.partial_fit(X, y)
    clf.set_params(lr_schedule="constant").partial_fit(X, y)  # open-ended schedules go on
    assert clf.n_generations_ == 4 * 29


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads to see a change")
def test_n_threads_applies_to_the_call_only(digits):
    X, y = digits
    try:
        numba.set_num_threads(2)
        ESClassifier(**{**TINY, "epochs": 1}, n_threads=1).fit(X, y)
        assert numba.get_num_threads() == 2
        numba.set_num_threads(1)
        clf = ESClassifier(**{**TINY, "epochs": 1}, n_threads=None).partial_fit(X, y, classes=np.arange(10))
        assert numba.get_num_threads() == 1
        with pytest.raises(ValueError, match="threads=99"):
            clf.set_params(n_threads=99).partial_fit(X, y)
        assert numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


def test_values_beyond_float32_are_refused_without_a_warning():
    X, y = load_digits(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="beyond float32's range .*scale_inputs=True"):
            ESClassifier(**TINY, scale_inputs=False).fit(X * 1e300, y)
        scaled = ESClassifier(**TINY).fit(X * 1e300, y)  # standardised first: the scale of X is gone
        assert np.mean(scaled.predict(X * 1e300) == ESClassifier(**TINY).fit(X, y).predict(X)) > 0.99
        with pytest.raises(ValueError, match="outside float32's normal range"):
            ESClassifier(**{**TINY, "lr": 1e39}).fit(X, y)


# --------------------------------------------------------------------------- defaults that fit the data (issue 26)


@pytest.mark.parametrize("load", [load_iris, load_wine, load_breast_cancer], ids=["iris", "wine", "breast_cancer"])
def test_a_default_estimator_learns_small_tables_as_mlpclassifier_does(load):
    """5-fold accuracy of ESClassifier(random_state=0) within a few points of
    MLPClassifier(random_state=0), both with defaults, on the raw features (wine's span
    0.1 to 1680: ESClassifier scales them itself)."""
    X, y = load(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = cross_val_score(MLPClassifier(random_state=0), X, y, cv=5).mean()
    es = cross_val_score(ESClassifier(random_state=0), X, y, cv=5).mean()
    assert es >= mlp - 0.03, (es, mlp)
    assert es >= 0.94, es


def test_scaling_is_learned_in_fit_applied_in_predict_and_can_be_turned_off():
    X, y = load_wine(return_X_y=True)
    X = np.column_stack([X, np.full(len(X), 7.0)])  # a constant feature: divided by 1, not by 0
    clf = ESClassifier(**TINY).fit(X, y)
    np.testing.assert_allclose(clf.input_mean_, X.mean(axis=0))
    np.testing.assert_allclose(clf.input_scale_[:-1], X[:, :-1].std(axis=0))
    assert clf.input_scale_[-1] == 1.0
    scaled = np.clip((X - clf.input_mean_) / clf.input_scale_, -3, 3)
    same = ESClassifier(**TINY, scale_inputs=False).fit(scaled, y)
    np.testing.assert_array_equal(same.predict_proba(scaled), clf.predict_proba(X))
    assert same.input_mean_ is None and same.input_scale_ is None
    clone = pickle.loads(pickle.dumps(clf))  # the scaling travels with the model
    np.testing.assert_array_equal(clone.predict_proba(X), clf.predict_proba(X))


def test_partial_fit_keeps_the_first_calls_scaling(digits):
    X, y = digits
    clf = ESClassifier(**TINY).partial_fit(X[:900], y[:900], classes=np.arange(10))
    mean = clf.input_mean_.copy()
    clf.partial_fit(X[900:] * 2, y[900:])
    np.testing.assert_array_equal(clf.input_mean_, mean)


def test_sized_defaults_and_given_values():
    """population and epochs None are sized to the data; given, they are used as they are."""
    X, y = load_iris(return_X_y=True)
    sized = ESClassifier(random_state=0).fit(X, y)
    n_params = 4 * 32 + 32 + 32 * 3 + 3
    assert sized.config_.population == sized_population(n_params)
    assert sized.config_.epochs == sized_epochs(150, 64)
    assert sized.n_generations_ >= MIN_GENERATIONS
    given = ESClassifier(random_state=0, population=8, epochs=2).fit(X, y)
    assert (given.config_.population, given.config_.epochs, given.n_generations_) == (8, 2, 2 * 3)


def test_early_stopping_keeps_the_best_validation_model():
    X, y = load_breast_cancer(return_X_y=True)
    clf = ESClassifier(random_state=0, epochs=60, early_stopping=True, n_iter_no_change=3).fit(X, y)
    scores = clf.validation_scores_
    assert len(scores) < 60  # stopped before its epochs
    assert clf.best_validation_score_ == max(scores)
    assert all(s <= max(scores) for s in scores[-3:]) and scores.index(max(scores)) == len(scores) - 4
    assert clf.history_[-1]["test_accuracy"] == scores[-1]  # the held-out rows are the run's test split
    assert clf.n_generations_ == len(scores) * math.ceil(round(0.9 * len(y)) / 64)
    assert clf.score(X, y) > 0.9
    assert ESClassifier(random_state=0, epochs=2).fit(X, y).validation_scores_ is None
