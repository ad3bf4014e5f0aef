"""The evolution strategy: fitness shaping, noise weights and the ask/tell cycle.

Ask/tell on an explicit state (after evosax): :meth:`OpenES.ask` says which noise vectors a
generation uses (their table offsets, a pure function of seed and generation), somebody
evaluates the population (:mod:`fastes.backends`), and :meth:`OpenES.tell` turns the losses
into a gradient estimate and an optimizer step.

Gradient estimate, as in the original program: with ``eps_i = sigma * u_i`` the perturbation
of member ``i`` and ``adv_i`` its shaped loss, ``g = sum_i adv_i eps_i / (n sigma)
= sum_i adv_i u_i / n``; the optimizer then descends ``g`` (SGD: ``theta -= lr * g``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .layout import ParamLayout
from .noise import member_offsets, noise_table, table_size_for
from .optimizers import make_optimizer
from .state import ESState


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


SHAPING = {"zscore": zscore, "centered-rank": centered_rank}


def noise_weights(advantages: np.ndarray, antithetic: bool) -> np.ndarray:
    """Weight of each noise vector: its member's advantage, or ``adv(+u) - adv(-u)``."""
    if antithetic:
        return advantages[0::2] - advantages[1::2]
    return advantages.copy()


def schedule(kind: str, base: float, decay: float, epoch: int, progress: float) -> float:
    """A learning rate or sigma: ``constant``, ``exponential`` (``decay**epoch``) or
    ``cosine`` (annealed to zero over ``progress`` in [0, 1])."""
    if kind == "constant":
        return base
    if kind == "exponential":
        return base * decay**epoch
    return base * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


class OpenES:
    """OpenAI-style ES over a flat parameter vector.

    Parameters
    ----------
    config : Config
    noise_size : int
        Length of one noise vector in the table (P, or the low-rank size).
    table_size : int
        Entries in the shared noise table.
    """

    def __init__(self, config, noise_size: int, table_size: int, n_params: int):
        self.config = config
        self.noise_size = noise_size
        self.table_size = table_size
        self.shape = SHAPING[config.shaping]
        self.optimizer = make_optimizer(config, n_params)

    def ask(self, state: ESState) -> np.ndarray:
        """Table offsets of this generation's noise vectors, shape (n_noise,), int64."""
        return member_offsets(self.config.seed, state.generation, self.config.n_noise, self.noise_size, self.table_size)

    def weights(self, losses: np.ndarray) -> np.ndarray:
        """Per-noise-vector weights of the gradient estimate, already divided by n."""
        weights = noise_weights(self.shape(losses), self.config.antithetic)
        weights /= self.config.population
        return weights

    def tell(self, state: ESState, grad: np.ndarray, lr: float) -> ESState:
        """Take one optimizer step along the gradient estimate ``grad`` (P,), float64: the
        state's parameters, optimizer moments and generation, updated in place."""
        self.optimizer.step(state.theta, grad, lr, state.optimizer)
        state.generation += 1
        return state


def build_strategy(config, dataset) -> tuple[ParamLayout, np.ndarray, OpenES]:
    """What a run on ``dataset`` evolves and draws from: the model's layout, the shared
    noise table (sized to its noise vectors) and the strategy."""
    layout = ParamLayout.for_mlp(dataset.n_features, config.hidden, dataset.n_classes)
    noise_size = layout.noise_size(config.perturbation, config.rank)
    table = noise_table(table_size_for(noise_size))
    return layout, table, OpenES(config, noise_size, len(table), layout.size)
