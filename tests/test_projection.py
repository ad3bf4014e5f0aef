"""``--pca K``: the network trains on the images' principal coordinates. The kernels against
their NumPy twins, the directions against NumPy's PCA, and the option through the trainer,
the CLI, the model file, ``fastes evaluate`` and ``fastes predict``."""

import json

import numpy as np
import pytest

from fastes.backends.kernels.inputs import _gram, _project_rows
from fastes.backends.workspace import dense_to_csr
from fastes.cli.evaluate import evaluate_model, predict_images
from fastes.config import ConfigError, preset
from fastes.errors import ModelFileError
from fastes.io.checkpoints import load_model, save_model
from fastes.io.projection import Projection, principal_directions, project_rows
from fastes.memory import run_bytes
from fastes.trainer import Trainer

#: The quick preset on 20 principal coordinates of the digits' 64 pixels.
PCA = preset("quick").replace(pca=20)


def sparse_rows(seed: int, n: int = 57, d: int = 23) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[rng.random((n, d)) < 0.6] = 0.0
    x[3] = 0.0  # an empty row
    return x


@pytest.mark.parametrize("seed", [0, 1])
def test_gram_kernel_matches_numpy(seed):
    x = sparse_rows(seed)
    gram = np.zeros((x.shape[1],) * 2)
    _gram(*dense_to_csr(x), gram)
    twin = x.astype(np.float64).T @ x.astype(np.float64)
    np.testing.assert_allclose(gram + np.triu(gram, 1).T, np.triu(twin) + np.triu(twin, 1).T, rtol=1e-12, atol=1e-12)
    assert not np.tril(gram, -1).any()  # one triangle only


@pytest.mark.parametrize("seed", [0, 1])
def test_projection_kernel_matches_numpy(seed):
    x = sparse_rows(seed)
    rng = np.random.default_rng(seed + 10)
    components = rng.standard_normal((x.shape[1], 7)).astype(np.float32)
    offset = rng.standard_normal(7).astype(np.float32)
    out = np.full((x.shape[0], 7), np.nan, dtype=np.float32)
    _project_rows(*dense_to_csr(x), components, offset, out)
    np.testing.assert_allclose(out, x @ components - offset, rtol=1e-5, atol=1e-5)


def test_principal_directions_are_numpys_pca():
    x = sparse_rows(2, n=300, d=12)
    p = principal_directions(dense_to_csr(x), 12, 5)
    assert p.components.dtype == p.mean.dtype == np.float32 and p.components.shape == (12, 5)
    np.testing.assert_allclose(p.mean, x.mean(axis=0), rtol=1e-5, atol=1e-6)
    _, vectors = np.linalg.eigh(np.cov(x.astype(np.float64), rowvar=False, bias=True))
    top = vectors[:, ::-1][:, :5]
    # the same directions (up to sign), orthonormal, each signed by its largest entry
    np.testing.assert_allclose(np.abs(top.T @ p.components), np.eye(5), atol=1e-5)
    np.testing.assert_allclose(p.components.T @ p.components, np.eye(5), atol=1e-5)
    assert (p.components[np.abs(p.components).argmax(axis=0), np.arange(5)] > 0).all()
    coords = project_rows(dense_to_csr(x), p)
    np.testing.assert_allclose(coords, (x - x.mean(axis=0)) @ p.components, rtol=1e-4, atol=1e-5)
    assert np.all(np.diff(coords.var(axis=0)) <= 1e-6)  # largest variance first


@pytest.mark.parametrize("k", [0, 13])
def test_more_directions_than_features_is_refused(k):
    with pytest.raises(ConfigError, match=f"--pca {k} is not a number of principal directions of data with 12"):
        principal_directions(dense_to_csr(sparse_rows(0)[:, :12]), 12, k)


def test_pca_runs_learn_and_are_exact_for_any_threads_and_pauses():
    cfg = PCA.replace(epochs=2)
    whole = Trainer(cfg.replace(threads=1)).run()
    threaded = Trainer(cfg.replace(threads=2)).run()
    rest = Trainer(cfg).run(Trainer(cfg).run(max_generations=9))
    assert np.array_equal(whole.theta, threaded.theta) and np.array_equal(whole.theta, rest.theta)
    assert whole.history[-1]["test_accuracy"] > 0.8
    assert Trainer(cfg).layout.dims == (20, 32, 10)


