"""OpenAI's evolution strategy (Salimans et al. 2017): one noise scale for every parameter.

With ``eps_i = sigma * u_i`` the perturbation of member ``i`` and ``adv_i`` its shaped loss,
the gradient estimate is, as in the original program, ``g = sum_i adv_i eps_i / (n sigma)
= sum_i adv_i u_i / n``; the optimizer then descends ``g`` (SGD: ``theta -= lr * g``).
``sigma`` follows the sigma schedule, outside the state.
"""

from __future__ import annotations

import numpy as np

from ..state import ESState
from .base import Strategy
from .shaping import noise_weights


class OpenES(Strategy):
    """OpenAI-style ES over a flat parameter vector (see :class:`fastes.strategies.base.Strategy`)."""

    def noise_scale(self, state: ESState, sigma: float) -> float:
        return sigma

    def weights(self, losses: np.ndarray) -> np.ndarray:
        """Per-noise-vector weights of the gradient estimate, already divided by n, (n_noise,)."""
        weights = noise_weights(self.shape(losses), self.config.antithetic)
        weights /= self.config.population
        return weights

    def gradient(self, noise, offsets: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """``g = sum_k weights[k] u_k``, (P,) float64."""
        return noise.noise_sum(offsets, weights)

    def step(self, state: ESState, gradient: np.ndarray, lr: float) -> ESState:
        """One optimizer step along the gradient estimate (P,), float64."""
        return self._stepped(state, gradient, lr)
