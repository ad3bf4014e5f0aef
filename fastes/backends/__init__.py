"""Backends: who evaluates a population and sums its noise.

``numba`` runs the kernels of :mod:`fastes.backends.kernels`; ``numpy`` runs the reference of
:mod:`fastes.backends.reference`. Both see the same data, parameters and noise offsets, so for the
same seed they follow the same trajectory (within float32 rounding). The ``ray`` backend
(:mod:`.ray_backend`) spreads the population over a cluster and builds its driver
and workers from the Numba backend's pieces (:class:`NoiseSum`, :class:`ModelMetrics`). What every
backend does is the :class:`Backend` protocol; the trainer picks one by name.
"""

from __future__ import annotations

from .numba_backend import ModelMetrics, NoiseSum, NumbaBackend, predict_logits, set_threads
from .numpy_backend import NumpyBackend
from .protocol import Backend, batch_rows, train_labels


def make_backend(config, layout, table, dataset, in_memory: bool = False, projection=None) -> Backend:
    """The backend named by ``config.backend``; ``in_memory`` data cannot be reloaded by
    name (remote workers must be sent it), and remote workers project theirs on the
    driver's ``--pca`` ``projection``."""
    if config.backend == "numba":
        return NumbaBackend(config, layout, table, dataset)
    if config.backend == "numpy":
        return NumpyBackend(config, layout, table, dataset)
    from .ray_backend import RayBackend

    return RayBackend(config, layout, table, dataset, in_memory=in_memory, projection=projection)


__all__ = ["Backend", "ModelMetrics", "NoiseSum", "NumbaBackend", "NumpyBackend", "batch_rows", "make_backend",
           "predict_logits", "set_threads", "train_labels"]
