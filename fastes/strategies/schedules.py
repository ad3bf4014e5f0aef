"""Schedules of the learning rate and of sigma over a run."""

from __future__ import annotations

import math


def schedule(kind: str, base: float, decay: float, epoch: int, progress: float) -> float:
    """A learning rate or sigma: ``constant``, ``exponential`` (``decay**epoch``) or
    ``cosine`` (annealed to zero over ``progress`` in [0, 1])."""
    if kind == "constant":
        return base
    if kind == "exponential":
        return base * decay**epoch
    return base * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
