"""Networks and objectives backpropagation cannot train: binary neurons (sign, step) and the
error rate itself (the zero-one loss), through the trainer, the CLI, the model file and
``fastes evaluate``. The kernels' new paths are in test_kernels' table, the ties of rank
shaping in test_strategy."""

import json

import numpy as np
import pytest

from fastes.cli.evaluate import evaluate_model
from fastes.config import preset
from fastes.io.checkpoints import load_model
from fastes.trainer import Trainer

#: A sign network on the digits that learns in a second (tested settings, not the binary preset).
SIGN = preset("quick").replace(hidden=(64,), activation="sign", loss="zero-one", population=256, sigma=0.2, lr=0.1)


@pytest.mark.parametrize("perturbation", ["full", "lowrank"])
@pytest.mark.parametrize("activation", ["sign", "step"])
def test_binary_networks_learn_the_error_rate(activation, perturbation):
    state = Trainer(SIGN.replace(activation=activation, perturbation=perturbation, epochs=3)).run()
    final = state.history[-1]
    assert final["test_accuracy"] > 0.4  # chance is 0.1
    # the reported training loss is the chosen loss: the error rate of the batches
    assert final["train_loss"] == pytest.approx(1.0 - final["train_accuracy"], abs=1e-9)


@pytest.mark.parametrize("perturbation", ["full", "lowrank"])
def test_binary_runs_are_exact_for_any_threads_and_pauses(perturbation):
    cfg = SIGN.replace(perturbation=perturbation, epochs=2)
    whole = Trainer(cfg.replace(threads=1)).run()
    threaded = Trainer(cfg.replace(threads=2)).run()
    rest = Trainer(cfg).run(Trainer(cfg).run(max_generations=9))
    assert np.array_equal(whole.theta, threaded.theta) and np.array_equal(whole.theta, rest.theta)


def test_tanh_follows_the_same_trajectory_on_both_backends():
    # tanh is smooth, so float rounding cannot flip a unit: the NumPy reference retraces the kernels
    cfg = preset("quick").replace(activation="tanh", epochs=1)
    a = Trainer(cfg.replace(backend="numba")).run(max_generations=12)
    b = Trainer(cfg.replace(backend="numpy")).run(max_generations=12)
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-4, atol=1e-5)


def test_binary_model_file_is_binary_and_evaluate_reproduces_it(tmp_path, run_cli):
    out = tmp_path / "run"
    args = ["train", "--preset", "quick", "--hidden", "64", "--activation", "step", "--loss", "zero-one",
            "--population", "256", "--sigma", "0.2", "--lr", "0.1", "--epochs", "2", "--out", str(out), "--quiet"]
    assert run_cli(args)[0] == 0
    layout, _, config, _ = load_model(out / "model.npz")
    assert layout.activation == config["activation"] == "step"
    result = evaluate_model(out / "model.npz")
    summary = json.loads((out / "summary.json").read_text())
    assert result["binary"] and set(result["hidden_values"]) <= {0.0, 1.0}
    assert result["test_accuracy"] == summary["final"]["test_accuracy"]
    assert result["reference_accuracy"] == pytest.approx(result["test_accuracy"], abs=2 / result["n_test"])
    assert result["loss_function"] == "zero-one"
    assert result["test_loss"] == pytest.approx(1.0 - result["test_accuracy"])


def test_relu_models_report_no_binary_check(tmp_path, run_cli):
    out = tmp_path / "run"
    assert run_cli(["train", "--preset", "quick", "--epochs", "1", "--out", out, "--quiet"])[0] == 0
    result = evaluate_model(out / "model.npz")
    assert result["activation"] == "relu" and "hidden_values" not in result


def test_estimator_trains_sign_neurons():
    from sklearn.datasets import load_digits

    from fastes import ESClassifier

    x, y = load_digits(return_X_y=True)
    clf = ESClassifier(hidden=(64,), activation="sign", loss="zero-one", population=256, sigma=0.2, lr=0.1,
                       epochs=3, random_state=0).fit(x[:1200] / 16, y[:1200])
    assert clf.layout_.activation == "sign"
    assert clf.score(x[1200:] / 16, y[1200:]) > 0.4
