"""``--backend ray``: the population spread over Ray actors that exchange scalars only.

After OpenAI's ES (Salimans et al., 2017): each worker loads the dataset itself, holds its
own copy of the strategy's state (parameters, optimizer, and the standard deviations of PGPE
and SNES), and regenerates any member's noise from (seed, generation, member) through the
shared noise table. Per generation the driver sends each worker the batch rows, sigma (the
schedule's value; a learned one each worker has), its slice of members, and the previous
generation's weights and learning rate; each worker first applies that update with the same
code as the driver (the strategy's own ``gradient`` and ``tell``, so every copy of the state
stays bit-identical), then returns the losses of its members. Traffic per generation is
``O(W * (n + B))`` numbers for W workers, population n and batch B, independent of the
parameter count P. The state crosses the network once, when training starts or resumes.
"""

from __future__ import annotations

import math
import socket

import numpy as np

from . import kernels, workspace
from .numba_backend import ModelMetrics, NoiseSum, set_threads
from .protocol import batch_rows, train_labels
from ..errors import BackendError
from ..state import ESState
from ..strategies import build_strategy


def _import_ray():
    try:
        import ray
    except ImportError:
        raise BackendError(
            "the ray backend needs Ray: install it with  pip install \"fastes[ray]\"  "
            "or use --backend numba"
        ) from None
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse a ``host:port`` (or ``ray://host:port``) that takes no connection: Ray itself
    retries an unreachable address for minutes, printing its own log lines."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and other forms Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise BackendError(
            f"cannot reach a Ray cluster at {address} ({exc.strerror or type(exc).__name__}); check the address, "
            "that its head node runs (ray start --head), and the network, or train without --backend ray"
        ) from None


