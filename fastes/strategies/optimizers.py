"""First-order optimizers for the ES gradient estimate (after OpenAI's ES starter, and
ClipUp, Toklu et al. 2020).

Each optimizer *descends*: ``step(theta, grad, lr, state)`` returns ``theta`` (float32)
moved against ``grad`` (float64, the loss gradient estimate) and the optimizer's next
state, both new arrays (the arguments are left as they were). Weight decay adds
``wd * theta`` to the gradient first (L2 regularisation). An optimizer holds only its
hyperparameters; its step count and moments are a dict of arrays (:meth:`Optimizer.state`)
that lives in the strategy's state (:class:`fastes.state.ESState`), so that checkpoints
hold it without pickle.
"""

from __future__ import annotations

import math

import numpy as np


class Optimizer:
    """Base class: weight decay and the step count.

    Parameters
    ----------
    size : int
        Number of parameters P.
    weight_decay : float
    """

    def __init__(self, size: int, weight_decay: float = 0.0):
        self.size = size
        self.weight_decay = weight_decay

    def state(self) -> dict[str, np.ndarray]:
        """A fresh state: no step taken (``t``, 0-d int64) and moments at zero, (P,) float64."""
        return {"t": np.array(0, dtype=np.int64)}

    def step(self, theta: np.ndarray, grad: np.ndarray, lr: float, state: dict[str, np.ndarray]
             ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``theta`` (P,) after a step along ``grad`` (P,) with learning rate ``lr``, and the
        next optimizer state."""
        if self.weight_decay:
            grad = grad + self.weight_decay * theta
        direction, moments = self._direction(grad, lr, state, int(state["t"]) + 1)
        return theta - direction.astype(np.float32), {"t": np.array(int(state["t"]) + 1, dtype=np.int64), **moments}

    def _direction(self, grad: np.ndarray, lr: float, state: dict[str, np.ndarray], t: int
                   ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The step (P,) float64 and the new moments, at step count ``t`` (1 for the first)."""
        raise NotImplementedError


class SGD(Optimizer):
    """theta -= lr * g."""

    def _direction(self, grad, lr, state, t):
        return lr * grad, {}


class Momentum(Optimizer):
    """v = m v + (1 - m) g; theta -= lr * v (OpenAI's SGD with momentum)."""

    def __init__(self, size, weight_decay=0.0, momentum=0.9):
        super().__init__(size, weight_decay)
        self.momentum = momentum

    def state(self):
        return {**super().state(), "v": np.zeros(self.size, dtype=np.float64)}

    def _direction(self, grad, lr, state, t):
        v = state["v"] * self.momentum + (1.0 - self.momentum) * grad
        return lr * v, {"v": v}


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction."""

    def __init__(self, size, weight_decay=0.0, beta1=0.9, beta2=0.999, epsilon=1e-8):
        super().__init__(size, weight_decay)
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon

    def state(self):
        return {**super().state(), "m": np.zeros(self.size, dtype=np.float64), "v": np.zeros(self.size, dtype=np.float64)}

    def _direction(self, grad, lr, state, t):
        m = state["m"] * self.beta1 + (1.0 - self.beta1) * grad
        v = state["v"] * self.beta2 + (1.0 - self.beta2) * grad * grad
        a = lr * np.sqrt(1.0 - self.beta2**t) / (1.0 - self.beta1**t)
        return a * m / (np.sqrt(v) + self.epsilon), {"m": m, "v": v}


class ClipUp(Optimizer):
    """ClipUp (Toklu, Liskowski & Srivastava 2020): heavy-ball momentum on the *normalised*
    gradient, the velocity clipped to a maximum speed: ``v = m v + lr g / |g|``, then
    ``v *= max_speed / |v|`` if ``|v| > max_speed``; ``theta -= v``.

    The step never exceeds ``max_speed`` (an L2 norm over all parameters) whatever the
    scale of the losses, which is what makes its two numbers easy to choose: the paper's
    rule of thumb is ``lr = max_speed / 2`` (the default when ``max_speed`` is None).

    Parameters
    ----------
    size : int
    weight_decay : float
    momentum : float
    max_speed : float or None
        None: twice the learning rate of each step (so it follows the lr schedule).
    """

    def __init__(self, size, weight_decay=0.0, momentum=0.9, max_speed=None):
        super().__init__(size, weight_decay)
        self.momentum, self.max_speed = momentum, max_speed

    def state(self):
        return {**super().state(), "v": np.zeros(self.size, dtype=np.float64)}

    def _direction(self, grad, lr, state, t):
        v = state["v"] * self.momentum
        norm = _norm(grad)
        if norm > 0.0:  # a zero gradient (all losses tied) has no direction to add
            v += (lr / norm) * grad
        speed = _norm(v)
        limit = 2.0 * lr if self.max_speed is None else self.max_speed
        if speed > limit:
            v *= limit / speed
        return v, {"v": v}


def _norm(x: np.ndarray) -> float:
    """The L2 norm of ``x``, summed by NumPy, not BLAS: BLAS threads left spinning after a
    call take the cores from the next kernel's threads (see :class:`fastes.backends.NoiseSum`)."""
    return math.sqrt(float(np.square(x).sum()))


def make_optimizer(config, size: int) -> Optimizer:
    """The optimizer named by ``config.optimizer`` for ``size`` parameters."""
    if config.optimizer == "sgd":
        return SGD(size, config.weight_decay)
    if config.optimizer == "momentum":
        return Momentum(size, config.weight_decay, config.momentum)
    if config.optimizer == "clipup":
        return ClipUp(size, config.weight_decay, config.momentum, config.max_speed)
    return Adam(size, config.weight_decay, config.beta1, config.beta2)