def test_pca_with_shift_moves_then_projects_each_epoch():
    cfg = PCA.replace(shift=1, epochs=2)
    trainer = Trainer(cfg)
    unmoved = trainer.inputs.x_train.copy()
    moved = trainer.shifted.out
    before = moved.copy()
    trainer.shifted.set_epoch(1)
    # the backend's rows are the moved coordinates, rewritten in place; the model is scored unmoved
    assert np.shares_memory(trainer.backend.csr[2], moved) and not np.array_equal(before, moved)
    assert np.array_equal(moved, project_rows(trainer.shifted.rows.csr(), trainer.projection))
    assert np.array_equal(trainer.inputs.x_train, unmoved) and not np.array_equal(moved, unmoved)
    theta = trainer.initial_state().theta
    assert trainer.evaluate(theta, "train") == Trainer(cfg.replace(shift=0)).evaluate(theta, "train")
    a, b = Trainer(cfg.replace(threads=1)).run(), Trainer(cfg.replace(threads=2)).run()
    assert np.array_equal(a.theta, b.theta)


def test_pca_model_file_evaluates_and_predicts_on_images(tmp_path, run_cli):
    out = tmp_path / "run"
    assert run_cli(["train", "--preset", "quick", "--pca", "20", "--epochs", "2", "--out", out, "--quiet"])[0] == 0
    layout, _, config, projection = load_model(out / "model.npz")
    assert config["pca"] == 20 and layout.dims[0] == 20 and projection.components.shape == (64, 20)
    summary = json.loads((out / "summary.json").read_text())
    assert evaluate_model(out / "model.npz")["test_accuracy"] == summary["final"]["test_accuracy"]
    from PIL import Image
    from sklearn.datasets import load_digits

    image = load_digits().images[0]  # a 0
    Image.fromarray((image * 255 / 16).astype(np.uint8)).save(tmp_path / "zero.png")
    assert predict_images(out / "model.npz", [str(tmp_path / "zero.png")])[0]["label"] == 0


@pytest.mark.parametrize("drop, words", [
    (("pca_mean",), "has one of pca_mean and pca_components"),
    ((), "do not fit its first layer"),
])
def test_damaged_pca_arrays_are_refused(tmp_path, drop, words):
    layout = Trainer(PCA).layout
    theta = np.zeros(layout.size, np.float32)
    wrong = Projection(np.zeros(64, np.float32), np.zeros((64, 19), np.float32))  # one direction short
    save_model(tmp_path / "m.npz", layout, theta, PCA.to_dict(), wrong)
    arrays = dict(np.load(tmp_path / "m.npz"))
    if drop:
        arrays["pca_components"] = np.zeros((64, 20), np.float32)
        for name in drop:
            del arrays[name]
    np.savez(tmp_path / "m.npz", **arrays)
    with pytest.raises(ModelFileError, match=words):
        load_model(tmp_path / "m.npz")


def test_memory_estimate_counts_the_coordinates():
    pixels = run_bytes(preset("default").replace(pca=0), 60000, 10000, 784, 10, nnz=9_000_000)
    pca = run_bytes(preset("default").replace(pca=100), 60000, 10000, 784, 10, nnz=9_000_000)
    assert pixels["principal coordinates"] == 0 and pca["principal coordinates"] > 70000 * 100 * 8
    assert pca["parameters and optimizer state"] < pixels["parameters and optimizer state"] / 5
    unmoved = run_bytes(preset("default").replace(pca=100, shift=0), 60000, 10000, 784, 10, nnz=9_000_000)
    assert pca["principal coordinates"] - unmoved["principal coordinates"] == 4 * 60000 * 100  # the moved copy


def test_pca_follows_the_same_trajectory_on_both_backends():
    # tanh is smooth, so float rounding cannot flip a unit: the NumPy reference retraces the
    # kernels on the dense coordinates as on the sparse pixels
    cfg = PCA.replace(activation="tanh", shift=1, epochs=1)
    a = Trainer(cfg.replace(backend="numba")).run(max_generations=12)
    b = Trainer(cfg.replace(backend="numpy")).run(max_generations=12)
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-4, atol=1e-5)
