"""The NumPy backend: the population scored by the plain NumPy reference
(:mod:`.reference`), slow and readable: the kernels' yardstick."""

from __future__ import annotations

from . import reference
from .protocol import InProcess, train_labels


class NumpyBackend(InProcess):
    """The :class:`Backend` of the plain NumPy reference (slow; the kernels' yardstick).

    Parameters
    ----------
    config : Config
    layout : ParamLayout
    table : ndarray of shape (T,), float32
    dataset : Dataset
    """

    threads = None

    def __init__(self, config, layout, table, dataset):
        self.config = config
        self.layout = layout
        self.table = table
        self.dataset = dataset
        self.labels = train_labels(dataset)

    def population_losses(self, theta, offsets, sigma, rows, generation=None):
        c = self.config
        losses, _ = reference.population_losses(
            theta, (self.table, offsets), sigma, self.layout, self.dataset.dense("train", rows), self.labels[rows],
            c.loss, c.antithetic, c.perturbation, c.rank,
        )
        return losses

    def noise_sum(self, offsets, weights):
        if self.config.perturbation == "lowrank":
            return reference.lowrank_weighted_sum(self.table, offsets, weights, self.layout, self.config.rank)
        return reference.noise_weighted_sum(self.table, offsets, weights, self.layout.size)

    def noise_moments(self, offsets, weights, square_weights):
        return reference.noise_moments(self.table, offsets, weights, square_weights, self.layout.size)

    def batch_metrics(self, theta, rows):
        logits = reference.forward_logits(theta, self.layout, self.dataset.dense("train", rows))
        row_loss, ok = reference.losses_from_logits(logits, self.labels[rows], self.config.loss)
        return float(row_loss.sum()), int(ok.sum())

