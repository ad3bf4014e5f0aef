"""PGPE (Sehnke et al. 2010): policy gradients with parameter-based exploration, in the form
of EvoTorch and EvoJAX (centred ranks, symmetric sampling, ClipUp or Adam on the centre).

The search distribution is ``N(theta, diag(sigma**2))``, ``sigma`` a standard deviation per
parameter. With ``a_m`` the members' advantages (shaped losses), ``n`` the population and
``s = sigma * u`` each member's perturbation, both parameters follow REINFORCE estimates of
the expected loss's gradient: for antithetic pairs (the paper's symmetric sampling)

    g_theta = sum_k (a_k+ - a_k-) / 2 * s_k / (n / 2) = sigma * sum_k (a_k+ - a_k-) u_k / n
    g_sigma = sum_k (a_k+ + a_k-) / 2 * (s_k**2 - sigma**2) / sigma / (n / 2)
            = sigma * sum_k (a_k+ + a_k-) (u_k**2 - 1) / n

(one sign alone: ``a_k`` in place of the difference and the sum). The optimizer (ClipUp in
the ``pgpe`` preset) descends ``g_theta``; ``sigma`` takes a plain step of
``--sigma-lr`` along ``-g_sigma``, each entry changed by at most ``--sigma-max-change`` of
itself (EvoTorch's and EvoJAX's 0.2, after Ha 2017), so that no standard deviation
collapses or explodes in one generation.
"""

from __future__ import annotations

import numpy as np

from .base import LearnedSigma

#: Default learning rate of the standard deviations (EvoTorch's examples and the ClipUp paper use 0.1).
SIGMA_LR = 0.1


class PGPE(LearnedSigma):
    """PGPE with a standard deviation per parameter (see the module docstring)."""

    @staticmethod
    def default_sigma_lr(n_params: int) -> float:
        return SIGMA_LR

    def scale(self, advantages: np.ndarray) -> np.ndarray:
        """Advantages over the population: the sums become the means of the module docstring."""
        return advantages / self.config.population

    def next_sigma(self, sigma: np.ndarray, square: np.ndarray) -> np.ndarray:
        """A step of ``sigma_lr`` along ``-g_sigma``, each entry's change clipped to
        ``sigma_max_change`` of itself."""
        limit = self.config.sigma_max_change * sigma
        return sigma + np.clip(-self.sigma_lr * sigma * square, -limit, limit)
