import pickle

import numba
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from fastes import ESClassifier

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


@pytest.mark.parametrize("strategy", [dict(strategy="pgpe", optimizer="clipup", lr=0.05),
                                      dict(strategy="snes", shaping="nes", optimizer="sgd", lr=1.0)],
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
        ESClassifier(**params, perturbation="lowrank").fit(X / 16, y)


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
    import warnings

    X, y = load_digits(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="beyond float32's range .*StandardScaler"):
            ESClassifier(**TINY).fit(X * 1e300, y)
        with pytest.raises(ValueError, match="outside float32's normal range"):
            ESClassifier(**{**TINY, "lr": 1e39}).fit(X, y)
