"""The training loop: thin Python around the population kernels.

Per generation: ask the strategy for noise offsets, let the backend score the population
on the next batch, shape the losses into noise weights, let the backend sum the weighted
noise into a gradient estimate, take an optimizer step, then score the updated model on
the same batch (the original program's per-epoch training curve is the mean of those).
Test loss and accuracy are measured at the end of every epoch and every
``eval_every_seconds``. All of it is resumable from a :class:`TrainState`.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np

from .backends import Backend, NumbaBackend, NumpyBackend, predict_logits
from .data import Dataset, load_dataset
from .diagnose import divergence_message
from .errors import DivergenceError
from .reference import losses_from_logits
from .state import ACCURACY_LEVELS, ESState, TrainState
from .strategy import build_strategy, schedule

def epoch_order(seed: int, epoch: int, n: int, shuffle: bool) -> np.ndarray:
    """Row order of an epoch: in order (the original), or a permutation from (seed, epoch)."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(n).astype(np.int64)


def make_backend(config, layout, table, dataset, in_memory: bool = False) -> Backend:
    """The backend named by ``config.backend``; ``in_memory`` data cannot be reloaded by
    name (remote workers must be sent it)."""
    if config.backend == "numba":
        return NumbaBackend(config, layout, table, dataset)
    if config.backend == "numpy":
        return NumpyBackend(config, layout, table, dataset)
    from .ray_backend import RayBackend

    return RayBackend(config, layout, table, dataset, in_memory=in_memory)


