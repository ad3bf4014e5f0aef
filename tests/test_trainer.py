import numpy as np
import pytest

from fastes.config import preset
from fastes.trainer import Trainer

QUICK = preset("quick")


def test_digits_quick_preset_learns():
    state = Trainer(QUICK.replace(epochs=4)).run()
    final = state.history[-1]
    assert final["test_accuracy"] > 0.8  # chance is 0.1
    assert state.history[0]["test_accuracy"] < final["test_accuracy"]


def test_seed_style_sgd_mse_improves_on_digits():
    # the original's algorithm, on a dataset 40x smaller: a larger step to see it move
    cfg = preset("seed").replace(dataset="digits", epochs=30, lr=0.01)
    state = Trainer(cfg).run()
    assert state.history[-1]["test_accuracy"] > 0.4
    assert state.history[-1]["train_loss"] < state.history[0]["train_loss"]


@pytest.mark.parametrize(
    "changes",
    [
        dict(),
        dict(perturbation="lowrank", rank=2),
        dict(antithetic=False, shaping="zscore", loss="mse", optimizer="momentum"),
    ],
)
def test_numba_and_numpy_backends_follow_the_same_trajectory(changes):
    cfg = QUICK.replace(**{"epochs": 1, "shaping": "zscore", **changes})
    a = Trainer(cfg.replace(backend="numba")).run(max_generations=12)
    b = Trainer(cfg.replace(backend="numpy")).run(max_generations=12)
    assert a.generation == b.generation == 12
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-4, atol=1e-5)


def test_same_seed_same_model_other_seed_differs():
    cfg = QUICK.replace(epochs=1)
    a = Trainer(cfg).run(max_generations=20).theta
    b = Trainer(cfg).run(max_generations=20).theta
    c = Trainer(cfg.replace(seed=1)).run(max_generations=20).theta
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_threads_do_not_change_results():
    cfg = QUICK.replace(epochs=1)
    a = Trainer(cfg.replace(threads=1)).run(max_generations=15).theta
    b = Trainer(cfg.replace(threads=2)).run(max_generations=15).theta
    assert np.array_equal(a, b)


def test_pause_and_continue_equals_one_run():
    cfg = QUICK.replace(epochs=2)
    whole = Trainer(cfg).run()
    trainer = Trainer(cfg)
    part = trainer.run(max_generations=7)
    rest = Trainer(cfg).run(part)
    assert np.array_equal(whole.theta, rest.theta)


def test_max_seconds_stops_and_records():
    state = Trainer(QUICK.replace(epochs=1000, max_seconds=1.0)).run()
    assert state.epoch == 1000 and state.elapsed < 10
    assert state.history and state.history[-1]["epoch"] < 1000


def test_every_option_runs():
    for changes in (
        dict(init="glorot", optimizer="sgd", lr=0.5),
        dict(weight_decay=1e-3, lr_schedule="exponential", lr_decay=0.5, sigma_schedule="exponential", sigma_decay=0.5),
        dict(lr_schedule="cosine", shuffle=False, hidden=(8, 8)),
        dict(perturbation="lowrank", rank=4, antithetic=False, population=10),
    ):
        state = Trainer(QUICK.replace(epochs=1, **changes)).run()
        assert np.isfinite(state.theta).all() and state.history[-1]["test_accuracy"] > 0.1
