"""``--backend ray``: the population spread over Ray actors that exchange scalars only.

After OpenAI's ES (Salimans et al., 2017): each worker loads the dataset itself, holds its
own copy of the parameters and optimizer, and regenerates any member's noise from
(seed, generation, member) through the shared noise table. Per generation the driver sends
each worker the batch rows, sigma, its slice of members, and the previous generation's
noise weights and learning rate; each worker first applies that update with the same code
as the driver (so every copy of the parameters stays bit-identical), then returns the
losses of its members. Traffic per generation is ``O(W * (n + B))`` numbers for W workers,
population n and batch B, independent of the parameter count P. The parameter vector
crosses the network once, when training starts or resumes.
"""

from __future__ import annotations

import numpy as np

from .backends import NumbaBackend
from .errors import BackendError


def _import_ray():
    try:
        import ray
    except ImportError:
        raise BackendError(
            "the ray backend needs Ray: install it with  pip install \"fastes[ray]\"  "
            "or use --backend numba"
        ) from None
    return ray


class _Worker:
    """One Ray actor: a numba Trainer on its own copy of the data and parameters."""

    def __init__(self, config: dict, n_noise_slice: int, arrays=None):
        from .config import Config
        from .data import Dataset
        from .kernels import PopulationWorkspace
        from .trainer import Trainer

        cfg = Config(**{**config, "backend": "numba", "address": None})
        dataset = None
        if arrays is not None:  # in-memory data (the estimator): shipped once by the driver
            x, y, n_classes, scale = arrays
            empty = np.zeros((0, x.shape[1]), dtype=x.dtype)
            dataset = Dataset("array", x, y, empty, np.zeros(0, np.int32), n_classes, (1, x.shape[1]), scale)
        self.trainer = Trainer(cfg, dataset)
        self.backend = self.trainer.backend
        self.state = self.trainer.initial_state()
        self.workspace = PopulationWorkspace(
            self.trainer.layout, n_noise_slice, cfg.antithetic, cfg.batch_size, cfg.perturbation, cfg.rank,
            self.backend.threads,
        )

    def begin(self, theta: np.ndarray, optimizer: dict, generation: int) -> int:
        self.state.theta = np.array(theta, dtype=np.float32)
        self.trainer.es.optimizer.load_state(optimizer) if optimizer else None
        self.state.generation = generation
        return self.trainer.layout.size

    def evaluate(self, generation, k0, k1, sigma, rows, pending):
        es = self.trainer.es
        if pending is not None:
            weights, lr = pending
            prev = _StateView(generation - 1)
            grad = self.backend.noise_sum(es.ask(prev), weights)
            es.tell(self.state, grad, lr)
        if self.state.generation != generation:
            raise RuntimeError(f"worker at generation {self.state.generation}, asked for {generation}")
        offsets = np.ascontiguousarray(es.ask(self.state)[k0:k1])
        losses = self.workspace.losses(self.state.theta, self.backend.table, offsets, sigma, self.backend.csr,
                                       rows, self.backend.labels, self.backend.loss_code)
        return losses.copy()

    def theta(self) -> np.ndarray:
        return self.state.theta


class _StateView:
    def __init__(self, generation):
        self.generation = generation


class RayBackend(NumbaBackend):
    """Evaluates the population on Ray actors; sums noise and evaluates the centre locally
    (the driver keeps its own copy of the parameters, updated exactly like the workers')."""

    name = "ray"

    def __init__(self, config, layout, table, dataset, in_memory: bool = False):
        ray = _import_ray()
        super().__init__(config, layout, table, dataset)
        self.ray = ray
        if not ray.is_initialized():
            kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            if config.address:
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
        # Workers load the dataset themselves from its name or --data-dir; data that only
        # exists in this process (the estimator's arrays) goes through the object store once.
        arrays = ray.put((dataset.x_train, dataset.y_train, layout.dims[-1], dataset.pixel_scale)) if in_memory else None
        self.actors = [remote.remote(cfg, int(k1 - k0), arrays) for k0, k1 in self.slices]
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

    def begin(self, theta, optimizer, generation):
        """Ship the parameters and optimizer state once (start or resume)."""
        sizes = self._gather([a.begin.remote(theta, optimizer, generation) for a in self.actors], "starting")
        if any(s != self.layout.size for s in sizes):
            raise BackendError("Ray workers built a different model; check --data-dir on every node")
        self.pending = None
        self.started = True

    def population_losses(self, theta, offsets, sigma, rows, generation=None):
        if not self.started:
            raise BackendError("RayBackend.begin() must be called before training")
        refs = [
            actor.evaluate.remote(generation, int(k0), int(k1), float(sigma), rows, self.pending)
            for actor, (k0, k1) in zip(self.actors, self.slices)
        ]
        self.pending = None
        return np.concatenate(self._gather(refs, "evaluating the population"))

    def record_step(self, weights, lr):
        """Remember this generation's update; workers apply it before the next one."""
        self.pending = (np.asarray(weights, dtype=np.float64), float(lr))

    def close(self):
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
