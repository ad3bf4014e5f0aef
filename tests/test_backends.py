"""Every backend implements the :class:`fastes.backends.Backend` protocol with methods of its
own or of the small shared mixins, never the protocol's stubs."""

import inspect

import pytest

from fastes.backends import Backend, NumbaBackend, NumpyBackend
from fastes.config import preset
from fastes.ray_backend import RayBackend
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


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_local_backends_say_their_threads(backend):
    threads = Trainer(preset("seed").replace(dataset="digits", backend=backend)).backend.threads
    assert (threads is None) == (backend == "numpy")
