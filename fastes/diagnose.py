"""Why training diverged: the message of a :class:`DivergenceError`, naming the option
that most likely caused it, found by scoring the unperturbed model.

* the model itself scores NaN/inf before any step: the initial weights (``--init-std``);
* it scores NaN/inf after steps: the steps (``--lr``, or ``--weight-decay`` when
  ``lr * weight_decay`` makes plain SGD or momentum grow the weights every step);
* only its perturbed copies do: the perturbation (``--sigma``).
"""

from __future__ import annotations

import numpy as np


#: A weight decay whose product with a weight, squared, overflows float64 for weights of order 1e-4.
_DECAY_OVERFLOWS = 1e150


def divergence_message(trainer, generation: int, theta: np.ndarray, rows, epoch: int) -> str:
    """What became NaN/inf at ``generation`` (epoch ``epoch``, 0-based), and which option to change.

    ``rows``: the batch whose population losses were not finite, or None when the
    parameters themselves are not finite.
    """
    cfg = trainer.config
    sigma, lr = cfg.sigma, cfg.lr
    where = f"at generation {generation} (epoch {epoch + 1})"
    if rows is not None and _model_is_finite(trainer, theta, rows):
        learned = ""
        if cfg.learns_sigma:  # the standard deviations grew from --sigma by their own steps
            learned = f" or --sigma-lr ({trainer.es.sigma_lr:g})"
        return (f"population loss became NaN/inf {where} while the model itself is finite: the perturbations are "
                f"too large; lower --sigma ({sigma:g}){learned}")
    what = "parameters became NaN/inf" if rows is None else "the model's loss became NaN/inf"
    if generation == 0:
        if cfg.init == "normal":
            return f"{what} {where}, before any step: the initial weights are too large; lower --init-std ({cfg.init_std:g})"
        return f"{what} {where}, before any step: the initial weights (--init {cfg.init}) are too large for this data"
    if cfg.weight_decay and cfg.optimizer != "adam" and lr * cfg.weight_decay >= 1.0:
        return (f"{what} {where}: lr x weight_decay = {lr * cfg.weight_decay:g} >= 1 makes every step grow the weights; "
                f"lower --weight-decay ({cfg.weight_decay:g}) or the learning rate (--lr {lr:g})")
    if cfg.weight_decay >= _DECAY_OVERFLOWS:  # the decay term's square, in Adam's moments, is infinite
        return (f"{what} {where}: weight_decay {cfg.weight_decay:g} makes the gradient's decay term overflow; "
                "lower --weight-decay (L2 strengths are well below 1)")
    return f"{what} {where}: the steps are too large; lower the learning rate (--lr {lr:g})"


def _model_is_finite(trainer, theta: np.ndarray, rows) -> bool:
    if not np.isfinite(theta).all():
        return False
    with np.errstate(all="ignore"):
        loss_sum, _ = trainer.backend.batch_metrics(theta, rows)
    return bool(np.isfinite(loss_sum))
