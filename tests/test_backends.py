"""Every backend implements the :class:`fastes.backends.Backend` protocol with methods of its
own or of the small shared mixins, never the protocol's stubs."""

import inspect

import pytest

from fastes.backends import Backend, NumbaBackend, NumpyBackend
from fastes.config import preset
from fastes.backends.ray_backend import RayBackend
from fastes.trainer import Trainer

METHODS = [name for name, value in vars(Backend).items() if inspect.isfunction(value) and not name.startswith("_")]


def test_the_protocol_names_what_the_trainer_calls():
    assert set(METHODS) == {"begin", "population_losses", "noise_sum", "noise_moments", "record_step", "batch_metrics"}


@pytest.mark.parametrize("cls", [NumbaBackend, NumpyBackend, RayBackend])
def test_each_backend_defines_every_method_with_the_protocol_arguments(cls):
    assert Backend not in cls.__mro__, "a backend implements the protocol; inheriting it would hide a missing method"
    for name in METHODS:
        want = list(inspect.signature(getattr(Backend, name)).parameters)
        got = list(inspect.signature(getattr(cls, name)).parameters)
        assert got[: len(want)] == want, (cls.__name__, name)


def test_numba_population_losses_takes_the_protocol_arguments_only():
    """Profiling reaches the phase kernels through the workspace, not through the backend."""
    want = list(inspect.signature(Backend.population_losses).parameters)
    assert list(inspect.signature(NumbaBackend.population_losses).parameters) == want


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_local_backends_say_their_threads(backend):
    threads = Trainer(preset("seed").replace(dataset="digits", backend=backend)).backend.threads
    assert (threads is None) == (backend == "numpy")


@pytest.mark.parametrize("batch_size", [64, 200], ids=["rows", "row-groups"])
def test_numba_batch_metrics_from_the_population_call_then_fresh_after_a_step(batch_size):
    """Between a population call and the step, the Numba backend scores the model from that
    call's first layer; after the step (record_step) it runs a forward pass on the new
    parameters, never the stale first layer; both agree with the NumPy backend."""
    import numpy as np

    config = preset("quick").replace(batch_size=batch_size)
    fast, slow = Trainer(config), Trainer(config.replace(backend="numpy"))
    state = fast.initial_state()
    rows = np.arange(batch_size, dtype=np.int64)[::-1].copy()
    offsets = fast.es.ask(state, config.sigma).offsets
    fast.backend.population_losses(state.theta, offsets, config.sigma, rows)
    before = fast.backend.batch_metrics(state.theta, rows)
    want = slow.backend.batch_metrics(state.theta, rows)
    assert before[1] == want[1] and before[0] == pytest.approx(want[0], rel=1e-5)
    moved = state.theta + np.float32(0.05)
    fast.backend.record_step(np.zeros(len(offsets)), 0.1)
    after = fast.backend.batch_metrics(moved, rows)
    want = slow.backend.batch_metrics(moved, rows)
    assert after[1] == want[1] and after[0] == pytest.approx(want[0], rel=1e-5)
    assert after != before
