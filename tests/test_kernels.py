"""Every kernel against its NumPy twin in fastes.backends.reference, on random float32 inputs.

The population cases are one table: small shapes chosen to reach every code path, and each
configuration that ``fastes bench`` times (:data:`fastes.cli.bench.CONFIGS`: its hidden layers,
noise and loss, on 50 input features and a dozen members instead of MNIST and thousands).
Every full-rank case runs again with a standard deviation per parameter (PGPE, SNES).
"""

import numba
import numpy as np
import pytest

from fastes.backends import kernels as K
from fastes.backends import workspace as W
from fastes.backends import reference as R
from fastes.cli.bench import CONFIGS, bench_config
from fastes.layout import ParamLayout
from fastes.strategies.noise import member_offsets

SHAPES = [
    # dims, antithetic, perturbation, rank, loss, activation
    ((50, 16, 16, 10), False, "full", 1, "mse", "relu"),
    ((50, 16, 16, 10), True, "full", 1, "cross-entropy", "relu"),
    ((50, 8, 10), True, "lowrank", 3, "cross-entropy", "relu"),
    ((50, 10), False, "full", 1, "cross-entropy", "relu"),
    ((50, 12, 7, 5), False, "lowrank", 2, "mse", "relu"),
    ((50, 33, 4), True, "lowrank", 1, "mse", "relu"),
    ((50, 64, 10), True, "full", 1, "cross-entropy", "relu"),  # too wide to group: per-task first layer
    # the other activations and the zero-one loss on each path
    ((50, 16, 16, 10), True, "full", 1, "zero-one", "sign"),
    ((50, 12, 7, 5), False, "lowrank", 2, "cross-entropy", "step"),
    ((50, 8, 10), True, "lowrank", 1, "zero-one", "tanh"),
    ((50, 64, 10), True, "full", 1, "mse", "sign"),
    ((50, 33, 4), True, "lowrank", 1, "zero-one", "step"),
    ((50, 10), True, "full", 1, "zero-one", "relu"),
]


def _bench_case(name: str) -> tuple:
    c = bench_config(name, "numba")
    return (50, *c.hidden, 10), c.antithetic, c.perturbation, c.rank, c.loss, c.activation


NAMED = [(f"shape{i}", case) for i, case in enumerate(SHAPES)] + [(f"bench-{name}", _bench_case(name)) for name in CONFIGS]
CASES = [pytest.param(*case, id=name) for name, case in NAMED]
#: The cases a standard deviation per parameter applies to (PGPE, SNES: full-rank noise).
FULL_RANK = [pytest.param(*case, id=name) for name, case in NAMED if case[2] == "full"]


#: Batch rows of the population cases: fewer than kernels.GROUP_MIN_ROWS (row by row), and a
#: batch run by groups of four similar rows whose last group is short.
ROW_SETS = [pytest.param(np.arange(3, 40), id="rows"), pytest.param(np.arange(5, 135)[::-1], id="row-groups")]


@pytest.mark.parametrize("rows", ROW_SETS)
@pytest.mark.parametrize("serial", [True, False], ids=["serial", "threaded"])
@pytest.mark.parametrize("dims, antithetic, perturbation, rank, loss, activation", CASES)
def test_population_losses_match_reference(table, random_case, dims, antithetic, perturbation, rank, loss, activation,
                                           serial, rows):
    layout, theta, x, csr, y = random_case(dims, n_rows=140, activation=activation)
    rows = rows.astype(np.int64)
    offsets = member_offsets(1, 2, 6, layout.noise_size(perturbation, rank))
    got = W.population_losses(theta, (table, offsets), 0.05, layout, (csr, rows, y), loss, antithetic, perturbation, rank,
                              serial=serial)
    want, _ = R.population_losses(theta, (table, offsets), 0.05, layout, x[rows], y[rows], loss, antithetic, perturbation,
                                  rank)
    assert got.shape == (12 if antithetic else 6,)
    np.testing.assert_allclose(got, want, rtol=2e-5)


