import numpy as np
import pytest
import scipy.sparse as sp

from fastes.layout import ParamLayout
from fastes.noise import noise_table


@pytest.fixture(scope="session")
def table():
    return noise_table()


@pytest.fixture(scope="session")
def random_case():
    return _random_case


def _random_case(dims, n_rows=40, density=0.3, seed=0):
    """A random model, sparse float32 inputs in CSR and dense form, and labels."""
    rng = np.random.default_rng(seed)
    layout = ParamLayout(dims)
    theta = layout.init("normal", 0.3, rng)
    x = (rng.random((n_rows, dims[0])) * (rng.random((n_rows, dims[0])) < density)).astype(np.float32)
    m = sp.csr_matrix(x)
    csr = (m.indptr.astype(np.int64), m.indices.astype(np.int32), m.data.astype(np.float32))
    y = rng.integers(0, dims[-1], n_rows).astype(np.int32)
    return layout, theta, x, csr, y
