"""SNES, separable natural evolution strategies (Schaul, Glasmachers & Schmidhuber 2011).

The search distribution is ``N(theta, diag(sigma**2))``. With utilities ``w_m`` of the
members (the shaped losses' negatives: NES's own utilities with ``--shaping nes``; any other
shaping scaled so that their absolute values sum to 1, as EvoTorch does) and ``u_m`` each
member's standard-normal noise, the natural gradients of the expected fitness are

    grad_theta = sum_m w_m u_m          grad_log_sigma = sum_m w_m (u_m**2 - 1)

and the update, in the natural-gradient form:

    theta += lr * sigma * grad_theta    sigma *= exp(sigma_lr / 2 * grad_log_sigma)

Here the optimizer takes the centre's step: SGD with ``--lr 1`` is the paper's update
(another optimizer follows the same direction its own way). The paper's defaults are
functions of the dimension P: population :func:`default_population` (``4 + floor(3 ln P)``),
``lr = 1`` and ``sigma_lr = (3 + ln P) / (5 sqrt P)`` (:func:`default_sigma_lr`, used when
``--sigma-lr`` is not given). Antithetic pairs share a noise vector: the sums run over
both members, ``-u`` for the second.
"""

from __future__ import annotations

import math

import numpy as np

from .base import LearnedSigma


def default_population(n_params: int) -> int:
    """SNES's population for P parameters: ``4 + floor(3 ln P)``."""
    return 4 + int(math.floor(3.0 * math.log(n_params)))


class SNES(LearnedSigma):
    """Separable NES with a standard deviation per parameter (see the module docstring)."""

    @staticmethod
    def default_sigma_lr(n_params: int) -> float:
        """SNES's learning rate of the standard deviations for P parameters, ``(3 + ln P) / (5 sqrt P)``."""
        return (3.0 + math.log(n_params)) / (5.0 * math.sqrt(n_params))

    def scale(self, advantages: np.ndarray) -> np.ndarray:
        """NES's utilities as they are; other advantages over the sum of their absolute
        values (all ties: all zero)."""
        total = np.abs(advantages).sum()
        return advantages / total if total > 0 and self.config.shaping != "nes" else advantages

    def next_sigma(self, sigma: np.ndarray, square: np.ndarray) -> np.ndarray:
        """``sigma * exp(-sigma_lr q / 2)``, ``q`` the squares' sum weighted by the advantages
        (the utilities' negatives); the centre's step is ``theta -= lr sigma m``."""
        return sigma * np.exp(-0.5 * self.sigma_lr * square)