@pytest.mark.parametrize("rows", ROW_SETS)
@pytest.mark.parametrize("serial", [True, False], ids=["serial", "threaded"])
@pytest.mark.parametrize("dims, antithetic, perturbation, rank, loss, activation", FULL_RANK)
def test_per_parameter_sigma_matches_reference(table, random_case, dims, antithetic, perturbation, rank, loss, activation,
                                               serial, rows):
    """PGPE's and SNES's members, ``theta + s * sigma * u`` with ``sigma`` (P,): the kernels scale
    the noise windows, the reference forms every member's parameters."""
    layout, theta, x, csr, y = random_case(dims, n_rows=140, activation=activation)
    rows = rows.astype(np.int64)
    offsets = member_offsets(1, 2, 6, layout.size)
    sigmas = np.random.default_rng(2).uniform(0.01, 0.1, layout.size).astype(np.float32)
    noise, data = (table, offsets), (csr, rows, y)
    got = W.population_losses(theta, noise, sigmas, layout, data, loss, antithetic, serial=serial)
    want, _ = R.population_losses(theta, noise, sigmas, layout, x[rows], y[rows], loss, antithetic)
    np.testing.assert_allclose(got, want, rtol=2e-5)
    same = np.full(layout.size, 0.05, dtype=np.float32)  # one sigma for all: the single-sigma kernels' result
    np.testing.assert_allclose(W.population_losses(theta, noise, same, layout, data, loss, antithetic),
                               W.population_losses(theta, noise, 0.05, layout, data, loss, antithetic), rtol=2e-5)


def test_noise_moments_match_reference(table):
    offsets = member_offsets(3, 4, 9, 5000)
    rng = np.random.default_rng(0)
    weights, squares = rng.standard_normal(9), rng.standard_normal(9)
    got = W.noise_moments(table, offsets, weights, squares, 5000, chunk=700)
    want = R.noise_moments(table, offsets, weights, squares, 5000)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got[0], W.noise_weighted_sum(table, offsets, weights, 5000, chunk=700))


@pytest.mark.parametrize("dims, activation", [((50, 16, 16, 10), "relu"), ((50, 10), "relu"), ((50, 3, 9), "relu"),
                                               ((50, 16, 16, 10), "sign"), ((50, 12, 9), "step"), ((50, 5, 9), "tanh")])
def test_forward_logits_match_reference(random_case, dims, activation):
    layout, theta, x, csr, y = random_case(dims, activation=activation)
    rows = np.array([5, 0, 39, 7], dtype=np.int64)
    np.testing.assert_allclose(W.forward_logits(theta, layout, csr, rows), R.forward_logits(theta, layout, x[rows]), rtol=1e-5, atol=1e-6)


