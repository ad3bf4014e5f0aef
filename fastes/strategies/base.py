"""What the evolution strategies share: fitness shaping, noise weights, schedules, and the
ask/tell interface (:class:`Strategy`) that each strategy implements in a module of its own
(:mod:`fastes.strategies.openai_es`, :mod:`fastes.strategies.pgpe`, :mod:`fastes.strategies.snes`; :mod:`fastes.strategies`
builds the one a run names).

Ask/tell on an explicit state (after evosax): :meth:`Strategy.ask` says which noise vectors a
generation uses (their table offsets, a pure function of seed and generation), somebody
evaluates the population (:mod:`fastes.backends`) around the centre ``theta`` with the
strategy's noise scale (:meth:`Strategy.noise_scale`), :meth:`Strategy.weights` turns the
losses into per-noise-vector weights, :meth:`Strategy.gradient` has the backend sum the
weighted noise, and :meth:`Strategy.tell` steps. The weights are all an update needs besides
the state: Ray workers replay every update from them.

Conventions: every shaping maps losses to *advantages* that grow with the loss and sum to
zero; a strategy descends. Member ``k * n_signs + i`` is noise vector ``u_k`` with sign
``+1`` (i = 0) or ``-1`` (i = 1, antithetic).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .noise import member_offsets
from .optimizers import make_optimizer
from ..state import ESState


@njit(cache=True)
def _zscore(f):
    n = f.shape[0]
    mean = 0.0
    for i in range(n):
        mean += f[i]
    mean /= n
    var = 0.0
    for i in range(n):
        var += (f[i] - mean) ** 2
    std = np.sqrt(var / n)
    out = np.zeros(n)
    if std > 0.0:
        for i in range(n):
            out[i] = (f[i] - mean) / std
    return out


def zscore(fitness: np.ndarray) -> np.ndarray:
    """(f - mean) / std, the original's advantages; all zeros when std == 0.

    Compiled: it runs every generation on a handful of numbers, where NumPy's per-call
    overhead (tens of microseconds for mean and std) would cost more than the kernels.
    """
    return _zscore(np.asarray(fitness, dtype=np.float64))


def centered_rank(fitness: np.ndarray) -> np.ndarray:
    """Ranks mapped linearly to [-0.5, 0.5] (OpenAI ES); ties broken by member order."""
    f = np.asarray(fitness, dtype=np.float64)
    n = f.size
    if n < 2:
        return np.zeros_like(f)
    ranks = np.empty(n, dtype=np.float64)
    ranks[np.argsort(f, kind="stable")] = np.arange(n, dtype=np.float64)
    return ranks / (n - 1) - 0.5


def nes_utilities(fitness: np.ndarray) -> np.ndarray:
    """NES's utilities of the ranks (Wierstra et al. 2014), as advantages: the member of
    rank ``i`` (1 = lowest loss) gets ``-(max(0, ln(n/2 + 1) - ln i) / total - 1/n)``; ties
    broken by member order. Only the better half moves the search; the values sum to 0."""
    f = np.asarray(fitness, dtype=np.float64)
    n = f.size
    raw = np.maximum(0.0, math.log(n / 2 + 1) - np.log(np.arange(1, n + 1, dtype=np.float64)))
    utilities = np.empty(n, dtype=np.float64)
    utilities[np.argsort(f, kind="stable")] = raw / raw.sum() - 1.0 / n
    return -utilities


SHAPING = {"zscore": zscore, "centered-rank": centered_rank, "nes": nes_utilities}


def noise_weights(advantages: np.ndarray, antithetic: bool) -> np.ndarray:
    """Weight of each noise vector in the centre's gradient: its member's advantage, or
    ``adv(+u) - adv(-u)``."""
    if antithetic:
        return advantages[0::2] - advantages[1::2]
    return advantages.copy()


def square_weights(advantages: np.ndarray, antithetic: bool) -> np.ndarray:
    """Weight of each noise vector's ``u**2 - 1`` in a standard deviation's gradient: its
    member's advantage, or ``adv(+u) + adv(-u)`` (both signs have the same ``u**2``)."""
    if antithetic:
        return advantages[0::2] + advantages[1::2]
    return advantages.copy()


def schedule(kind: str, base: float, decay: float, epoch: int, progress: float) -> float:
    """A learning rate or sigma: ``constant``, ``exponential`` (``decay**epoch``) or
    ``cosine`` (annealed to zero over ``progress`` in [0, 1])."""
    if kind == "constant":
        return base
    if kind == "exponential":
        return base * decay**epoch
    return base * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


