"""What a run allocates itself, traced phase by phase (Python's tracemalloc sees NumPy's
arrays), so that a copy of the data or a per-generation allocation fails here rather than
showing up as peak RSS. The libraries' own memory (Numba and LLVM, matplotlib, and what a
compile leaves behind on a cold cache) is loaded before tracing starts, by a run of the same
configuration on a few rows: it is the runs' peak_rss_mb (summary.json), not this test's."""

import json
import subprocess
import sys

import pytest

MIB = 2**20

_PROBE = """
import json, sys, tracemalloc
from pathlib import Path
import numpy as np
import matplotlib.backends.backend_agg, matplotlib.figure
from fastes.config import preset
from fastes.io.data import BytePixels, Dataset, load_dataset
from fastes.io.run_folder import write_results
from fastes.trainer import Trainer

pixels = np.random.default_rng(0).integers(0, 256, (100, 784), dtype=np.uint8)
labels = np.arange(100, dtype=np.int32) % 10
rows = Dataset("rows", BytePixels(pixels[:80]), labels[:80], BytePixels(pixels[80:]), labels[80:], 10, (28, 28))
warm = Trainer(preset("seed").replace(epochs=1), dataset=rows)
warm.prepare(warm.initial_state())  # the kernels of the run below, compiled or loaded

tracemalloc.start()
ds = load_dataset("mnist")
pixel_bytes = ds.x_train.shape[0] * ds.x_train.shape[1] + ds.x_test.shape[0] * ds.x_test.shape[1]
trainer = Trainer(preset("seed").replace(epochs=1), dataset=ds)
state = trainer.initial_state()
trainer.prepare(state)
held, setup_peak = tracemalloc.get_traced_memory()
tracemalloc.reset_peak()
state = trainer.run(state, max_generations=20)
run_peak = tracemalloc.get_traced_memory()[1]
tracemalloc.reset_peak()
write_results(Path(sys.argv[1]), trainer, state)
results_peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"held": held, "setup_peak": setup_peak, "run_peak": run_peak, "results_peak": results_peak,
                  "pixel_bytes": pixel_bytes, "table": trainer.table.nbytes,
                  "csr": sum(a.nbytes for split in ("train", "test") for a in ds.csr(split))}))
"""


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    done = subprocess.run([sys.executable, "-c", _PROBE, str(out)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def test_a_run_holds_its_data_once_in_csr_form_and_its_noise_table(seed_run):
    # MNIST's bytes beside its CSR would be 55 MiB more, a float32 copy of it 215 MiB
    assert seed_run["held"] <= seed_run["csr"] + seed_run["table"] + 4 * MIB


def test_loading_holds_the_bytes_of_one_split_at_most_beside_the_csr(seed_run):
    # the bytes of both splits are 55 MiB; the decompressed file and its parsed copy at once would be 47 MiB more
    assert seed_run["setup_peak"] <= seed_run["held"] + seed_run["pixel_bytes"] + 4 * MIB


def test_generations_allocate_nothing(seed_run):
    assert seed_run["run_peak"] <= seed_run["held"] + 1 * MIB


def test_results_are_written_with_small_temporaries(seed_run):
    # the training split's logits in float64 are 4.6 MiB; a dense float32 copy of the test split 30 MiB
    assert seed_run["results_peak"] <= seed_run["held"] + 24 * MIB


def test_the_estimate_counts_the_shifted_rows():
    """``--shift`` keeps a moved copy of the training rows beside the unmoved CSR, and each
    entry's row and pixel: the memory estimate adds what ShiftedRows holds."""
    from fastes.config import preset
    from fastes.io.data import load_dataset, shifted
    from fastes.memory import run_bytes

    ds = load_dataset("digits")
    _, rows = shifted(ds, 1, 0)
    held = sum(a.nbytes for a in rows._csr) + rows._entry_row.nbytes + sum(a.nbytes for a in rows._at)
    shape = (len(ds.y_train), len(ds.y_test), ds.n_features, ds.n_classes)
    config = preset("quick")
    extra = run_bytes(config.replace(shift=1), *shape, nnz=ds.nnz("train"))["shifted training rows"]
    assert run_bytes(config, *shape, nnz=ds.nnz("train"))["shifted training rows"] == 0
    assert held <= extra <= 1.1 * held
