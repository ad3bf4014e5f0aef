"""One ES generation: the sequence of calls that the trainer, ``fastes bench`` and the Ray
driver all run.

Ask the strategy for the population, let the backend score every member on the batch,
optionally score the centre on the same rows before it moves, let the strategy shape the
losses and step (the backend sums the weighted noise), and tell the backend which step was
taken (a remote backend replays it on its workers). The state passed in is left as it was.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .state import ESState


class LossesNotFinite(Exception):
    """Some member's loss is NaN or infinite: the generation stopped before its step."""


class GenerationResult(NamedTuple):
    """What one generation gives back.

    Attributes
    ----------
    state : ESState
        The state after the step (of the class of the state passed in).
    losses : ndarray of shape (n,), float64
        Every member's mean loss on the batch.
    centre : tuple of (float, int) or None
        The centre's summed loss and correct count on the batch, before the step (when asked).
    """

    state: ESState
    losses: np.ndarray
    centre: tuple[float, int] | None


def run_generation(strategy, backend, state: ESState, rows: np.ndarray, sigma: float, lr: float,
                   score_centre: bool = False) -> GenerationResult:
    """One generation of ``strategy`` on training ``rows`` (B,) with ``backend``, at the sigma
    schedule's value ``sigma`` and learning rate ``lr``.

    Raises :class:`LossesNotFinite` before the step when a member's loss is NaN or infinite.
    """
    population = strategy.ask(state, sigma)
    losses = backend.population_losses(state.theta, population.offsets, population.scale, rows, state.generation)
    if not np.isfinite(losses).all():
        raise LossesNotFinite
    centre = backend.batch_metrics(state.theta, rows) if score_centre else None
    stepped, weights = strategy.tell(state, population, losses, backend, lr)
    backend.record_step(weights, lr)
    return GenerationResult(stepped, losses, centre)
