import numpy as np
import pytest

from fastes.config import Config
from fastes.layout import ParamLayout
from fastes.noise import TABLE_SIZE, member_offsets, noise_table
from fastes.reference import noise_weighted_sum
from fastes.strategy import centered_rank, noise_weights, schedule, zscore


def test_zscore_and_guard():
    f = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(zscore(f), (f - 2) / np.std(f))
    assert not zscore(np.ones(5)).any()


def test_centered_rank():
    np.testing.assert_allclose(centered_rank(np.array([10.0, -1.0, 3.0])), [0.5, -0.5, 0.0])
    r = centered_rank(np.random.default_rng(0).standard_normal(101))
    assert r.min() == -0.5 and r.max() == 0.5 and abs(r.sum()) < 1e-12


def test_antithetic_weights():
    np.testing.assert_allclose(noise_weights(np.array([1.0, -1.0, 0.5, 0.25]), True), [2.0, 0.25])


def test_offsets_deterministic_and_distinct():
    a = member_offsets(7, 11, 50, 1000)
    np.testing.assert_array_equal(a, member_offsets(7, 11, 50, 1000))
    assert not np.array_equal(a, member_offsets(7, 12, 50, 1000))
    assert not np.array_equal(a, member_offsets(8, 11, 50, 1000))
    # no symmetry between generation and member index
    assert member_offsets(0, 0, 2, 1000)[1] != member_offsets(0, 1, 2, 1000)[0]
    assert a.min() >= 0 and a.max() <= TABLE_SIZE - 1000


def _gradient_cosine(n, antithetic, seed):
    """ES estimate of a quadratic's gradient against the true gradient."""
    table = noise_table()
    dim = 200
    rng = np.random.default_rng(seed)
    target = rng.standard_normal(dim)
    theta = rng.standard_normal(dim)
    sigma = 0.01
    loss = lambda t: 0.5 * np.sum((t - target) ** 2)  # noqa: E731
    n_noise = n // 2 if antithetic else n
    offsets = member_offsets(seed, 0, n_noise, dim)
    noise = np.stack([table[o : o + dim] for o in offsets]).astype(np.float64)
    signs = [1, -1] if antithetic else [1]
    f = np.array([loss(theta + s * sigma * e) for e in noise for s in signs])
    g = noise_weighted_sum(table, offsets, noise_weights(zscore(f), antithetic) / n, dim)
    true = theta - target
    return g @ true / np.linalg.norm(g) / np.linalg.norm(true)


def test_gradient_estimate_cosine_grows_with_population():
    cos = {n: np.mean([_gradient_cosine(n, False, s) for s in range(5)]) for n in (8, 64, 2000)}
    assert cos[8] < cos[64] < cos[2000]
    assert cos[2000] > 0.9
    assert np.mean([_gradient_cosine(2000, True, s) for s in range(3)]) > 0.9


def test_schedules():
    assert schedule("constant", 0.1, 0.5, 3, 0.7) == 0.1
    assert schedule("exponential", 0.1, 0.5, 2, 0.0) == pytest.approx(0.025)
    assert schedule("cosine", 0.1, 1.0, 0, 0.0) == pytest.approx(0.1)
    assert schedule("cosine", 0.1, 1.0, 0, 1.0) == pytest.approx(0.0)
    assert schedule("cosine", 0.1, 1.0, 0, 0.5) == pytest.approx(0.05)


def test_config_layout_noise_sizes():
    layout = ParamLayout((784, 128, 10))
    assert layout.lowrank_size(1) == (784 + 128) + 128 + (128 + 10) + 10
    assert Config(population=8).n_noise == 8 and Config(population=8, antithetic=True).n_noise == 4