class Trainer:
    """Trains an MLP with ES as ``config`` says.

    Parameters
    ----------
    config : Config
    dataset : Dataset, optional
        Loaded from ``config.dataset`` / ``config.data_dir`` when not given. A dataset with
        an empty test split skips test evaluation (the estimator's case).
    progress : callable, optional
        Called about every 0.25 s and at each metrics row with a dict of live figures.
    """

    def __init__(self, config, dataset: Dataset | None = None, progress: Callable[[dict], None] | None = None):
        self.config = config
        self.dataset = dataset if dataset is not None else load_dataset(config.dataset, config.data_dir)
        ds = self.dataset
        self.layout, self.table, self.es = build_strategy(config, ds)
        self.backend = make_backend(config, self.layout, self.table, ds, in_memory=dataset is not None)
        self.n_train = len(ds.y_train)
        self.n_batches = math.ceil(self.n_train / config.batch_size)
        self.total_generations = config.epochs * self.n_batches
        self.progress = progress
        self.stop_requested = False
        #: Seconds the kernels took to compile or load from Numba's cache (:meth:`prepare`).
        self.compile_seconds: float | None = None

    # ------------------------------------------------------------------ state

    def initial_state(self) -> TrainState:
        rng = np.random.default_rng(self.config.seed)
        theta = self.layout.init(self.config.init, self.config.init_std, rng)
        return TrainState(theta=theta, optimizer=self.es.optimizer.state())

    def logits(self, theta: np.ndarray, split: str) -> np.ndarray:
        """Logits (N, C) of ``theta`` on the dataset's ``"train"`` or ``"test"`` split (its CSR
        form is built once, by the dataset)."""
        return predict_logits(theta, self.layout, csr=self.dataset.csr(split))

    def evaluate(self, theta: np.ndarray, split: str) -> tuple[float, float]:
        """Mean loss and accuracy of ``theta`` on the ``"train"`` or ``"test"`` split."""
        y = self.dataset.split(split)[1]
        if len(y) == 0:
            return float("nan"), float("nan")
        row_loss, ok = losses_from_logits(self.logits(theta, split), y, self.config.loss)
        return float(row_loss.mean()), float(ok.mean())

    def prepare(self, state: TrainState) -> float:
        """Compile (or load from Numba's cache) every kernel a run calls, by running each once
        on ``state`` without changing it, so that the compile stays out of the training
        clock. Returns the seconds it took, also kept as :attr:`compile_seconds`.

        A first run compiles (seconds); later runs load the machine code from the cache.
        Ray workers compile in their own processes, inside the clock.
        """
        if self.compile_seconds is not None:
            return self.compile_seconds
        if self.config.backend == "ray":
            self.compile_seconds = 0.0
            return 0.0
        if self.progress is not None:
            self.progress({"stage": "compile", "seconds": None})
        started = time.perf_counter()
        cfg, es, backend = self.config, self.es, self.backend
        rows = np.arange(min(cfg.batch_size, self.n_train), dtype=np.int64)
        probe = ESState(state.theta.copy(), state.generation)
        offsets = es.ask(probe)
        weights = es.weights(np.array(backend.population_losses(probe.theta, offsets, cfg.sigma, rows), copy=True))
        backend.noise_sum(offsets, np.zeros_like(weights))
        backend.batch_metrics(probe.theta, rows)
        self.evaluate(probe.theta, "test")
        self.compile_seconds = time.perf_counter() - started
        if self.progress is not None:
            self.progress({"stage": "compile", "seconds": self.compile_seconds})
        return self.compile_seconds

    # ------------------------------------------------------------------ loop

    def run(
        self,
        state: TrainState | None = None,
        max_generations: int | None = None,
        on_epoch: Callable[[TrainState], None] | None = None,
    ) -> TrainState:
        """Train from ``state`` (a fresh one if None) until the epochs, the time budget,
        ``max_generations`` more generations, or :attr:`stop_requested` end it.

        ``on_epoch`` is called after each finished epoch (checkpoints hook in here).
        """
        cfg = self.config
        state = state or self.initial_state()
        self.prepare(state)
        backend = self.backend
        backend.begin(state.theta, state.optimizer, state.generation)
        start = time.perf_counter() - state.elapsed
        next_eval = self._next_eval(state.elapsed)
        next_progress = 0.0
        done = 0
        n_batches, batch = self.n_batches, cfg.batch_size
        while state.epoch < cfg.epochs:
            order = epoch_order(cfg.seed, state.epoch, self.n_train, cfg.shuffle)
            sigma = schedule(cfg.sigma_schedule, cfg.sigma, cfg.sigma_decay, state.epoch, 0.0)
            while state.batch < n_batches:
                if self.stop_requested or (max_generations is not None and done >= max_generations):
                    return self._pause(state, start)
                if cfg.max_seconds is not None and time.perf_counter() - start >= cfg.max_seconds:
                    # the budget ends the run where it is (a larger --max-seconds can resume it)
                    self._record(state, time.perf_counter() - start, partial=True)
                    return self._pause(state, start)
                rows = order[state.batch * batch : (state.batch + 1) * batch]
                progress_frac = state.generation / max(self.total_generations, 1)
                lr = schedule(cfg.lr_schedule, cfg.lr, cfg.lr_decay, state.epoch, progress_frac)
                self.generation(state, rows, sigma, lr, state.epoch)
                loss_sum, correct = backend.batch_metrics(state.theta, rows)
                state.loss_sum += loss_sum
                state.correct += correct
                state.seen += len(rows)
                state.batch += 1
                done += 1
                now = time.perf_counter() - start
                if now >= next_eval and state.batch < n_batches:  # (an epoch's end records anyway)
                    self._record(state, now, partial=True)
                    next_eval = self._next_eval(now)
                if self.progress is not None and now >= next_progress:
                    next_progress = now + 0.25
                    self._report(state, now)
            if not np.isfinite(state.theta).all():
                raise DivergenceError(divergence_message(self, state.generation, state.theta, None, state.epoch))
            state.epoch += 1
            state.batch = 0
            self._record(state, time.perf_counter() - start, partial=False)
            state.loss_sum, state.correct, state.seen = 0.0, 0, 0
            next_eval = self._next_eval(time.perf_counter() - start)
            if on_epoch is not None:
                self._pause(state, start)
                on_epoch(state)
        return self._pause(state, start)

    def generation(self, state: ESState, rows: np.ndarray, sigma: float, lr: float, epoch: int = 0) -> np.ndarray:
        """One ES generation on training ``rows`` (B,): ask for noise, score the population,
        shape the losses, estimate the gradient, step. Returns the losses, shape (n,).

        ``state`` (its parameters, optimizer state and generation) is updated in place."""
        es, backend = self.es, self.backend
        offsets = es.ask(state)
        losses = backend.population_losses(state.theta, offsets, sigma, rows, state.generation)
        if not np.isfinite(losses).all():
            raise DivergenceError(divergence_message(self, state.generation, state.theta, rows, epoch))
        weights = es.weights(losses)
        grad = backend.noise_sum(offsets, weights)
        es.tell(state, grad, lr)
        backend.record_step(weights, lr)
        return losses

    def _next_eval(self, now: float) -> float:
        """When to measure test accuracy next: after 1, 2, 4, 8, 16 s (so that
        time-to-accuracy is resolved early in a run), then every ``eval_every_seconds``."""
        every = self.config.eval_every_seconds
        return now + every if now >= every else min(max(2.0 * now, 1.0), every)

    def _pause(self, state: TrainState, start: float) -> TrainState:
        state.elapsed = time.perf_counter() - start
        return state

    def _record(self, state: TrainState, now: float, partial: bool) -> None:
        if state.history and state.history[-1]["generation"] == state.generation:
            return  # this generation is measured already (an epoch's end, then the budget)
        ds = self.dataset
        test_loss, test_acc = self.evaluate(state.theta, "test")
        epoch = state.epoch + (state.batch / self.n_batches if partial else 0.0)
        row = {
            "epoch": round(epoch, 4),
            "generation": state.generation,
            "wall_seconds": round(now, 3),
            "train_loss": state.train_loss,
            "train_accuracy": state.train_accuracy,
            "test_loss": test_loss,
            "test_accuracy": test_acc,
        }
        state.history.append(row)
        for level in ACCURACY_LEVELS:
            if state.time_to_accuracy.get(level) is None and test_acc >= float(level):
                state.time_to_accuracy[level] = round(now, 3)
        if self.progress is not None:
            self._report(state, now, row)

    def _report(self, state: TrainState, now: float, row: dict | None = None) -> None:
        self.progress({
            "epoch": state.epoch,
            "epochs": self.config.epochs,
            "batch": state.batch,
            "n_batches": self.n_batches,
            "generation": state.generation,
            "total_generations": self.total_generations,
            "elapsed": now,
            "max_seconds": self.config.max_seconds,
            "generations_per_second": state.generation / now if now > 0 else 0.0,
            "train_loss": state.train_loss,
            "train_accuracy": state.train_accuracy,
            "row": row,
        })
