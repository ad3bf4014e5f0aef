import numpy as np
import pytest

from fastes.config import preset
from fastes.layout import ParamLayout
from fastes.strategies.noise import TABLE_SIZE, member_offsets, noise_table
from fastes.strategies.pgpe import PGPE
from fastes.backends.reference import noise_moments, noise_weighted_sum
from fastes.strategies.snes import SNES, default_population
from fastes.state import ESState
from fastes.strategies.schedules import schedule
from fastes.strategies.shaping import centered_rank, nes_utilities, noise_weights, square_weights, zscore

#: The original program's configuration: each test changes only what it is about.
SEED = preset("seed")


def test_zscore_and_guard():
    f = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(zscore(f), (f - 2) / np.std(f))
    assert not zscore(np.ones(5)).any()


def test_centered_rank():
    np.testing.assert_allclose(centered_rank(np.array([10.0, -1.0, 3.0])), [0.5, -0.5, 0.0])
    r = centered_rank(np.random.default_rng(0).standard_normal(101))
    assert r.min() == -0.5 and r.max() == 0.5 and abs(r.sum()) < 1e-12


@pytest.mark.parametrize("shape", [zscore, centered_rank, nes_utilities], ids=lambda f: f.__name__)
def test_tied_scores_get_equal_advantages(shape):
    """The zero-one loss scores members by a count of errors: equal scores, equal weights,
    whatever the members' order; an antithetic pair that ties moves nothing."""
    losses = np.array([0.25, 0.5, 0.25, 0.125, 0.5, 0.25, 0.75, 0.125])
    adv = shape(losses)
    for value in np.unique(losses):
        tied = adv[losses == value]
        np.testing.assert_array_equal(tied, tied[0])
    by_loss = adv[np.argsort(losses, kind="stable")]
    assert np.all(np.diff(by_loss) >= 0) and by_loss[0] < by_loss[-1]  # a lower loss still ranks better
    assert abs(adv.sum()) < 1e-12
    reordered = np.array([3, 0, 7, 1, 2, 6, 5, 4])
    np.testing.assert_allclose(shape(losses[reordered]), adv[reordered], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(noise_weights(shape(np.array([0.5, 0.5, 0.25, 0.75])), True)[0], 0.0)


def test_centered_rank_ties_share_the_mean_rank():
    np.testing.assert_allclose(centered_rank(np.array([1.0, 0.0, 1.0, 2.0])), [0.0, -0.5, 0.0, 0.5])


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
    assert SEED.replace(population=8).n_noise == 8 and SEED.replace(population=8, antithetic=True).n_noise == 4


# --------------------------------------------------------------------------- PGPE and SNES


class ReferenceNoise:
    """The noise sums of the NumPy reference, as a backend gives them to a strategy."""

    def __init__(self, table, size):
        self.table, self.size = table, size

    def noise_sum(self, offsets, weights):
        return noise_weighted_sum(self.table, offsets, weights, self.size)

    def noise_moments(self, offsets, weights, square_weights):
        return noise_moments(self.table, offsets, weights, square_weights, self.size)


def _one_generation(strategy, state, losses):
    """Offsets, the members' standard-normal noise (n, P) and the state after ``tell``."""
    table = noise_table()
    population = strategy.ask(state, strategy.config.sigma)
    u = np.stack([table[o : o + strategy.n_params] for o in population.offsets]).astype(np.float64)
    signs = [1.0, -1.0] if strategy.config.antithetic else [1.0]
    members = np.stack([s * row for row in u for s in signs])
    stepped, _ = strategy.tell(state, population, losses, ReferenceNoise(table, strategy.n_params), strategy.config.lr)
    return members, stepped


def _state(strategy, rng):
    sigma = rng.uniform(0.02, 0.08, strategy.n_params).astype(np.float32)
    return ESState(rng.standard_normal(strategy.n_params).astype(np.float32), 3, strategy.optimizer.state(), sigma)


def test_nes_utilities():
    adv = nes_utilities(np.array([3.0, 1.0, 2.0, 4.0]))
    raw = np.array([np.log(3.0), np.log(3.0) - np.log(2.0), 0.0, 0.0])  # ranks 1..4 of n = 4
    np.testing.assert_allclose(-adv[[1, 2, 0, 3]], raw / raw.sum() - 0.25)
    assert abs(adv.sum()) < 1e-12
    assert abs(nes_utilities(np.random.default_rng(0).standard_normal(37)).sum()) < 1e-12


def test_square_weights():
    np.testing.assert_allclose(square_weights(np.array([1.0, -1.0, 0.5, 0.25]), True), [0.0, 0.75])
    np.testing.assert_allclose(square_weights(np.array([1.0, -1.0]), False), [1.0, -1.0])


@pytest.mark.parametrize("antithetic", [True, False])
def test_pgpe_is_evotorchs_update(antithetic):
    """PGPE's step against EvoTorch's formulas on the same samples (fitness = -loss, centred ranks)."""
    rng = np.random.default_rng(1)
    n, size = 6, 40
    config = SEED.replace(strategy="pgpe", population=n, antithetic=antithetic, shaping="centered-rank", optimizer="sgd",
                    lr=0.1, sigma_lr=0.2, sigma_max_change=0.2, seed=5)
    es = PGPE(config, size, len(noise_table()), size)
    state = _state(es, rng)
    theta, sigma = state.theta.astype(np.float64), state.sigma.astype(np.float64)
    losses = rng.standard_normal(n)
    members, state = _one_generation(es, state, losses)
    fitness = centered_rank(-losses)
    scaled = members * sigma
    if antithetic:  # EvoTorch's SymmetricSeparableGaussian
        fplus, fminus, scaled = fitness[0::2], fitness[1::2], scaled[0::2]
        grad_mu = ((fplus - fminus) / 2) @ scaled / (n // 2)
        grad_sigma = ((fplus + fminus) / 2) @ ((scaled**2 - sigma**2) / sigma) / (n // 2)
    else:  # EvoTorch's SeparableGaussian
        grad_mu = fitness @ scaled / n
        grad_sigma = fitness @ ((scaled**2 - sigma**2) / sigma) / n
    np.testing.assert_allclose(state.theta, theta + 0.1 * grad_mu, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(state.sigma, sigma + np.clip(0.2 * grad_sigma, -0.2 * sigma, 0.2 * sigma), rtol=1e-6)
    assert state.generation == 4


@pytest.mark.parametrize("antithetic", [True, False])
def test_snes_is_the_papers_update(antithetic):
    """SNES's step against the natural-gradient form (Schaul et al. 2011; evosax's tell) on the same samples."""
    rng = np.random.default_rng(2)
    n, size = 8, 40
    config = SEED.replace(strategy="snes", population=n, antithetic=antithetic, shaping="nes", optimizer="sgd", lr=1.0,
                    seed=3)
    es = SNES(config, size, len(noise_table()), size)
    assert es.sigma_lr == pytest.approx((3 + np.log(size)) / (5 * np.sqrt(size)))
    state = _state(es, rng)
    theta, sigma = state.theta.astype(np.float64), state.sigma.astype(np.float64)
    losses = rng.standard_normal(n)
    members, state = _one_generation(es, state, losses)
    weights = np.maximum(0.0, np.log(n / 2 + 1) - np.log(np.arange(1, n + 1)))
    weights = weights / weights.sum() - 1.0 / n  # by rank, best (lowest loss) first
    s = members[np.argsort(losses)]
    np.testing.assert_allclose(state.theta, theta + sigma * (weights @ s), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(state.sigma, sigma * np.exp(es.sigma_lr / 2 * (weights @ (s**2 - 1))), rtol=1e-6)


def test_snes_defaults_are_functions_of_the_dimension():
    assert default_population(101_770) == 4 + int(3 * np.log(101_770)) == 38
    assert SNES.default_sigma_lr(101_770) == pytest.approx((3 + np.log(101_770)) / (5 * np.sqrt(101_770)))
    assert PGPE(SEED.replace(strategy="pgpe"), 10, 100, 10).sigma_lr == 0.1
    assert SNES(SEED.replace(strategy="snes", sigma_lr=0.3), 10, 100, 10).sigma_lr == 0.3


@pytest.mark.parametrize("name", ["pgpe", "snes"])
def test_learned_sigmas_follow_the_curvature(name):
    """On a separable quadratic whose curvatures differ 100-fold, the centre descends and the
    standard deviations shrink most where the loss is steepest."""
    size = 20
    curvature = np.where(np.arange(size) < size // 2, 100.0, 1.0)
    extra = dict(optimizer="clipup", lr=0.05) if name == "pgpe" else dict(optimizer="sgd", lr=1.0, shaping="nes")
    config = SEED.replace(**{"strategy": name, "population": 32, "antithetic": True, "sigma": 0.3,
                       "shaping": "centered-rank", "sigma_lr": 0.1, **extra})
    es = (PGPE if name == "pgpe" else SNES)(config, size, len(noise_table()), size)
    state = ESState(np.ones(size, dtype=np.float32), 0, es.optimizer.state(), es.initial_sigma())
    loss = lambda x: (curvature * x**2).sum(axis=-1)  # noqa: E731
    start = loss(state.theta)
    for _ in range(300):
        sigma, theta = state.sigma.astype(np.float64), state.theta.astype(np.float64)
        table = noise_table()
        population = es.ask(state, config.sigma)
        u = np.stack([table[o : o + size] for o in population.offsets]).astype(np.float64)
        members = np.stack([theta + s * sigma * row for row in u for s in (1.0, -1.0)])
        state, _ = es.tell(state, population, loss(members), ReferenceNoise(table, size), config.lr)
    assert loss(state.theta) < start / 100
    steep, flat = state.sigma[: size // 2].mean(), state.sigma[size // 2 :].mean()
    assert steep < flat < 0.3, (steep, flat)


def test_every_strategy_is_built_by_its_name():
    from fastes.config import STRATEGIES
    from fastes.io.data import load_dataset
    from fastes.strategies import STRATEGY_CLASSES, build_strategy

    from fastes.strategies.base import LearnedSigma

    assert tuple(STRATEGY_CLASSES) == tuple(STRATEGIES)
    assert {name: issubclass(cls, LearnedSigma) for name, cls in STRATEGY_CLASSES.items()} == STRATEGIES
    digits = load_dataset("digits")
    for name, cls in STRATEGY_CLASSES.items():
        assert type(build_strategy(SEED.replace(strategy=name), digits)[2]) is cls