class Strategy:
    """The ask/tell interface of every strategy, and what they share.

    Parameters
    ----------
    config : Config
    noise_size : int
        Length of one noise vector in the table (P, or the low-rank size).
    table_size : int
        Entries in the shared noise table.
    n_params : int
        P, the parameters evolved.
    """

    def __init__(self, config, noise_size: int, table_size: int, n_params: int):
        self.config = config
        self.noise_size = noise_size
        self.table_size = table_size
        self.n_params = n_params
        self.shape = SHAPING[config.shaping]
        self.optimizer = make_optimizer(config, n_params)

    def ask(self, state: ESState) -> np.ndarray:
        """Table offsets of this generation's noise vectors, shape (n_noise,), int64."""
        return member_offsets(self.config.seed, state.generation, self.config.n_noise, self.noise_size, self.table_size)

    def initial_sigma(self) -> np.ndarray | None:
        """The state's standard deviations when a run starts: None where the strategy keeps none."""
        return None

    def noise_scale(self, state: ESState, sigma: float) -> float | np.ndarray:
        """What scales the noise of this generation's members: ``sigma`` (the sigma schedule's
        value), or the state's standard deviations, (P,) float32."""
        raise NotImplementedError

    def weights(self, losses: np.ndarray) -> np.ndarray:
        """The update's weights from the members' losses (n,): (n_noise,) or (2, n_noise), float64."""
        raise NotImplementedError

    def gradient(self, noise, offsets: np.ndarray, weights: np.ndarray):
        """The weighted noise sums :meth:`tell` needs, from ``noise`` (a backend, or
        :class:`fastes.backends.NoiseSum`); buffers reused by the next call."""
        raise NotImplementedError

    def tell(self, state: ESState, gradient, lr: float) -> ESState:
        """Step the state (parameters, optimizer moments, standard deviations, generation)
        in place with learning rate ``lr``; returns it."""
        raise NotImplementedError


class LearnedSigma(Strategy):
    """A strategy with a standard deviation per parameter in its state, ``sigma`` (P,)
    float32, starting at ``--sigma``: member ``i`` is ``theta + s_i sigma * u_k``.

    Its weights are two rows, (2, n_noise): the centre's (``noise_weights``) and the standard
    deviations' (``square_weights``), of advantages scaled by :meth:`scale`; the backend sums
    ``m = sum_k w_k u_k`` and ``q = sum_k v_k (u_k**2 - 1)`` in one pass over the noise.
    Subclasses say how the state follows them (:meth:`tell`) and the default learning rate
    of the standard deviations (:meth:`default_sigma_lr`).
    """

    def __init__(self, config, noise_size: int, table_size: int, n_params: int):
        super().__init__(config, noise_size, table_size, n_params)
        given = config.sigma_lr
        self.sigma_lr = self.default_sigma_lr(n_params) if given is None else given

    @staticmethod
    def default_sigma_lr(n_params: int) -> float:
        """The standard deviations' learning rate for P parameters when ``--sigma-lr`` is not given."""
        raise NotImplementedError

    def scale(self, advantages: np.ndarray) -> np.ndarray:
        """The advantages as the update weighs them."""
        raise NotImplementedError

    def next_sigma(self, sigma: np.ndarray, square: np.ndarray) -> np.ndarray:
        """The standard deviations after this generation, from ``sigma`` (P,) float64, those
        the population was drawn with, and the squares' weighted sum ``square`` (P,)."""
        raise NotImplementedError

    def tell(self, state: ESState, gradient: tuple[np.ndarray, np.ndarray], lr: float) -> ESState:
        """Step the centre with the optimizer along ``sigma * m`` and the standard deviations
        by :meth:`next_sigma`, both from the standard deviations the population was drawn with."""
        center, square = gradient
        sigma = state.sigma.astype(np.float64)
        self.optimizer.step(state.theta, sigma * center, lr, state.optimizer)
        state.sigma[...] = self.next_sigma(sigma, square)
        state.generation += 1
        return state

    def initial_sigma(self) -> np.ndarray:
        return np.full(self.n_params, self.config.sigma, dtype=np.float32)

    def noise_scale(self, state: ESState, sigma: float) -> np.ndarray:
        return state.sigma

    def weights(self, losses: np.ndarray) -> np.ndarray:
        advantages = self.scale(self.shape(losses))
        antithetic = self.config.antithetic
        return np.stack([noise_weights(advantages, antithetic), square_weights(advantages, antithetic)])

    def gradient(self, noise, offsets: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return noise.noise_moments(offsets, weights[0], weights[1])
