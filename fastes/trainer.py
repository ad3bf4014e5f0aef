"""The training loop: thin Python around the population kernels.

Per generation, :func:`fastes.generation.run_generation` on the next batch, with the
centre scored on that batch before its step (the per-epoch training curve is the mean of
those; the Numba backend reads it off the population call's first layer).
Test loss and accuracy are measured at the end of every epoch and every
``eval_every_seconds``. All of it is resumable from a :class:`TrainState`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .backends import make_backend, predict_logits
from .io.data import Dataset, epoch_order, load_dataset
from .io.projection import network_inputs
from .diagnose import divergence_message
from .errors import DivergenceError
from .backends.reference import losses_from_logits
from .generation import GenerationResult, LossesNotFinite, run_generation
from .state import ACCURACY_LEVELS, ESState, TrainState
from .strategies import build_strategy
from .strategies.schedules import schedule


def next_evaluation(now: float, every: float) -> float:
    """When to measure test accuracy next, ``now`` seconds into a run: after 1, 2, 4, 8,
    16 s (so that time-to-accuracy is resolved early in a run), then every ``every`` s."""
    return now + every if now >= every else min(max(2.0 * now, 1.0), every)


class _Clock:
    """A run's wall seconds (continuing the ``elapsed`` seconds it had before this
    process took over), and when its next timed evaluation and progress report are due."""

    PROGRESS_EVERY = 0.25

    def __init__(self, elapsed: float, eval_every: float):
        self.start = time.perf_counter() - elapsed
        self.eval_every = eval_every
        self.next_eval = next_evaluation(elapsed, eval_every)
        self.next_progress = 0.0

    def now(self) -> float:
        return time.perf_counter() - self.start

    def evaluation_due(self, now: float) -> bool:
        """Whether a timed evaluation is due (if so, the next one is scheduled)."""
        if now < self.next_eval:
            return False
        self.evaluated(now)
        return True

    def evaluated(self, now: float) -> None:
        self.next_eval = next_evaluation(now, self.eval_every)

    def progress_due(self, now: float) -> bool:
        """Whether a progress report is due (if so, the next one is scheduled)."""
        if now < self.next_progress:
            return False
        self.next_progress = now + self.PROGRESS_EVERY
        return True

    def stamp(self, state: TrainState) -> TrainState:
        """``state`` with its elapsed seconds brought up to now."""
        state.elapsed = self.now()
        return state


@dataclass
class _Budget:
    """What may end a run before its epochs, besides a stop request."""

    max_seconds: float | None
    max_generations: int | None
    done: int = 0  #: generations run by this call

    def generations_spent(self) -> bool:
        return self.max_generations is not None and self.done >= self.max_generations

    def seconds_spent(self, now: float) -> bool:
        return self.max_seconds is not None and now >= self.max_seconds


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
        made = network_inputs(config, self.dataset)
        #: What the model is scored on: the dataset, or its ``--pca`` coordinates (unmoved)
        self.inputs = made.scored
        #: ``--shift``'s mover of the training rows the backend holds (None without)
        self.shifted = made.moves
        #: ``--pca``'s mean and directions (None without)
        self.projection = made.projection
        ds = made.train
        self.layout, self.table, self.es = build_strategy(config, ds)
        self.backend = make_backend(config, self.layout, self.table, ds, in_memory=dataset is not None,
                                    projection=self.projection)
        self.n_train = len(ds.y_train)
        self.n_batches = math.ceil(self.n_train / config.batch_size)
        self.total_generations = config.epochs * self.n_batches
        self.progress = progress
        self.stop_requested = False
        self._on_record: Callable[[TrainState], None] | None = None
        #: Seconds the kernels took to compile or load from Numba's cache (:meth:`prepare`).
        self.compile_seconds: float | None = None
        #: Generations per second measured by :meth:`fit_budget` (None: no plan was fitted).
        self.planned_rate: float | None = None

    # ------------------------------------------------------------------ state

    def initial_state(self) -> TrainState:
        rng = np.random.default_rng(self.config.seed)
        theta = self.layout.init(self.config.init, self.config.init_std, rng)
        return TrainState(theta=theta, optimizer=self.es.optimizer.state(), sigma=self.es.initial_sigma())

    def logits(self, theta: np.ndarray, split: str) -> np.ndarray:
        """Logits (N, C) of ``theta`` on the dataset's ``"train"`` or ``"test"`` split (its CSR
        form is built once, by the dataset)."""
        return predict_logits(theta, self.layout, csr=self.inputs.csr(split))

    def evaluate(self, theta: np.ndarray, split: str) -> tuple[float, float]:
        """Mean loss and accuracy of ``theta`` on the ``"train"`` or ``"test"`` split."""
        y = self.inputs.split(split)[1]
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
        rows = np.arange(min(self.config.batch_size, self.n_train), dtype=np.int64)
        self.generation(state, rows, self._sigma(state), self._lr(state), state.epoch)  # its new state is dropped
        self.evaluate(state.theta, "test")
        self.compile_seconds = time.perf_counter() - started
        if self.progress is not None:
            self.progress({"stage": "compile", "seconds": self.compile_seconds})
        return self.compile_seconds

    #: Share of the budget the fitted epochs plan for: room for the test evaluations,
    #: checkpoints and a machine that slows down a little during the run.
    FIT_MARGIN = 0.95
    #: Seconds spent timing generations for the plan (at most 1% of the budget).
    FIT_SECONDS = 2.0

    def fit_budget(self, state: TrainState) -> int:
        """Lower ``config.epochs`` to what ``config.max_seconds`` holds, from generations
        timed on a copy of ``state`` (outside the training clock; ``state`` is unchanged).

        The fitted plan replaces :attr:`config` (with ``fit_budget`` off), so the run's
        config.toml and checkpoints hold it: ``--resume`` and ``--config`` repeat the run bit
        for bit on any machine. A machine twice slower plans half the epochs and still
        anneals its schedule completely. Returns the epochs planned.
        """
        cfg = self.config
        probe = state  # each generation returns a new state: ``state`` itself never moves
        self.backend.begin(probe)
        order = epoch_order(cfg.seed, probe.epoch, self.n_train, cfg.shuffle)
        seconds = min(self.FIT_SECONDS, 0.01 * cfg.max_seconds)
        seconds_left = max(cfg.max_seconds - state.elapsed, 0.0)
        epoch_seconds = self._epoch_setup_seconds(state)

        def budget_epochs(rate: float) -> int:
            # every epoch also moves (and projects) its rows: generations per second net of that
            rate = 1.0 / (1.0 / rate + epoch_seconds / self.n_batches)
            return math.floor((state.generation + rate * seconds_left * self.FIT_MARGIN) / self.n_batches)

        timed, started = 0, time.perf_counter()
        while timed < 2 or (time.perf_counter() - started < seconds and timed < self.n_batches):
            rows = self._batch_rows(order, timed)
            probe = self.generation(probe, rows, self._sigma(probe), self._lr(probe), probe.epoch).state
            timed += 1
            # A budget that would not hold the run's next epoch even at twice the rate just
            # measured plans that one epoch whatever more timing says (short runs, CI)
            if budget_epochs(2 * timed / (time.perf_counter() - started)) <= state.epoch + 1:
                break
        self.planned_rate = timed / (time.perf_counter() - started)
        epochs = max(state.epoch + 1, min(cfg.epochs, budget_epochs(self.planned_rate)))
        self.config = cfg.replace(epochs=epochs, fit_budget=False)
        self.total_generations = epochs * self.n_batches
        if self.progress is not None:
            self.progress({"stage": "plan", "epochs": epochs, "rate": self.planned_rate, "max_seconds": cfg.max_seconds})
        return epochs

    def _epoch_setup_seconds(self, state: TrainState) -> float:
        """Seconds ``--shift`` takes to move (and with ``--pca`` project) an epoch's rows, timed
        on the next epoch's, the current epoch's rows set back after; 0 without ``--shift``."""
        if self.shifted is None:
            return 0.0
        started = time.perf_counter()
        self.shifted.set_epoch(state.epoch + 1)
        seconds = time.perf_counter() - started
        self.shifted.set_epoch(state.epoch)
        return seconds

    # ------------------------------------------------------------------ loop

    def run(
        self,
        state: TrainState | None = None,
        max_generations: int | None = None,
        on_epoch: Callable[[TrainState], None] | None = None,
        on_record: Callable[[TrainState], None] | None = None,
    ) -> TrainState:
        """Train from ``state`` (a fresh one if None) until the epochs, the time budget,
        ``max_generations`` more generations, or :attr:`stop_requested` end it.

        ``on_epoch`` is called after each finished epoch (checkpoints hook in here), and
        ``on_record`` after each row added to ``state.history`` (metrics.csv hooks in here).
        """
        self._on_record = on_record
        state = state or self.initial_state()
        self.prepare(state)
        if self.config.fit_budget:
            self.fit_budget(state)
        self.backend.begin(state)
        clock = _Clock(state.elapsed, self.config.eval_every_seconds)
        budget = _Budget(self.config.max_seconds, max_generations)
        while state.epoch < self.config.epochs:
            state, finished = self._train_epoch(state, clock, budget)
            if not finished:
                break
            self._end_epoch(state, clock)
            if on_epoch is not None:
                on_epoch(clock.stamp(state))
        return clock.stamp(state)

    def _train_epoch(self, state: TrainState, clock: _Clock, budget: _Budget) -> tuple[TrainState, bool]:
        """The epoch's remaining batches: the state after them, and False when the budget
        ends the run first."""
        cfg = self.config
        order = epoch_order(cfg.seed, state.epoch, self.n_train, cfg.shuffle)
        if self.shifted is not None:
            self.shifted.set_epoch(state.epoch)
        sigma = self._sigma(state)
        while state.batch < self.n_batches:
            if self._out_of_budget(state, clock, budget):
                return state, False
            rows = self._batch_rows(order, state.batch)
            result = self.generation(state, rows, sigma, self._lr(state), state.epoch, score_centre=True)
            state = self._count_batch(result, len(rows))
            budget.done += 1
            self._between_batches(state, clock)
        return state, True

    # ------------------------------------------------------------------ one concern each

    def _batch_rows(self, order: np.ndarray, batch: int) -> np.ndarray:
        """Training rows of the epoch's ``batch``-th batch in its row ``order``."""
        size = self.config.batch_size
        return order[batch * size : (batch + 1) * size]

    def _sigma(self, state: TrainState) -> float:
        """This epoch's value of the sigma schedule (a strategy that learns its standard
        deviations uses those instead)."""
        cfg = self.config
        return schedule(cfg.sigma_schedule, cfg.sigma, cfg.sigma_decay, state.epoch, 0.0)

    def _lr(self, state: TrainState) -> float:
        """This generation's learning rate (cosine: annealed over every generation of the run)."""
        cfg = self.config
        progress = state.generation / max(self.total_generations, 1)
        return schedule(cfg.lr_schedule, cfg.lr, cfg.lr_decay, state.epoch, progress)

    def _out_of_budget(self, state: TrainState, clock: _Clock, budget: _Budget) -> bool:
        """Whether the run stops before its next generation: asked to, out of generations,
        or out of seconds (the time budget measures the model where it is; a larger
        ``--max-seconds`` can resume it)."""
        if self.stop_requested or budget.generations_spent():
            return True
        if budget.seconds_spent(clock.now()):
            self._record(state, clock.now(), partial=True)
            return True
        return False

    @staticmethod
    def _count_batch(result: GenerationResult, n_rows: int) -> TrainState:
        """The stepped state with its batch counted, and the centre's score on the batch,
        before its step, added to the epoch's running sums."""
        state = result.state
        loss_sum, correct = result.centre
        state.loss_sum += loss_sum
        state.correct += correct
        state.seen += n_rows
        state.batch += 1
        return state

    def _between_batches(self, state: TrainState, clock: _Clock) -> None:
        """A timed evaluation when one is due (an epoch's end records anyway), and a
        progress report at most every :attr:`_Clock.PROGRESS_EVERY` seconds."""
        now = clock.now()
        if state.batch < self.n_batches and clock.evaluation_due(now):
            self._record(state, now, partial=True)
        if self.progress is not None and clock.progress_due(now):
            self._report(state, now)

    def _end_epoch(self, state: TrainState, clock: _Clock) -> None:
        """Check the parameters are finite, count the epoch, record it, reset its sums."""
        if not np.isfinite(state.theta).all():
            raise DivergenceError(divergence_message(self, state.generation, state.theta, None, state.epoch))
        state.epoch += 1
        state.batch = 0
        self._record(state, clock.now(), partial=False)
        state.loss_sum, state.correct, state.seen = 0.0, 0, 0
        clock.evaluated(clock.now())

    def generation(self, state: ESState, rows: np.ndarray, sigma: float, lr: float, epoch: int = 0,
                   score_centre: bool = False) -> GenerationResult:
        """One ES generation on training ``rows`` (B,) (:func:`fastes.generation.run_generation`)
        at the sigma schedule's value ``sigma`` and learning rate ``lr``; ``state`` is left as
        it was. ``score_centre``: also score the model on ``rows`` before its step.

        Raises :class:`DivergenceError`, naming the option to change, when a member's loss is
        not finite (``epoch`` only serves its message)."""
        try:
            return run_generation(self.es, self.backend, state, rows, sigma, lr, score_centre)
        except LossesNotFinite:
            raise DivergenceError(divergence_message(self, state.generation, state.theta, rows, epoch)) from None

    def _record(self, state: TrainState, now: float, partial: bool) -> None:
        if state.history and state.history[-1]["generation"] == state.generation:
            return  # this generation is measured already (an epoch's end, then the budget)
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
        if self._on_record is not None:
            self._on_record(state)
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