def test_noise_weighted_sum_matches_reference(table):
    offsets = member_offsets(3, 4, 9, 5000)
    weights = np.random.default_rng(0).standard_normal(9)
    np.testing.assert_allclose(W.noise_weighted_sum(table, offsets, weights, 5000, chunk=700),
                               R.noise_weighted_sum(table, offsets, weights, 5000), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rank", [1, 4])
def test_lowrank_weighted_sum_matches_reference(table, random_case, rank):
    layout, *_ = random_case((30, 12, 5))
    offsets = member_offsets(3, 4, 7, layout.lowrank_size(rank))
    weights = np.random.default_rng(1).standard_normal(7)
    np.testing.assert_allclose(W.lowrank_weighted_sum(table, offsets, weights, layout, rank),
                               R.lowrank_weighted_sum(table, offsets, weights, layout, rank), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("workers", [2, 3])
def test_lowrank_weighted_sum_same_bits_on_a_pool(table, workers):
    """The gradient's GEMM blocks give the same sums on any pool as in order here."""
    from concurrent.futures import ThreadPoolExecutor

    layout = ParamLayout((3 * W.GRADIENT_BLOCKS + 2, W.GRADIENT_BLOCKS + 1, 5))  # short last blocks
    offsets = member_offsets(3, 4, 9, layout.lowrank_size(2))
    weights = np.random.default_rng(2).standard_normal(9)
    alone = W.lowrank_weighted_sum(table, offsets, weights, layout, 2)
    with ThreadPoolExecutor(workers) as pool:
        pooled = W.lowrank_weighted_sum(table, offsets, weights, layout, 2, pool=pool)
    assert np.array_equal(alone, pooled)


def _integer_noise(layout, n_noise, rank, seed=0):
    """A table of small integers (as float32) and offsets into it: the reference's float32
    products ``A.T @ B`` (at most rank * 64) and their division by sqrt(rank) for rank 1 or 4
    are then exact, so it and the workspace sum the same float64 terms in different orders."""
    rng = np.random.default_rng(seed)
    size = layout.lowrank_size(rank)
    table = rng.integers(-8, 9, 4 * size * n_noise).astype(np.float32)
    offsets = rng.integers(0, len(table) - size, n_noise).astype(np.int64)
    return table, offsets, rng.standard_normal(n_noise)


@pytest.mark.parametrize("dims, n_noise, rank", [
    # several layer shapes (fan-outs no multiple of a vector's width), ranks 1 and 4
    ((37, 19, 13), 7, 1),
    ((37, 19, 13), 6, 1),
    ((20, 9), 5, 1),
    ((20, 9), 3, 1),
    ((17, 40, 3), 5, 4),
])
def test_lowrank_weighted_sum_exact_terms(dims, n_noise, rank):
    """Float64 sums of exact terms: they differ from the reference only by the order of
    summation (a few units of float64 rounding of sums in the hundreds, hence 1e-12 and 1e-10)."""
    layout = ParamLayout(dims)
    table, offsets, weights = _integer_noise(layout, n_noise, rank)
    np.testing.assert_allclose(W.lowrank_weighted_sum(table, offsets, weights, layout, rank),
                               R.lowrank_weighted_sum(table, offsets, weights, layout, rank), rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("n_rows", [137, 2 * K.CHAIN_ROWS + 18], ids=["one-chain", "three-chain-windows"])
def test_row_groups_hold_the_batch(random_case, n_rows):
    """Groups of four chained rows: ``ordered`` is the batch permuted within each chained
    window, and each group's pixel list and values give back exactly its rows (padding
    entries are zero); 137 rows end in a group of one, 530 in a third window of 18 rows."""
    layout, theta, x, (indptr, indices, values), y = random_case((50, 8, 3), n_rows=n_rows + 10)
    rows = np.arange(n_rows + 4, 4, -1, dtype=np.int64)
    n_groups = -(-len(rows) // 4)
    ordered = np.zeros(len(rows), np.int64)
    groups = np.zeros(2 + n_groups + n_groups * 53, np.int64)
    group_values = np.zeros(4 * n_groups * 53, np.float32)
    K._row_groups(indptr, indices, values, rows, np.zeros((len(rows), 1), np.uint64), np.zeros(len(rows), np.int64),
                  np.zeros(50, np.int64), ordered, groups, group_values)
    assert groups[0] == n_groups
    for w0 in range(0, n_rows, K.CHAIN_ROWS):
        assert sorted(ordered[w0 : w0 + K.CHAIN_ROWS]) == sorted(rows[w0 : w0 + K.CHAIN_ROWS])
    at_pix = n_groups + 2
    for g in range(n_groups):
        p0, p1 = groups[1 + g], groups[2 + g]
        assert (p1 - p0) % 4 == 0
        dense = np.zeros((4, 50), np.float32)
        np.add.at(dense.T, groups[at_pix + p0 : at_pix + p1], group_values[4 * p0 : 4 * p1].reshape(-1, 4))
        members = ordered[4 * g : 4 * g + 4]
        np.testing.assert_array_equal(dense[: len(members)], x[members])
        assert not dense[len(members) :].any()
    # chained (over windows of K.CHAIN_ROWS rows): neighbours in the order share more pixels
    # than neighbours in batch order
    def neighbours(order):
        occupied = x[order] != 0
        return np.mean([(occupied[i] != occupied[i + 1]).sum() for i in range(len(order) - 1)])
    assert neighbours(ordered) < neighbours(rows)


def test_population_split_evaluates_the_same_sums(table, random_case):
    """Ray workers each evaluate part of the population: the batch's row groups depend on the
    batch alone, so every member's loss has the same bits whether its noise vector is
    evaluated with all others (8 x 40 columns: per task from the table) or with half of them
    (gathered side by side in the first layer)."""
    layout, theta, x, csr, y = random_case((50, 40, 10), n_rows=140)
    rows = np.arange(2, 138, dtype=np.int64)
    offsets = member_offsets(0, 5, 8, layout.size)
    kwargs = dict(loss="cross-entropy", antithetic=True, serial=False)
    whole = W.population_losses(theta, (table, offsets), 0.1, layout, (csr, rows, y), **kwargs)
    halves = [W.population_losses(theta, (table, part), 0.1, layout, (csr, rows, y), **kwargs)
              for part in (offsets[:4].copy(), offsets[4:].copy())]
    assert W.population_plan(layout, 8, True, len(rows))["grouped"] != W.population_plan(layout, 4, True, len(rows))["grouped"]
    np.testing.assert_array_equal(whole, np.concatenate(halves))


@pytest.mark.parametrize("n_rows", [64, 130], ids=["rows", "row-groups"])
@pytest.mark.parametrize("scaled", [False, True], ids=["one-sigma", "sigma-per-parameter"])
def test_results_identical_for_any_thread_count(table, random_case, scaled, n_rows):
    layout, theta, x, csr, y = random_case((50, 16, 16, 10), n_rows=n_rows)
    rows = np.arange(n_rows, dtype=np.int64)
    offsets = member_offsets(0, 0, 3, layout.size)
    sigma = np.linspace(0.05, 0.15, layout.size, dtype=np.float32) if scaled else 0.1
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        ws = W.PopulationWorkspace(layout, 3, True, n_rows, threads=threads, serial=False, scaled=scaled)
        results.append(ws.losses(theta, table, offsets, sigma, csr, rows, y, K.LOSS_MSE).copy())
        weights = np.array([0.5, -1.0, 0.25])
        results.append(np.concatenate(W.noise_moments(table, offsets, weights, weights[::-1].copy(), layout.size)))
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    np.testing.assert_array_equal(results[0], results[2])
    np.testing.assert_array_equal(results[1], results[3])


def test_validation_errors(table, random_case):
    layout, theta, x, csr, y = random_case((50, 10))
    rows = np.arange(4, dtype=np.int64)
    with pytest.raises(TypeError, match="theta must be a 1-d float32"):
        W.forward_logits(theta.astype(np.float64), layout, csr, rows)
    with pytest.raises(IndexError, match="rows out of range"):
        W.forward_logits(theta, layout, csr, np.array([99], dtype=np.int64))
    with pytest.raises(IndexError, match="past the end"):
        W.noise_weighted_sum(table, np.array([len(table) - 10]), np.ones(1), 100)
    with pytest.raises(TypeError, match="sigmas must be a 1-d float32"):
        W.population_losses(theta, (table, np.zeros(2, np.int64)), np.ones(layout.size), layout, (csr, rows, y))
    with pytest.raises(ValueError, match="full-rank"):
        W.PopulationWorkspace(layout, 2, False, 4, perturbation="lowrank", scaled=True)


def test_cached_kernels_run_in_a_fresh_process():
    """A process whose first kernel is loaded from Numba's cache (not compiled) must run it:
    the per-thread scratch lookup needs Numba's thread pool, which only compiling started."""
    import subprocess
    import sys

    code = (
        "import numpy as np; import scipy.sparse as sp\n"
        "from fastes.backends import workspace; from fastes.layout import ParamLayout\n"
        "layout = ParamLayout((30, 8, 5)); theta = layout.init('normal', 0.1, np.random.default_rng(0))\n"
        "m = sp.random(200, 30, density=0.3, format='csr', random_state=0, dtype=np.float32)\n"
        "csr = (m.indptr.astype(np.int64), m.indices.astype(np.int32), m.data)\n"
        "print(workspace.forward_logits(theta, layout, csr, np.arange(200, dtype=np.int64)).shape)\n"
    )
    for _ in range(2):  # the second run loads what the first one cached
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and done.stdout.strip() == "(200, 5)", done.stderr[-500:]


@pytest.mark.parametrize("rows", ROW_SETS)
@pytest.mark.parametrize("dims, antithetic, perturbation, rank, loss, activation", CASES)
def test_centre_metrics_equal_a_forward_pass(table, random_case, dims, antithetic, perturbation, rank, loss, activation,
                                             rows):
    """The model's own batch metrics read off a population call's first layer equal a
    forward pass's (the rows in the call's order: the same correct count, the loss summed in
    another order)."""
    layout, theta, x, csr, y = random_case(dims, n_rows=140, activation=activation)
    rows = rows.astype(np.int64)
    offsets = member_offsets(1, 2, 6, layout.noise_size(perturbation, rank))
    ws = W.PopulationWorkspace(layout, 6, antithetic, len(rows), perturbation, rank)
    ws.losses(theta, table, offsets, 0.05, csr, rows, y, K.LOSS_CODES[loss])
    got = ws.centre_metrics(y, K.LOSS_CODES[loss])
    want = W.ForwardWorkspace(layout, len(rows)).metrics(theta, csr, rows, y, K.LOSS_CODES[loss])
    assert got[1] == want[1]
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
