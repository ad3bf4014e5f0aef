"""The tools that bench/peers.py compares, each training the same ES on the same MNIST.

A tool is a runner with three methods, driven by :func:`train` in a process of its own:

- ``warm_up(rows)``: run (and compile) a chunk of generations on training ``rows`` (k, B)
  without changing the run's state; the seconds it took.
- ``run(rows)``: k generations, one per row of ``rows`` (k, B), returning when they are
  done (JAX's asynchronous dispatch is waited for).
- ``theta()``: the current parameters (the search distribution's center), float32 (P,), in
  fastes' layout (:class:`fastes.layout.ParamLayout`), so that one NumPy evaluator scores
  every tool on the test set.

Every ES tool starts from the same parameters (fastes' initialisation for the config's
seed), gets the same batches in the same order (:class:`BatchStream`) and does the same
math per generation: the same network, population, sigma, antithetic pairs or not,
shaping, loss and optimizer. The tools scale their gradient estimates differently; the
learning rates below are converted so that every tool takes the same step (derivations
at each runner). Each tool draws its noise from its own generator.

The peer packages (jax, evosax, torch, evotorch, scikit-learn) are imported only by their
runners: this module imports with NumPy and fastes alone.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from importlib.metadata import version

import numpy as np

from fastes.config import PRESETS, Config
from fastes.io.data import Dataset, epoch_order
from fastes.layout import ParamLayout

#: The compared configurations (fastes Config overrides; the rest is the seed preset).
CONFIGS: dict[str, dict] = {
    # The original program (fastes' seed preset): 784-16-16-10, N(0, 0.1) init, population
    # 8, sigma 0.001, MSE on one-hot labels, z-score advantages, plain SGD with lr 0.001 on
    # sum_i adv_i u_i / n, batches of 64 in order.
    "seed": {},
    # An ES as the literature runs it today, with full-rank noise (the peers have no low-rank).
    "modern": dict(hidden=(64,), init="he", population=256, antithetic=True, shaping="centered-rank",
                   loss="cross-entropy", optimizer="adam", lr=0.005, sigma=0.02, batch_size=256, shuffle=True),
    # The binary preset's network (sign neurons), for backpropagation through them with the
    # straight-through estimator ("ste"); fastes trains it with `fastes train --preset binary`
    # (bench/binary.py sets the two side by side).
    "binary": dataclasses.asdict(Config(**PRESETS["binary"])),
}
#: The configs and tools bench/peers.py runs by default: the ES tools on the ES configs.
ES_CONFIGS = ("seed", "modern")

#: Backpropagation for scale: scikit-learn's MLPClassifier on the config's network.
BACKPROP = dict(batch_size=256, shuffle=True, lr=0.001)

#: Tools in the order they run; "sklearn" and "ste" are backpropagation, not ES.
TOOLS = ("numpy", "fastes", "evosax", "evotorch", "sklearn", "ste")
BACKPROP_TOOLS = ("sklearn", "ste")
#: What bench/peers.py runs unless told: every tool but the binary network's.
ES_TOOLS = ("numpy", "fastes", "evosax", "evotorch", "sklearn")


def config_for(name: str) -> Config:
    """The validated fastes Config of a compared configuration."""
    return Config(**{**PRESETS["seed"], **CONFIGS[name]})


def initial_theta(config: Config, dataset: Dataset) -> np.ndarray:
    """The parameters every ES tool starts from: fastes' initialisation for ``config.seed``
    (what :meth:`fastes.trainer.Trainer.initial_state` draws), float32 (P,)."""
    layout = ParamLayout.for_mlp(dataset.n_features, config.hidden, dataset.n_classes)
    return layout.init(config.init, config.init_std, np.random.default_rng(config.seed))


class BatchStream:
    """Training rows of successive generations: fastes' epoch orders (in order, or a
    permutation per epoch from the seed) laid end to end, cut into full batches of B rows
    (a batch may span two epochs), so that every generation of every tool has the same
    shape (a jitted JAX step needs that) and the same rows.
    """

    def __init__(self, seed: int, n: int, batch: int, shuffle: bool):
        self.seed, self.n, self.batch, self.shuffle = seed, n, batch, shuffle
        self.epoch, self.pos = 0, 0
        self.order = epoch_order(seed, 0, n, shuffle)

    def take(self, k: int) -> np.ndarray:
        """The rows of the next ``k`` generations, shape (k, B), int64."""
        need, parts = k * self.batch, []
        while need:
            if self.pos == self.n:
                self.epoch += 1
                self.order = epoch_order(self.seed, self.epoch, self.n, self.shuffle)
                self.pos = 0
            part = self.order[self.pos : self.pos + need]
            parts.append(part)
            self.pos += len(part)
            need -= len(part)
        return np.concatenate(parts).reshape(k, self.batch)


def _check_comparable(config: Config) -> None:
    """The options every tool implements alike; anything else is not a fair comparison."""
    supported = (config.strategy == "openai-es" and config.perturbation == "full" and config.optimizer in ("sgd", "adam")
                 and config.weight_decay == 0 and config.lr_schedule == "constant" and config.sigma_schedule == "constant")
    if not supported:
        raise ValueError("the peers compare OpenAI ES with full-rank noise, SGD or Adam, no weight decay and constant "
                         "schedules")


class FastesRunner:
    """fastes itself, through its Trainer: ``backend`` "numba" (the kernels) or "numpy"
    (the plain NumPy reference, fastes/reference.py). Noise comes from fastes' shared
    table; the update is ``theta -= lr * sum_i adv_i u_i / n`` (SGD) or Adam on it."""

    def __init__(self, config: Config, dataset: Dataset, backend: str):
        from fastes.trainer import Trainer

        _check_comparable(config)
        self.config = config.replace(backend=backend)
        self.trainer = Trainer(self.config, dataset)
        self.state = self.trainer.initial_state()
        self.trainer.backend.begin(self.state)
        kind = "Numba kernels" if backend == "numba" else "plain NumPy reference (`--backend numpy`)"
        self.implementation = f"fastes {kind}, driven by `fastes.trainer.Trainer.generation`"

    def warm_up(self, rows: np.ndarray) -> float:
        started = time.perf_counter()
        self.trainer.prepare(self.state)  # compiles or loads the kernels, state unchanged
        scratch = self.state
        for r in rows:  # each generation returns a new state: self.state stays where it is
            scratch = self.trainer.generation(scratch, r, self.config.sigma, self.config.lr).state
        return time.perf_counter() - started

    def run(self, rows: np.ndarray) -> None:
        for r in rows:
            self.state = self.trainer.generation(self.state, r, self.config.sigma, self.config.lr).state

    def theta(self) -> np.ndarray:
        return self.state.theta.copy()


class EvosaxRunner:
    """evosax's ``Open_ES`` (ask/tell on a flat parameter vector) with an optax optimizer;
    the population's batch losses by ``jax.vmap`` of the MLP; a chunk of generations is one
    jitted ``lax.scan`` (XLA on the CPU, its default thread pool over all cores).

    Scale: Open_ES steps along ``g = sum_i f_i z_i / (n sigma)`` with unit noise ``z`` (and
    antithetic pairs ``z, -z``), i.e. fastes' estimate divided by sigma: SGD gets ``lr *
    sigma``, Adam (invariant to the scale) ``lr``.
    """

    def __init__(self, config: Config, dataset: Dataset, theta0: np.ndarray):
        import jax
        import jax.numpy as jnp
        import optax
        from evosax.algorithms import Open_ES
        from evosax.core import fitness_shaping

        _check_comparable(config)
        self.jax = jax
        layout = ParamLayout.for_mlp(dataset.n_features, config.hidden, dataset.n_classes)
        if config.optimizer == "adam":
            optimizer = optax.adam(config.lr, b1=config.beta1, b2=config.beta2)
        else:
            optimizer = optax.sgd(config.lr * config.sigma)
        shaping = {"zscore": fitness_shaping.standardize_fitness_shaping_fn,
                   "centered-rank": fitness_shaping.centered_rank_fitness_shaping_fn}[config.shaping]
        es = Open_ES(population_size=config.population, solution=jnp.zeros(layout.size, dtype=jnp.float32),
                     use_antithetic_sampling=config.antithetic, optimizer=optimizer,
                     std_schedule=optax.constant_schedule(config.sigma), fitness_shaping_fn=shaping)
        params = es.default_params
        x_train = jnp.asarray(dataset.x_train)  # stored pixels (uint8 for MNIST), scaled per batch
        y_train = jnp.asarray(dataset.y_train)
        scale = np.float32(dataset.pixel_scale)
        n_classes = dataset.n_classes

        def batch_loss(theta, x, y):
            z = x
            for k in range(layout.n_layers):
                fan_in, fan_out = layout.dims[k], layout.dims[k + 1]
                w0, b0 = int(layout.w_start[k]), int(layout.b_start[k])
                z = z @ theta[w0:b0].reshape(fan_in, fan_out) + theta[b0 : b0 + fan_out]
                if k < layout.n_layers - 1:
                    z = jnp.maximum(z, 0.0)
            if config.loss == "mse":
                return jnp.mean(jnp.sum((z - jax.nn.one_hot(y, n_classes, dtype=z.dtype)) ** 2, axis=-1))
            return jnp.mean(jax.nn.logsumexp(z, axis=-1) - jnp.take_along_axis(z, y[:, None], axis=-1)[:, 0])

        def generation(carry, rows):
            state, key = carry
            key, key_ask, key_tell = jax.random.split(key, 3)
            population, state = es.ask(key_ask, state, params)
            x = x_train[rows].astype(jnp.float32) * scale
            fitness = jax.vmap(batch_loss, in_axes=(0, None, None))(population, x, y_train[rows])
            state, _ = es.tell(key_tell, population, fitness, state, params)
            return (state, key), None

        self._chunk = jax.jit(lambda carry, rows: jax.lax.scan(generation, carry, rows)[0])
        key, key_init = jax.random.split(jax.random.key(config.seed))
        self.carry = (es.init(key_init, jnp.asarray(theta0), params), key)
        antithetic = "antithetic" if config.antithetic else "no antithetic sampling"
        self.implementation = (
            f"evosax {version('evosax')} `Open_ES` ({antithetic}, {shaping.__name__}, optax "
            f"{'adam' if config.optimizer == 'adam' else 'sgd'}); losses by `jax.vmap` of the MLP; each chunk of "
            f"generations one jitted `lax.scan` (jax {version('jax')}, CPU: XLA's thread pool, one thread per core)"
        )

    def warm_up(self, rows: np.ndarray) -> float:
        started = time.perf_counter()
        # Compiles for the initial state and for the state a chunk returns (their weak types
        # differ, so each is a compile); the results are dropped.
        self.jax.block_until_ready(self._chunk(self._chunk(self.carry, rows), rows))
        return time.perf_counter() - started

    def run(self, rows: np.ndarray) -> None:
        self.carry = self.jax.block_until_ready(self._chunk(self.carry, rows))

    def theta(self) -> np.ndarray:
        return np.array(self.carry[0].mean, dtype=np.float32)


class EvoTorchRunner:
    """EvoTorch's ``PGPE`` with ``stdev_learning_rate=0``: sigma stays fixed, which makes it
    the OpenAI-ES (symmetric sampling for antithetic pairs; "centered" ranking, or
    "normalized" for z-scores; "adam", or a plain gradient step for SGD). The population is
    scored by a vectorized ``Problem``: the MLP as batched ``torch.matmul`` over members.

    Scale: PGPE ascends ``sum_i w_i eps_i / n`` (``eps = sigma u``; pairs: ``sum_k (w+ -
    w-)/2 eps_k / (n/2)``), i.e. sigma times fastes' estimate: a plain step gets ``lr /
    sigma``; "normalized" divides by the sample standard deviation (n - 1) where fastes'
    z-score divides by the population's (n), so that step is also multiplied by
    ``sqrt(n / (n - 1))``. Adam (torch.optim.Adam) gets ``lr``.
    """

    def __init__(self, config: Config, dataset: Dataset, theta0: np.ndarray, threads: int):
        import torch
        from evotorch import Problem
        from evotorch.algorithms import PGPE

        _check_comparable(config)
        torch.set_num_threads(threads)
        self.torch = torch
        layout = ParamLayout.for_mlp(dataset.n_features, config.hidden, dataset.n_classes)
        x_train = torch.from_numpy(dataset.x_train)
        y_train = torch.from_numpy(dataset.y_train.astype(np.int64))
        scale = float(dataset.pixel_scale)
        runner = self

        class MnistES(Problem):
            """Mean batch loss of each member on the current batch (``runner.rows``)."""

            def __init__(self):
                super().__init__("min", solution_length=layout.size, initial_bounds=(-1.0, 1.0),
                                 dtype=torch.float32, seed=config.seed)

            @torch.no_grad()
            def _evaluate_batch(self, solutions):
                params = solutions.values.as_subclass(torch.Tensor)  # (n, P); read-only view, without its checks
                rows = torch.from_numpy(runner.rows)
                z = x_train[rows].to(torch.float32) * scale  # (B, d), then (n, B, width)
                for k in range(layout.n_layers):
                    fan_in, fan_out = layout.dims[k], layout.dims[k + 1]
                    w0, b0 = int(layout.w_start[k]), int(layout.b_start[k])
                    w = params[:, w0:b0].reshape(-1, fan_in, fan_out)
                    z = torch.matmul(z, w) + params[:, None, b0 : b0 + fan_out]
                    if k < layout.n_layers - 1:
                        z = torch.relu(z)
                y = y_train[rows]
                if config.loss == "mse":
                    onehot = torch.nn.functional.one_hot(y, dataset.n_classes).to(z.dtype)
                    losses = ((z - onehot) ** 2).sum(dim=-1).mean(dim=-1)
                else:
                    picked = z.gather(-1, y.expand(z.shape[0], -1).unsqueeze(-1)).squeeze(-1)
                    losses = (torch.logsumexp(z, dim=-1) - picked).mean(dim=-1)
                solutions.set_evals(losses)

        n = config.population
        if config.optimizer == "adam":
            step = dict(center_learning_rate=config.lr, optimizer="adam",
                        optimizer_config={"beta1": config.beta1, "beta2": config.beta2})
        else:
            factor = math.sqrt(n / (n - 1)) if config.shaping == "zscore" else 1.0
            step = dict(center_learning_rate=config.lr / config.sigma * factor, optimizer=None)
        ranking = {"zscore": "normalized", "centered-rank": "centered"}[config.shaping]

        def searcher():
            return PGPE(MnistES(), popsize=n, stdev_learning_rate=0.0, stdev_init=config.sigma,
                        stdev_max_change=None, center_init=torch.from_numpy(theta0), ranking_method=ranking,
                        symmetric=config.antithetic, **step)

        self.make_searcher = searcher
        self.searcher = searcher()
        self.rows = None
        self.implementation = (
            f"EvoTorch {version('evotorch')} `PGPE` with stdev_learning_rate=0 (fixed sigma: OpenAI-ES), "
            f"symmetric={config.antithetic}, ranking {ranking!r}, optimizer "
            f"{'adam' if config.optimizer == 'adam' else 'none (plain gradient step)'}; losses by a vectorized "
            f"`Problem` (batched torch.matmul over members; torch {version('torch')}, {threads} threads)"
        )

    def _steps(self, searcher, rows: np.ndarray) -> None:
        # PGPE.step() first updates the center from the previous population (none at the
        # first call), then samples and scores a new population on the current batch.
        for r in rows:
            self.rows = r
            searcher.step()

    def warm_up(self, rows: np.ndarray) -> float:
        started = time.perf_counter()
        self._steps(self.make_searcher(), rows)  # a throwaway searcher: the run's is untouched
        return time.perf_counter() - started

    def run(self, rows: np.ndarray) -> None:
        self._steps(self.searcher, rows)

    def theta(self) -> np.ndarray:
        # The center after the last update; the population scored last has not been
        # told yet (PGPE tells it at the next step), so this lags one generation.
        return self.searcher.status["center"].detach().cpu().numpy().astype(np.float32)


class SklearnRunner:
    """Backpropagation for scale: scikit-learn's ``MLPClassifier`` (ReLU, log-loss, Adam lr
    0.001, batches of 256) on the config's hidden layers; a chunk of k batches is one
    ``partial_fit`` (k Adam steps, rows in fastes' shuffled order)."""

    def __init__(self, config: Config, dataset: Dataset):
        from sklearn.neural_network import MLPClassifier

        self.dataset = dataset
        self.classes = np.arange(dataset.n_classes)

        def model():
            return MLPClassifier(hidden_layer_sizes=config.hidden, activation="relu", solver="adam",
                                 learning_rate_init=BACKPROP["lr"], batch_size=BACKPROP["batch_size"], shuffle=False,
                                 random_state=config.seed)

        self.make_model = model
        self.model = model()
        self.implementation = (
            f"scikit-learn {version('scikit-learn')} `MLPClassifier` (backpropagation), hidden "
            f"{','.join(map(str, config.hidden))}, adam lr {BACKPROP['lr']}, batch {BACKPROP['batch_size']}, "
            "log-loss, `partial_fit` per chunk of batches"
        )

    def _fit(self, model, rows: np.ndarray) -> None:
        flat = rows.reshape(-1)
        model.partial_fit(self.dataset.dense("train", flat), self.dataset.y_train[flat], classes=self.classes)

    def warm_up(self, rows: np.ndarray) -> float:
        started = time.perf_counter()
        self._fit(self.make_model(), rows)
        return time.perf_counter() - started

    def run(self, rows: np.ndarray) -> None:
        self._fit(self.model, rows)

    def theta(self) -> np.ndarray:
        parts = []
        for w, b in zip(self.model.coefs_, self.model.intercepts_):
            parts += [w.ravel(), b]
        return np.concatenate(parts).astype(np.float32)


class SteRunner:
    """Binary neurons trained the usual way, for comparison with ES: backpropagation with the
    straight-through estimator (Bengio et al. 2013; Hubara et al. 2016's BinaryNet form). In
    PyTorch, on the config's network from fastes' initial parameters: the forward pass uses the
    config's binary activation (sign: -1 or +1; step: 0 or 1), the backward pass the gradient
    of hardtanh (passed where ``|x| <= 1``, else 0); softmax cross-entropy, Adam lr 0.001,
    batches of 256 (:data:`BACKPROP`), weights kept real-valued. A chunk of k batches is k
    Adam steps."""

    def __init__(self, config: Config, dataset: Dataset, theta0: np.ndarray, threads: int):
        import torch

        from fastes.layout import BINARY_ACTIVATIONS

        torch.set_num_threads(threads)
        torch.manual_seed(config.seed)
        self.torch = torch
        self.layout = ParamLayout.for_mlp(dataset.n_features, config.hidden, dataset.n_classes, config.activation)
        low = BINARY_ACTIVATIONS[config.activation][0]

        class Binary(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return torch.where(x >= 0, 1.0, low)

            @staticmethod
            def backward(ctx, grad):
                (x,) = ctx.saved_tensors
                return grad * (x.abs() <= 1).to(grad.dtype)

        self.binary = Binary.apply
        self.params = [torch.tensor(a, requires_grad=True) for pair in self.layout.unpack(theta0.copy()) for a in pair]
        self.optimizer = torch.optim.Adam(self.params, lr=BACKPROP["lr"])
        self.x = torch.from_numpy(dataset.dense("train"))
        self.y = torch.from_numpy(dataset.y_train.astype(np.int64))
        self.implementation = (
            f"PyTorch {torch.__version__} (backpropagation), {config.activation} neurons forward, straight-through "
            f"estimator (hardtanh's gradient) backward, hidden {','.join(map(str, config.hidden))}, adam lr "
            f"{BACKPROP['lr']}, batch {BACKPROP['batch_size']}, cross-entropy"
        )

    def _logits(self, x):
        h = x
        for k in range(0, len(self.params) - 2, 2):
            h = self.binary(h @ self.params[k] + self.params[k + 1])
        return h @ self.params[-2] + self.params[-1]

    def _step(self, rows: np.ndarray) -> None:
        index = self.torch.from_numpy(rows)
        loss = self.torch.nn.functional.cross_entropy(self._logits(self.x[index]), self.y[index])
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

    def warm_up(self, rows: np.ndarray) -> float:
        started = time.perf_counter()
        saved = [p.detach().clone() for p in self.params]
        state = copy.deepcopy(self.optimizer.state_dict())
        for r in rows:
            self._step(r)
        with self.torch.no_grad():  # back to where the run starts
            for p, value in zip(self.params, saved):
                p.copy_(value)
        self.optimizer = self.torch.optim.Adam(self.params, lr=BACKPROP["lr"])
        self.optimizer.load_state_dict(state)
        return time.perf_counter() - started

    def run(self, rows: np.ndarray) -> None:
        for r in rows:
            self._step(r)

    def theta(self) -> np.ndarray:
        return np.concatenate([p.detach().numpy().ravel() for p in self.params]).astype(np.float32)


def make_runner(tool: str, config: Config, dataset: Dataset, threads: int):
    """The runner of ``tool`` (one of :data:`TOOLS`) on ``config``."""
    if tool in ("numpy", "fastes"):
        return FastesRunner(config.replace(threads=threads), dataset, "numpy" if tool == "numpy" else "numba")
    if tool == "evosax":
        return EvosaxRunner(config, dataset, initial_theta(config, dataset))
    if tool == "evotorch":
        return EvoTorchRunner(config, dataset, initial_theta(config, dataset), threads)
    if tool == "sklearn":
        return SklearnRunner(config, dataset)
    if tool == "ste":
        return SteRunner(config, dataset, initial_theta(config, dataset), threads)
    raise ValueError(f"unknown tool {tool!r}; choose from {', '.join(TOOLS)}")


def stream_for(tool: str, config: Config, n_train: int) -> BatchStream:
    """The batches ``tool`` trains on: the config's, or backpropagation's."""
    if tool in BACKPROP_TOOLS:
        return BatchStream(config.seed, n_train, BACKPROP["batch_size"], BACKPROP["shuffle"])
    return BatchStream(config.seed, n_train, config.batch_size, config.shuffle)


def chunk_size(seconds_per_generation: float, target: float = 0.05, most: int = 1000) -> int:
    """Generations per ``run`` call: about ``target`` seconds of them (at least one), so
    that per-call costs (a JAX dispatch, a ``partial_fit``'s checks) are spread while the
    clock is read often enough to take snapshots on time."""
    return int(min(max(round(target / max(seconds_per_generation, 1e-9)), 1), most))


def train(runner, stream: BatchStream, schedule: list[float], k: int,
          clock=time.perf_counter) -> tuple[int, list[dict], list[np.ndarray]]:
    """Train until the last time of ``schedule`` (seconds of training, ascending), taking a
    snapshot of the parameters at the first chunk (``k`` generations) boundary at or after
    each time; a chunk that passes several times takes one snapshot. ``clock``: seconds.

    Returns the generations run, one row per snapshot (``seconds``: the training time it
    was taken at; ``generation``) and the snapshots' parameters. Only the snapshot's copy
    happens inside the clock; the test evaluation comes after.
    """
    rows_out, thetas = [], []
    generations, due = 0, 0
    started = clock()
    while due < len(schedule):
        runner.run(stream.take(k))
        generations += k
        now = clock() - started
        if now >= schedule[due]:
            thetas.append(runner.theta())
            rows_out.append({"seconds": round(now, 4), "generation": generations})
            while due < len(schedule) and schedule[due] <= now:
                due += 1
    return generations, rows_out, thetas


def score_test(theta: np.ndarray, config: Config, dataset: Dataset, chunk: int = 2000) -> float:
    """Test accuracy of parameters ``theta`` (P,) of ``config``'s network with fastes' NumPy
    reference forward pass: the one evaluator of every tool."""
    from fastes.backends.reference import forward_logits

    layout = ParamLayout.for_mlp(dataset.n_features, config.hidden, dataset.n_classes, config.activation)
    correct = 0
    for start in range(0, len(dataset.y_test), chunk):
        rows = np.arange(start, min(start + chunk, len(dataset.y_test)))
        logits = forward_logits(theta, layout, dataset.dense("test", rows))
        correct += int((logits.argmax(axis=1) == dataset.y_test[rows]).sum())
    return correct / len(dataset.y_test)
