"""``--pca K``: the network sees each image's coordinates on the first K principal directions
of the training images instead of its pixels.

ES estimates a gradient from random directions, and its estimate's noise grows with the
number of parameters the noise moves. MNIST's first 100 directions hold 91% of the training
images' variance and shrink the first layer 7.8 times, so each generation's estimate is less
noisy for the same population.

The directions are the eigenvectors of the training images' covariance, largest first, and
an image's coordinates are ``(x - mean) @ components``. They follow from the training split
alone, computed in a fixed order in float64 (the same on any thread count), and a model file
keeps them (``pca_mean``, ``pca_components``) so that its predictions need no training data.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from ..config import ConfigError
from .data import Dataset, ShiftedRows, shifted


class Projection(NamedTuple):
    """Where ``--pca`` puts an image: ``(x - mean) @ components``.

    Attributes
    ----------
    mean : ndarray of shape (n_features,), float32
        The training images' mean.
    components : ndarray of shape (n_features, k), float32
        Orthonormal principal directions, largest variance first.
    """

    mean: np.ndarray
    components: np.ndarray

    def offset(self) -> np.ndarray:
        """``mean @ components`` (k,) float32, subtracted from every projected row."""
        return (self.mean.astype(np.float64) @ self.components.astype(np.float64)).astype(np.float32)


def principal_directions(csr: tuple[np.ndarray, np.ndarray, np.ndarray], n_features: int, k: int) -> Projection:
    """The mean and first ``k`` principal directions of CSR rows.

    Parameters
    ----------
    csr : tuple of ndarray
        indptr (N + 1,) int64, indices (nnz,) int32, values (nnz,) float32.
    n_features : int
    k : int
        1 <= k <= n_features.

    Returns
    -------
    Projection
        Each direction's largest entry in absolute value is positive (one sign, whatever the
        solver).
    """
    if not 1 <= k <= n_features:
        raise ConfigError(f"--pca {k} is not a number of principal directions of data with {n_features} features; "
                          f"give --pca between 1 and {n_features}, or 0 for the inputs as they are")
    n = len(csr[0]) - 1
    from ..backends.kernels.inputs import _gram

    gram = np.zeros((n_features, n_features))
    _gram(*csr, gram)
    gram = gram + np.triu(gram, 1).T
    mean = np.bincount(csr[1], weights=csr[2].astype(np.float64), minlength=n_features) / max(n, 1)
    _, vectors = np.linalg.eigh(gram / max(n, 1) - np.outer(mean, mean))
    top = vectors[:, ::-1][:, :k]
    signs = np.sign(top[np.abs(top).argmax(axis=0), np.arange(k)])
    return Projection(mean.astype(np.float32), np.ascontiguousarray(top * signs, dtype=np.float32))


def project_rows(csr: tuple[np.ndarray, np.ndarray, np.ndarray], projection: Projection,
                 out: np.ndarray | None = None) -> np.ndarray:
    """The coordinates (N, k) float32 of CSR rows on ``projection``, written into ``out`` when
    given."""
    from ..backends.kernels.inputs import _project_rows

    components = projection.components
    if out is None:
        out = np.empty((len(csr[0]) - 1, components.shape[1]), dtype=np.float32)
    _project_rows(*csr, components, projection.offset(), out)
    return out


def _dense_csr(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every entry of ``x`` (N, k) as CSR, its values a view of ``x`` (no pass over the
    coordinates to drop zeros, which they almost never are)."""
    n, k = x.shape
    indptr = np.arange(0, n * k + 1, k, dtype=np.int64)
    return indptr, np.tile(np.arange(k, dtype=np.int32), n), x.reshape(-1)


def projected(dataset: Dataset, projection: Projection) -> Dataset:
    """``dataset`` with both splits replaced by their coordinates on ``projection``."""
    splits = {name: project_rows(dataset.csr(name), projection) for name in ("train", "test")}
    out = dataclasses.replace(dataset, x_train=splits["train"], x_test=splits["test"])
    for name, x in splits.items():
        out._csr[name] = _dense_csr(x)
    return out


class ProjectedShift:
    """``--shift`` with ``--pca``: each epoch moves the training images (:class:`ShiftedRows`),
    then rewrites their coordinates in the projected training split in place."""

    def __init__(self, rows: ShiftedRows, projection: Projection, out: np.ndarray):
        self.rows, self.projection, self.out = rows, projection, out
        self.epoch = None

    def set_epoch(self, epoch: int) -> None:
        if epoch == self.epoch:
            return
        self.rows.set_epoch(epoch)
        project_rows(self.rows.csr(), self.projection, self.out)
        self.epoch = epoch


class NetworkInputs(NamedTuple):
    """What a run's network sees of a dataset.

    Attributes
    ----------
    train : Dataset
        What the backend trains on: the dataset or its ``--pca`` coordinates, with ``--shift``
        the training split as the current epoch moved it.
    scored : Dataset
        The same, unmoved: what the model is evaluated on (train and test).
    moves : object or None
        With ``--shift``, what moves ``train``'s training rows in place: ``set_epoch(epoch)``.
    projection : Projection or None
        ``--pca``'s mean and directions.
    """

    train: Dataset
    scored: Dataset
    moves: ShiftedRows | ProjectedShift | None
    projection: Projection | None


def network_inputs(config, dataset: Dataset, projection: Projection | None = None) -> NetworkInputs:
    """What a run's network sees of ``dataset`` (on ``projection`` when given: Ray workers
    take the driver's ``--pca`` directions)."""
    scored = dataset
    if config.pca:
        if projection is None:
            projection = principal_directions(dataset.csr("train"), dataset.n_features, config.pca)
        scored = projected(dataset, projection)
    if not config.shift:
        return NetworkInputs(scored, scored, None, projection)
    moved, moves = shifted(dataset, config.shift, config.seed)
    if projection is None:
        return NetworkInputs(moved, scored, moves, None)
    # the moved coordinates in an array of their own, written whole by each epoch's set_epoch,
    # in the unmoved split's CSR structure (every entry kept)
    x = np.empty_like(scored.x_train)
    indptr, indices, _ = scored.csr("train")
    train = dataclasses.replace(scored, x_train=x)
    train._csr.update(train=(indptr, indices, x.reshape(-1)), test=scored.csr("test"))
    moves = ProjectedShift(moves, projection, x)
    moves.set_epoch(0)
    return NetworkInputs(train, scored, moves, projection)
