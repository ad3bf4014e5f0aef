"""Kernels of ``--pca`` (:mod:`fastes.io.projection`): the training rows' Gram matrix and each
row's coordinates on the principal directions. Run once per run (and per epoch with
``--shift``), outside the generations; their NumPy twins are ``X.T @ X`` and
``(x - mean) @ components`` (tests/test_projection.py)."""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True)
def _gram(indptr, indices, values, out):
    # X.T @ X's upper triangle over CSR rows, in row order, in float64: deterministic
    for r in range(indptr.shape[0] - 1):
        for a in range(indptr[r], indptr[r + 1]):
            i, va = indices[a], np.float64(values[a])
            for b in range(a, indptr[r + 1]):
                j = indices[b]
                out[min(i, j), max(i, j)] += va * values[b]


@njit(cache=True, parallel=True)
def _project_rows(indptr, indices, values, components, offset, out):
    # out[r] = x_r @ components - offset; each row is its own iteration and sums its entries in order
    k = components.shape[1]
    for r in prange(indptr.shape[0] - 1):
        for j in range(k):
            out[r, j] = -offset[j]
        for e in range(indptr[r], indptr[r + 1]):
            v, c = values[e], indices[e]
            for j in range(k):
                out[r, j] += v * components[c, j]
