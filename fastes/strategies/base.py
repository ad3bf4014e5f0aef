"""The ask/tell interface that every strategy implements in a module of its own
(:mod:`.openai_es`, :mod:`.pgpe`, :mod:`.snes`), after evosax: a strategy holds only its
hyperparameters; what it evolves is an explicit :class:`fastes.state.ESState` that
:meth:`Strategy.tell` returns anew.

One generation (:func:`fastes.generation.run_generation`): :meth:`Strategy.ask` says which
noise vectors the population uses (their table offsets, a pure function of seed and
generation) and how they are scaled; a backend scores the members; :meth:`Strategy.tell`
shapes the losses into noise weights (:meth:`Strategy.weights`), has the backend sum the
weighted noise (:meth:`Strategy.gradient`) and steps (:meth:`Strategy.step`). The weights are
all an update needs besides the state: Ray workers replay every update from them
(:meth:`Strategy.update`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..state import ESState
from .noise import member_offsets
from .optimizers import make_optimizer
from .shaping import SHAPING, noise_weights, square_weights


class Population(NamedTuple):
    """What :meth:`Strategy.ask` answers: the population of one generation.

    Attributes
    ----------
    offsets : ndarray of shape (n_noise,), int64
        Table offsets of the noise vectors.
    scale : float or ndarray of shape (P,), float32
        What scales the noise: the sigma schedule's value, or the state's standard deviations.
    """

    offsets: np.ndarray
    scale: float | np.ndarray


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

    def initial_sigma(self) -> np.ndarray | None:
        """The state's standard deviations when a run starts: None where the strategy keeps none."""
        return None

    def ask(self, state: ESState, sigma: float) -> Population:
        """This generation's population around ``state.theta``; ``sigma`` is the sigma
        schedule's value (a strategy that learns its standard deviations uses those)."""
        cfg = self.config
        offsets = member_offsets(cfg.seed, state.generation, cfg.n_noise, self.noise_size, self.table_size)
        return Population(offsets, self.noise_scale(state, sigma))

    def tell(self, state: ESState, population: Population, losses: np.ndarray, noise, lr: float
             ) -> tuple[ESState, np.ndarray]:
        """The state after this generation, from its members' ``losses`` (n,), and the noise
        weights it stepped with; ``noise`` (a backend) sums the weighted noise. ``state`` is
        left as it was."""
        weights = self.weights(losses)
        return self.update(state, population.offsets, weights, noise, lr), weights

    def update(self, state: ESState, offsets: np.ndarray, weights: np.ndarray, noise, lr: float) -> ESState:
        """The state after a step with these noise ``weights`` (what a Ray worker replays)."""
        return self.step(state, self.gradient(noise, offsets, weights), lr)

    def noise_scale(self, state: ESState, sigma: float) -> float | np.ndarray:
        """What scales the noise of this generation's members: ``sigma`` (the sigma schedule's
        value), or the state's standard deviations, (P,) float32."""
        raise NotImplementedError

    def weights(self, losses: np.ndarray) -> np.ndarray:
        """The update's weights from the members' losses (n,): (n_noise,) or (2, n_noise), float64."""
        raise NotImplementedError

    def gradient(self, noise, offsets: np.ndarray, weights: np.ndarray):
        """The weighted noise sums :meth:`step` needs, from ``noise`` (a backend, or
        :class:`fastes.backends.NoiseSum`); buffers reused by the next call."""
        raise NotImplementedError

    def step(self, state: ESState, gradient, lr: float) -> ESState:
        """The state one optimizer step (learning rate ``lr``) along ``gradient`` on."""
        raise NotImplementedError

    def _stepped(self, state: ESState, direction: np.ndarray, lr: float, sigma: np.ndarray | None = None) -> ESState:
        """The next generation's state: the optimizer's step along ``direction`` (P,) float64,
        and the standard deviations ``sigma`` where the strategy learns them."""
        theta, optimizer = self.optimizer.step(state.theta, direction, lr, state.optimizer)
        return state.advanced(theta, optimizer, state.sigma if sigma is None else sigma)


class LearnedSigma(Strategy):
    """A strategy with a standard deviation per parameter in its state, ``sigma`` (P,)
    float32, starting at ``--sigma``: member ``i`` is ``theta + s_i sigma * u_k``.

    Its weights are two rows, (2, n_noise): the centre's (``noise_weights``) and the standard
    deviations' (``square_weights``), of advantages scaled by :meth:`scale`; the backend sums
    ``m = sum_k w_k u_k`` and ``q = sum_k v_k (u_k**2 - 1)`` in one pass over the noise.
    Subclasses say how the standard deviations follow them (:meth:`next_sigma`) and their
    default learning rate (:meth:`default_sigma_lr`).
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

    def step(self, state: ESState, gradient: tuple[np.ndarray, np.ndarray], lr: float) -> ESState:
        """The centre stepped by the optimizer along ``sigma * m`` and the standard deviations
        by :meth:`next_sigma`, both from the standard deviations the population was drawn with."""
        center, square = gradient
        sigma = state.sigma.astype(np.float64)
        return self._stepped(state, sigma * center, lr, sigma=self.next_sigma(sigma, square).astype(np.float32))

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