class _Worker:
    """One Ray actor: its own copy of the data, the parameters and the optimizer, and a
    population workspace for its slice of the noise vectors.

    Parameters
    ----------
    config : dict
        The run's configuration (:meth:`Config.to_dict`).
    members : int
        Noise vectors in this worker's slice.
    arrays : tuple, optional
        In-memory training data ``(x, y, n_classes)`` shipped by the driver;
        otherwise the worker loads the dataset by name.
    """

    def __init__(self, config: dict, members: int, arrays=None, projection=None):
        from ..config import Config
        from ..io.data import Dataset, load_dataset
        from ..io.projection import network_inputs

        cfg = Config(**{**config, "backend": "numba", "address": None})
        #: --shift's mover of the training rows, set to each generation's epoch (None: no moves)
        self.moves = None
        if arrays is not None:  # the driver's inputs as they are
            x, y, n_classes = arrays
            empty = np.zeros((0, x.shape[1]), dtype=np.float32)
            dataset = Dataset("array", x, y, empty, np.zeros(0, np.int32), n_classes, (1, x.shape[1]))
        else:  # the same inputs as the driver's, from the data, the seed and the driver's --pca directions
            made = network_inputs(cfg, load_dataset(cfg.dataset, cfg.data_dir), projection)
            dataset, self.moves = made.train, made.moves
        self.n_batches = math.ceil(len(dataset.y_train) / cfg.batch_size)
        self.layout, self.table, self.es = build_strategy(cfg, dataset)
        threads = set_threads(cfg.threads)
        self.noise = NoiseSum(cfg, self.layout, self.table)
        self.csr, self.labels = dataset.csr("train"), train_labels(dataset)
        self.loss_code = kernels.LOSS_CODES[cfg.loss]
        self.workspace = workspace.PopulationWorkspace(
            self.layout, members, cfg.antithetic, batch_rows(cfg, dataset), cfg.perturbation, cfg.rank, threads,
            scaled=cfg.learns_sigma,
        )
        self.state: ESState | None = None
        self.population = None  # the current generation's (its update replays its noise)

    def begin(self, state: ESState) -> int:
        """Take the driver's state (parameters, optimizer state, standard deviations,
        generation); returns the parameter count (the driver checks that every worker built
        the same model)."""
        self.state = ESState(state.theta, state.generation, state.optimizer, state.sigma)
        self.population = None
        return self.layout.size

    def evaluate(self, generation: int, k0: int, k1: int, sigma: float | None, rows: np.ndarray, pending) -> np.ndarray:
        """Apply the previous generation's update ``pending`` (weights, lr) if any, then
        return the losses of members ``k0:k1`` at ``generation``, their noise scaled by
        ``sigma`` (None: by the standard deviations of the worker's state)."""
        if pending is not None:
            weights, lr = pending
            self.state = self.es.update(self.state, self.population.offsets, weights, self.noise, lr)
        if self.state.generation != generation:
            raise RuntimeError(f"worker at generation {self.state.generation}, asked for {generation}")
        if self.moves is not None:  # a generation's epoch is its count of whole epochs of batches
            self.moves.set_epoch(generation // self.n_batches)
        self.population = self.es.ask(self.state, sigma)
        losses = self.workspace.losses(self.state.theta, self.table, np.ascontiguousarray(self.population.offsets[k0:k1]),
                                       self.population.scale, self.csr, rows, self.labels, self.loss_code)
        return losses.copy()


class RayBackend(NoiseSum):
    """The :class:`fastes.backends.Backend` that evaluates the population on Ray actors; it
    sums noise and scores the centre here (the driver keeps its own copy of the parameters,
    updated exactly like the workers').

    Parameters
    ----------
    config : Config
    layout : ParamLayout
    table : ndarray of shape (T,), float32
    dataset : Dataset
    in_memory : bool
        The data exists only in this process (the estimator's arrays): ship it to the
        workers instead of letting them load it by name.
    projection : Projection, optional
        ``--pca``'s directions, which the workers project their data on.
    """

    def __init__(self, config, layout, table, dataset, in_memory: bool = False, projection=None):
        ray = _import_ray()
        self.ray = ray
        self.layout = layout
        self.threads = set_threads(config.threads)
        NoiseSum.__init__(self, config, layout, table)
        self.metrics = ModelMetrics(config, layout, dataset)
        if not ray.is_initialized():
            kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            if config.address:
                _check_reachable(config.address)
                ray.init(address=config.address, **kwargs)
            else:
                ray.init(num_cpus=config.workers * (config.threads or 1), **kwargs)
        n_noise, workers = config.n_noise, config.workers
        if workers > n_noise:
            raise BackendError(f"{workers} Ray workers for {n_noise} noise vectors; use at most {n_noise} workers")
        bounds = np.linspace(0, n_noise, workers + 1).round().astype(int)
        self.slices = list(zip(bounds[:-1], bounds[1:]))
        # Each actor reserves the cores its Numba threads use (--threads, default 1).
        threads = config.threads or 1
        remote = ray.remote(num_cpus=threads)(_Worker)
        cfg = {**config.to_dict(), "threads": threads}
        # Workers load the dataset themselves from its name or --data-dir and make the inputs
        # this process made; data that only exists here (the estimator's arrays) goes through
        # the object store once, as the inputs it is.
        if in_memory and config.shift:
            raise BackendError("--shift moves the training images each epoch, which workers sent data that exists "
                               "only in this process cannot do; use --backend numba, or drop --shift")
        arrays = ray.put((dataset.x_train, dataset.y_train, layout.dims[-1])) if in_memory else None
        shipped = None if projection is None or in_memory else ray.put(projection)
        self.actors = [remote.remote(cfg, int(k1 - k0), arrays, shipped) for k0, k1 in self.slices]
        self.pending = None
        self.started = False

    def _gather(self, refs, what: str):
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayActorError as exc:
            raise BackendError(
                f"a Ray worker died while {what} ({type(exc).__name__}); the last checkpoint is kept: "
                "continue with  fastes train --resume DIR --backend ray --workers N  (N may be smaller)"
            ) from None
        except self.ray.exceptions.RayTaskError as exc:
            raise BackendError(f"a Ray worker failed while {what}: {exc.cause!r}") from None

    def begin(self, state):
        """Ship the state once (start or resume): the strategy's arrays and generation only."""
        shipped = ESState(state.theta, state.generation, state.optimizer, state.sigma)
        sizes = self._gather([a.begin.remote(shipped) for a in self.actors], "starting")
        if any(s != self.layout.size for s in sizes):
            raise BackendError("Ray workers built a different model; check --data-dir on every node")
        self.pending = None
        self.started = True

    def population_losses(self, theta, offsets, sigma, rows, generation=None):
        if not self.started:
            raise BackendError("RayBackend.begin() must be called before training")
        scale = None if np.ndim(sigma) else float(sigma)  # learned standard deviations: each worker has them
        refs = [
            actor.evaluate.remote(generation, int(k0), int(k1), scale, rows, self.pending)
            for actor, (k0, k1) in zip(self.actors, self.slices)
        ]
        self.pending = None
        return np.concatenate(self._gather(refs, "evaluating the population"))

    def batch_metrics(self, theta, rows):
        """The model's summed loss and correct count on ``rows``, by a forward pass here."""
        return self.metrics(theta, rows)

    def record_step(self, weights, lr):
        """Remember this generation's update; workers apply it before the next one."""
        self.pending = (np.asarray(weights, dtype=np.float64), float(lr))
