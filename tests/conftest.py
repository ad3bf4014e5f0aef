import numpy as np
import pytest
import scipy.sparse as sp

from fastes.layout import ParamLayout
from fastes.strategies.noise import noise_table


@pytest.fixture(scope="session")
def table():
    return noise_table()


@pytest.fixture(scope="session")
def random_case():
    return _random_case


def _random_case(dims, n_rows=40, density=0.3, seed=0, activation="relu"):
    """A random model, sparse float32 inputs in CSR and dense form, and labels."""
    rng = np.random.default_rng(seed)
    layout = ParamLayout(dims, activation)
    theta = layout.init("normal", 0.3, rng)
    x = (rng.random((n_rows, dims[0])) * (rng.random((n_rows, dims[0])) < density)).astype(np.float32)
    m = sp.csr_matrix(x)
    csr = (m.indptr.astype(np.int64), m.indices.astype(np.int32), m.data.astype(np.float32))
    y = rng.integers(0, dims[-1], n_rows).astype(np.int32)
    return layout, theta, x, csr, y


@pytest.fixture(scope="session")
def idx_folder():
    return _idx_folder


def _idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """One IDX file: magic, big-endian dimensions, big-endian payload."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()


def _idx_folder(folder, n_train=60, n_test=20, side=28, classes=3, seed=0, train_labels=None, label_code=0x08):
    """An MNIST-format folder of random images (small: a run on it takes a second).

    ``train_labels``: labels to use instead of ``arange(n_train) % classes``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % classes
        if split == "train" and train_labels is not None:
            labels = np.asarray(train_labels)
        images = (rng.random((n, side, side)) * 255 * (rng.random((n, side, side)) < 0.3)).astype(np.uint8)
        (folder / f"{split}-images-idx3-ubyte").write_bytes(_idx_bytes(images))
        (folder / f"{split}-labels-idx1-ubyte").write_bytes(_idx_bytes(labels, label_code))
    return folder


@pytest.fixture(scope="session")
def run_cli():
    return _run_cli


@pytest.fixture(scope="session")
def tree_snapshot():
    return _tree_snapshot


def _run_cli(args):
    """``fastes.cli.main.main(args)`` as the console script runs it: exit status, stdout, stderr,
    and the warnings a user would see (Python hides libraries' deprecation warnings)."""
    import contextlib
    import io
    import warnings

    from fastes.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        warnings.simplefilter("always")
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
    hidden = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)
    return code, out.getvalue(), err.getvalue(), [w for w in caught if not issubclass(w.category, hidden)]


def _tree_snapshot(root):
    """Every file's bytes and every folder under ``root`` (None when it does not exist)."""
    if not root.exists():
        return None
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else "<dir>") for p in sorted(root.rglob("*"))}


#: A quick run on the bundled digits (seconds); :func:`quick_run` is its result folder.
QUICK = ["--preset", "quick", "--epochs", "2", "--quiet"]


@pytest.fixture(scope="session")
def quick_args():
    """The ``fastes train`` options of :func:`quick_run` (train again with them to compare)."""
    return list(QUICK)


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """One finished quick run, trained once per session and only read by the tests."""
    from fastes.cli.main import main

    out = tmp_path_factory.mktemp("quick") / "run"
    assert main(["train", *QUICK, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def model_bytes():
    return _model_bytes


def _model_bytes(folder):
    """The bytes of every weight array of ``folder/model.npz`` (its config left out): two
    runs made the same model exactly when these are equal."""
    with np.load(folder / "model.npz") as npz:
        return {k: npz[k].tobytes() for k in npz.files if k != "config"}


@pytest.fixture(scope="session")
def fastes_process():
    return _fastes_process


def _fastes_process(*args, **kwargs):
    """``python -m fastes.cli ARGS`` in a child process, as a user runs the console script
    (``kwargs`` go to :class:`subprocess.Popen`); text stdout and stderr are pipes."""
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "fastes.cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
