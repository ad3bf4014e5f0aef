"""First-order optimizers for the ES gradient estimate (after OpenAI's ES starter).

Each optimizer *descends*: ``step(theta, grad, lr)`` moves ``theta`` (float32, in place)
against ``grad`` (float64, the loss gradient estimate). Weight decay adds ``wd * theta``
to the gradient first (L2 regularisation). State is a dict of arrays so that checkpoints
can hold it without pickle.
"""

from __future__ import annotations

import numpy as np


class Optimizer:
    name = "base"

    def __init__(self, size: int, weight_decay: float = 0.0):
        self.size = size
        self.weight_decay = weight_decay
        self.t = 0

    def step(self, theta: np.ndarray, grad: np.ndarray, lr: float) -> None:
        """Update ``theta`` (P,) in place from ``grad`` (P,) with learning rate ``lr``."""
        if self.weight_decay:
            grad = grad + self.weight_decay * theta
        self.t += 1
        theta -= self._direction(grad, lr).astype(np.float32)

    def _direction(self, grad: np.ndarray, lr: float) -> np.ndarray:
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        return {"t": np.array(self.t, dtype=np.int64)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.t = int(state["t"])


class SGD(Optimizer):
    """theta -= lr * g."""

    name = "sgd"

    def _direction(self, grad, lr):
        return lr * grad


class Momentum(Optimizer):
    """v = m v + (1 - m) g; theta -= lr * v (OpenAI's SGD with momentum)."""

    name = "momentum"

    def __init__(self, size, weight_decay=0.0, momentum=0.9):
        super().__init__(size, weight_decay)
        self.momentum = momentum
        self.v = np.zeros(size, dtype=np.float64)

    def _direction(self, grad, lr):
        self.v *= self.momentum
        self.v += (1.0 - self.momentum) * grad
        return lr * self.v

    def state(self):
        return {**super().state(), "v": self.v}

    def load_state(self, state):
        super().load_state(state)
        self.v = np.array(state["v"], dtype=np.float64)


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction."""

    name = "adam"

    def __init__(self, size, weight_decay=0.0, beta1=0.9, beta2=0.999, epsilon=1e-8):
        super().__init__(size, weight_decay)
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.m = np.zeros(size, dtype=np.float64)
        self.v = np.zeros(size, dtype=np.float64)

    def _direction(self, grad, lr):
        self.m *= self.beta1
        self.m += (1.0 - self.beta1) * grad
        self.v *= self.beta2
        self.v += (1.0 - self.beta2) * grad * grad
        a = lr * np.sqrt(1.0 - self.beta2**self.t) / (1.0 - self.beta1**self.t)
        return a * self.m / (np.sqrt(self.v) + self.epsilon)

    def state(self):
        return {**super().state(), "m": self.m, "v": self.v}

    def load_state(self, state):
        super().load_state(state)
        self.m = np.array(state["m"], dtype=np.float64)
        self.v = np.array(state["v"], dtype=np.float64)


def make_optimizer(config, size: int) -> Optimizer:
    """The optimizer named by ``config.optimizer`` for ``size`` parameters."""
    if config.optimizer == "sgd":
        return SGD(size, config.weight_decay)
    if config.optimizer == "momentum":
        return Momentum(size, config.weight_decay, config.momentum)
    return Adam(size, config.weight_decay, config.beta1, config.beta2)
