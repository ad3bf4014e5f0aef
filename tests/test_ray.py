"""The ray backend against a real local Ray cluster (2 CPUs, no dashboard)."""

import sys

import numpy as np
import pytest

from fastes.cli.main import main
from fastes.config import preset
from fastes.errors import BackendError
from fastes.trainer import Trainer

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'fastes[ray]')")


@pytest.fixture(scope="module", autouse=True)
def local_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_trajectory_equals_local(tmp_path, quick_run, quick_args, model_bytes):
    out = tmp_path / "ray"
    assert main(["train", *quick_args, "--backend", "ray", "--workers", "2", "--out", str(out)]) == 0
    assert model_bytes(out) == model_bytes(quick_run)


def test_dead_worker_is_reported_and_run_resumes_on_fewer_workers(tmp_path, quick_run, quick_args, model_bytes,
                                                                  monkeypatch, capsys):
    from fastes.backends import ray_backend

    backends = []
    original = ray_backend.RayBackend.__init__

    def capture(self, *args, **kwargs):
        original(self, *args, **kwargs)
        backends.append(self)

    monkeypatch.setattr(ray_backend.RayBackend, "__init__", capture)
    import fastes.cli.progress

    def killer(quiet=False, stream=None):
        from contextlib import contextmanager

        @contextmanager
        def cm():
            def progress(info):
                if info["row"] is not None and info["epoch"] >= 1 and backends and backends[-1].actors:
                    ray.kill(backends[-1].actors[0])  # a worker dies after the first epoch
            yield progress
        return cm()

    monkeypatch.setattr(fastes.cli.progress, "make_progress", killer)
    out = tmp_path / "dies"
    code = main(["train", *quick_args, "--backend", "ray", "--workers", "2", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "Ray worker died" in err and "--resume" in err and err.count("\n") == 1
    assert (out / "checkpoint.npz").is_file()
    monkeypatch.undo()
    assert main(["train", "--resume", str(out), "--workers", "1", "--quiet"]) == 0
    assert model_bytes(out) == model_bytes(quick_run)


@pytest.mark.parametrize("strategy", [dict(), dict(strategy="pgpe", perturbation="full", optimizer="clipup", lr=0.05),
                                      dict(strategy="snes", perturbation="full", shaping="nes", optimizer="sgd", lr=1.0),
                                      dict(activation="sign", loss="zero-one", sigma=0.2)],
                         ids=["openai-es", "pgpe", "snes", "sign-zero-one"])
def test_estimator_on_ray_matches_numba(strategy):
    """Workers replay every strategy's update (PGPE's and SNES's standard deviations too): a
    worker whose copy drifted would score its members differently, and the model would differ."""
    from sklearn.datasets import load_digits

    from fastes import ESClassifier

    X, y = load_digits(return_X_y=True)
    params = dict(hidden=(16,), population=32, epochs=2, random_state=0, **strategy)
    a = ESClassifier(**params, backend="ray", workers=2).fit(X / 16, y)
    b = ESClassifier(**params).fit(X / 16, y)
    np.testing.assert_array_equal(a.coefs_[0], b.coefs_[0])
    if "strategy" in strategy:
        np.testing.assert_array_equal(a.state_.sigma, b.state_.sigma)


def test_pca_and_shift_on_ray_equal_numba():
    """Workers project their own copy of the data on the driver's --pca directions and move
    its rows each epoch as the driver does: the trajectory is numba's, bit for bit."""
    cfg = preset("quick").replace(pca=20, shift=1, epochs=2, population=32)
    local = Trainer(cfg).run()
    remote = Trainer(cfg.replace(backend="ray", workers=2)).run()
    np.testing.assert_array_equal(local.theta, remote.theta)


def test_more_workers_than_noise_vectors():
    with pytest.raises(BackendError, match="at most"):
        Trainer(preset("quick").replace(population=4, workers=3, backend="ray"))


def test_missing_ray_is_a_clear_error(monkeypatch):
    from fastes.backends.ray_backend import _import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(BackendError, match=r'pip install "fastes\[ray\]"'):
        _import_ray()

