"""``fastes bench``: one generation timed on the Numba kernels and on the NumPy reference,
against this machine's limit.

:data:`CONFIGS` is the one comparison table: ``fastes bench``, the pytest-benchmark suite
in ``bench/`` and the equivalence tests all draw their cases from it.

One generation = noise offsets + population losses + fitness shaping + gradient estimate
+ optimizer step, on a fixed MNIST batch. Its distance to the limit: :func:`useful_macs`
counts the multiply-adds the algorithm must do (non-zero pixels only, the first layer's
shared product once, the low-rank factors as factors), ``useful_gflop`` is twice that, and
``limit_fraction`` divides the useful GFLOP/s by this machine's float32 GEMM rate measured
in the same run. ``dense_gflops`` keeps the older figure, the dense work the population
stands for (``2 * n * B * sum(fan_in * fan_out)``) over the population-forward time; it
can exceed the GEMM rate and says nothing about the distance to the limit.

The profile splits a Numba generation into phases, each timed around its own call:
``ask`` (noise offsets), ``first_layer``, ``noise_response``, ``later_layers``, ``loss``
(with the reduction over rows), ``shaping``, ``gradient`` (the weighted noise sum),
``optimizer``, and ``overhead`` (the rest of the step: Python and call dispatch).
"""

from __future__ import annotations

import platform
import statistics
import time
from datetime import date

import numba
import numpy as np

from ..config import PRESETS, Config
from ..memory import peak_rss_mb

#: name -> overrides of the ``seed`` preset. Population counts members (antithetic pairs count twice).
CONFIGS: dict[str, dict] = {
    "seed": dict(population=8, batch_size=64, hidden=(16, 16), loss="mse"),
    "medium": dict(population=128, batch_size=256, hidden=(64,), antithetic=True, loss="cross-entropy",
                   shaping="centered-rank", optimizer="adam"),
    "large": dict(population=1024, batch_size=256, hidden=(128,), antithetic=True, loss="cross-entropy",
                  shaping="centered-rank", optimizer="adam"),
    "full-4096": dict(population=4096, batch_size=256, hidden=(128,), antithetic=True, loss="cross-entropy",
                      shaping="centered-rank", optimizer="adam"),
    "lowrank-r1-4096": dict(population=4096, batch_size=256, hidden=(128,), antithetic=True, loss="cross-entropy",
                            shaping="centered-rank", optimizer="adam", perturbation="lowrank", rank=1),
    "lowrank-r4-4096": dict(population=4096, batch_size=256, hidden=(128,), antithetic=True, loss="cross-entropy",
                            shaping="centered-rank", optimizer="adam", perturbation="lowrank", rank=4),
    # the default preset's generation on wider and deeper networks (issue 23)
    "lowrank-256": dict(population=4096, batch_size=256, hidden=(256,), antithetic=True, loss="cross-entropy",
                        shaping="centered-rank", optimizer="adam", perturbation="lowrank", rank=1),
    "lowrank-512": dict(population=4096, batch_size=256, hidden=(512,), antithetic=True, loss="cross-entropy",
                        shaping="centered-rank", optimizer="adam", perturbation="lowrank", rank=1),
    "lowrank-256-128": dict(population=4096, batch_size=256, hidden=(256, 128), antithetic=True,
                            loss="cross-entropy", shaping="centered-rank", optimizer="adam", perturbation="lowrank",
                            rank=1),
    # the default preset's generation: lowrank-r1-4096 on the images' first 100 principal coordinates
    "lowrank-pca100": dict(population=4096, batch_size=256, hidden=(128,), antithetic=True, loss="cross-entropy",
                           shaping="centered-rank", optimizer="adam", perturbation="lowrank", rank=1, pca=100),
    # the strategies that learn a standard deviation per parameter, at large's population and network
    "pgpe-large": dict(strategy="pgpe", population=1024, batch_size=256, hidden=(128,), antithetic=True,
                       loss="cross-entropy", shaping="centered-rank", optimizer="clipup"),
    "snes-large": dict(strategy="snes", population=1024, batch_size=256, hidden=(128,), antithetic=True,
                       loss="cross-entropy", shaping="nes", optimizer="sgd"),
}

#: Phases of the profile, in the order a generation runs them.
PHASES = ("ask", "first_layer", "noise_response", "later_layers", "loss", "shaping", "gradient", "optimizer",
          "overhead")


def bench_config(name: str, backend: str, threads: int | None = None) -> Config:
    """The :data:`CONFIGS` entry ``name`` over the ``seed`` preset, at sigma and lr 0.01."""
    return Config(**{**PRESETS["seed"], **CONFIGS[name], "sigma": 0.01, "lr": 0.01, "backend": backend,
                     "threads": threads})


class Generation:
    """One ES generation on a fixed batch, callable repeatedly (the generation advances).

    Parameters
    ----------
    name : str
        Key of :data:`CONFIGS`.
    backend : {"numba", "numpy"}
    """

    def __init__(self, name: str, backend: str, threads: int | None = None, workers: int = 2):
        from ..trainer import Trainer

        self.name = name
        self.config = bench_config(name, backend, threads).replace(workers=workers)
        self.trainer = Trainer(self.config)
        self.state = self.trainer.initial_state()
        self.rows = np.arange(self.config.batch_size, dtype=np.int64)
        self.trainer.backend.begin(self.state)

    def __call__(self) -> None:
        self.state = self.trainer.generation(self.state, self.rows, self.config.sigma, self.config.lr).state

    def dense_flops(self) -> float:
        """The dense work the population forward stands for, 2 * n * B * sum(fan_in * fan_out)."""
        dims = self.trainer.layout.dims
        dense = sum(i * o for i, o in zip(dims[:-1], dims[1:]))
        return 2.0 * self.config.population * self.config.batch_size * dense

    def useful_flops(self) -> float:
        """2 x :func:`useful_macs` on this generation's batch."""
        indptr = self.trainer.inputs.csr("train")[0]  # what the network sees: --pca's coordinates too
        nnz = float(np.sum(indptr[self.rows + 1] - indptr[self.rows]))
        return 2.0 * useful_macs(self.config, self.trainer.layout.dims, nnz)

    def profile(self, repeats: int) -> dict[str, float]:
        """Median seconds of each of :data:`PHASES` over ``repeats`` instrumented generations
        (Numba backend). The generation's own code, timed call by call: the population call
        as its phase kernels (:class:`fastes.backends.workspace.PopulationWorkspace`), phase 2
        split by its profile variants that stop after the noise response and after the logits."""
        es, backend = self.trainer.es, self.trainer.backend
        ws, sigma, lr = backend.workspace, self.config.sigma, self.config.lr
        data = (backend.csr, self.rows, backend.labels)
        samples: dict[str, list[float]] = {p: [] for p in PHASES}
        parts: dict[str, list[float]] = {"response": [], "logits": [], "loss": []}
        self()  # warm-up
        for _ in range(repeats):
            t: dict[str, float] = {}
            start = time.perf_counter()
            offsets, scale = es.ask(self.state, sigma)
            t["ask"] = time.perf_counter() - start
            t0 = time.perf_counter()
            call = ws.arguments(backend.table, offsets, scale, data, backend.loss_code)
            ws.first_layer(self.state.theta, call)
            t1 = time.perf_counter()
            ws.member_losses(call)
            losses = ws.reduce(call)
            t2 = time.perf_counter()
            weights = es.weights(losses)
            t3 = time.perf_counter()
            grad = es.gradient(backend, offsets, weights)
            t4 = time.perf_counter()
            stepped = es.step(self.state, grad, lr)
            t5 = time.perf_counter()
            t.update(first_layer=t1 - t0, shaping=t3 - t2, gradient=t4 - t3, optimizer=t5 - t4)
            parts["loss"].append(t2 - t1)
            t["overhead"] = max(t5 - start - sum(t.values()) - parts["loss"][-1], 0.0)
            # phase 2 again, stopped after each part of its tasks, splits its time (below)
            for through in ("response", "logits"):
                t6 = time.perf_counter()
                ws.member_losses(call, through)
                parts[through].append(time.perf_counter() - t6)
            self.state = stepped
            for p, v in t.items():
                samples[p].append(v)
        result = {p: statistics.median(v) for p, v in samples.items() if v}
        whole = statistics.median(parts["loss"])
        noise = min(statistics.median(parts["response"]), whole)
        layers = min(max(statistics.median(parts["logits"]) - noise, 0.0), whole - noise)
        result.update(noise_response=noise, later_layers=layers, loss=whole - noise - layers)
        return {p: result[p] for p in PHASES}


def useful_macs(config: Config, dims, nnz: float) -> float:
    """Multiply-adds one generation needs, given ``nnz`` non-zero pixels in its batch.

    First layer: the shared product ``x @ W0`` once (``nnz * H1``) plus each noise vector's
    response on the non-zero pixels (full rank ``nnz * H1``; low rank ``nnz * r`` then
    ``B * r * H1`` to expand it), antithetic signs sharing it; then ``B * H1`` per member to
    form its hidden layer and ``B * sum(fan_in * fan_out)`` per member for the later layers
    (their inputs differ per member, so nothing is shared). Gradient: ``P`` per noise vector
    (full rank) or the factors' sizes plus one ``fan_in x fan_out`` product per factor
    (low rank). Optimizer: ``P``. A standard deviation per parameter (PGPE, SNES) adds ``P``
    per noise vector to scale it, and ``P`` per noise vector for the squares' sum.
    """
    dims = [int(d) for d in dims]
    batch, n_noise, members = config.batch_size, config.n_noise, config.population
    width0 = dims[1]
    later = sum(i * o for i, o in zip(dims[1:-1], dims[2:]))
    size = sum(i * o + o for i, o in zip(dims[:-1], dims[1:]))
    if config.perturbation == "lowrank":
        r = config.rank
        response = n_noise * (nnz * r + batch * r * width0)
        gradient = n_noise * r * sum(i + o + i * o for i, o in zip(dims[:-1], dims[1:]))
    else:
        response = n_noise * nnz * width0
        gradient = n_noise * size
    hidden = members * batch * width0 if len(dims) > 2 else 0
    scaling = 0
    if config.learns_sigma:
        scaling = n_noise * size
        gradient *= 2
    return nnz * width0 + response + hidden + members * batch * later + gradient + scaling + size


def gemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best float32 matmul rate of this machine, in GFLOP/s."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2.0 * n**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_generation(gen: Generation, repeats: int | None, min_seconds: float = 1.0) -> float:
    """Median seconds per generation (``repeats`` of them, or as many as ``min_seconds`` takes,
    at least 3 and at most 200)."""
    gen()  # warm-up (compiles on first use)
    totals = []
    started = time.perf_counter()
    while True:
        totals.append(_timed(gen))
        n = len(totals)
        if repeats is not None and n >= repeats:
            break
        if repeats is None and n >= 3 and (time.perf_counter() - started >= min_seconds or n >= 200):
            break
    return statistics.median(totals)


def run_bench(names: list[str] | None = None, repeats: int | None = None, threads: int | None = None,
              profile: bool = True) -> dict:
    """Time every config on both backends; the dict ``fastes bench --json`` prints."""
    from ..errors import ConfigError

    names = list(CONFIGS) if names is None else names
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or not names:
        raise ConfigError(f"unknown bench config(s) {', '.join(unknown) or '(none given)'}; "
                          f"choose from {', '.join(CONFIGS)}")
    gemm = gemm_gflops()
    rows = []
    for name in names:
        fast = Generation(name, "numba", threads)
        numba_s = time_generation(fast, repeats)
        phases = fast.profile(repeats or 5) if profile else None
        forward_s = (phases["first_layer"] + phases["noise_response"] + phases["later_layers"] + phases["loss"]
                     if phases else None)
        useful = fast.useful_flops()
        dense = fast.dense_flops()
        del fast
        slow = Generation(name, "numpy")
        numpy_s = time_generation(slow, repeats, min_seconds=0.5)
        del slow
        row = {
            "name": name,
            "numba_ms": round(numba_s * 1e3, 3),
            "numpy_ms": round(numpy_s * 1e3, 3),
            "speedup": round(numpy_s / numba_s, 2),
            "generations_per_second": round(1.0 / numba_s, 1),
            "useful_gflop": round(useful / 1e9, 4),
            "useful_gflops": round(useful / numba_s / 1e9, 1),
            "limit_fraction": round(useful / numba_s / 1e9 / gemm, 4),
            "limit_ms": round(useful / (gemm * 1e9) * 1e3, 3),
        }
        if phases:
            row["dense_gflops"] = round(dense / forward_s / 1e9, 1)
            row["profile_ms"] = {p: round(v * 1e3, 3) for p, v in phases.items()}
        rows.append(row)
    return {
        "configs": rows,
        "gemm_gflops": round(gemm, 1),
        "threads": numba.get_num_threads(),
        "cpu": cpu_model(),
        "cores": numba.config.NUMBA_NUM_THREADS,
        "date": date.today().isoformat(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "peak_rss_mb": peak_rss_mb(),
    }


def cpu_model() -> str:
    """The processor's model name (from /proc/cpuinfo), else what the platform says."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_SHORT = {"ask": "ask", "first_layer": "layer0", "noise_response": "noise", "later_layers": "layers",
          "loss": "loss", "shaping": "shape", "gradient": "grad", "optimizer": "opt", "overhead": "other"}


def format_table(result: dict, profile: bool = False) -> str:
    head = (f"{'config':<17}{'numba ms':>10}{'numpy ms':>11}{'speedup':>9}{'gen/s':>9}"
            f"{'useful GF':>11}{'limit ms':>10}{'of limit':>10}")
    lines = [
        f"fastes bench: {result['cpu']}, {result['threads']} threads; float32 GEMM {result['gemm_gflops']} GFLOP/s",
        head,
        "-" * len(head),
    ]
    for r in result["configs"]:
        lines.append(
            f"{r['name']:<17}{r['numba_ms']:>10.3f}{r['numpy_ms']:>11.3f}{r['speedup']:>8.1f}x"
            f"{r['generations_per_second']:>9.1f}{r['useful_gflop']:>11.4f}{r['limit_ms']:>10.3f}"
            f"{r['limit_fraction']:>9.0%} "
        )
    lines.append("useful GF: GFLOP the algorithm needs (non-zero pixels, shared products once, low-rank "
                 "factors); limit ms: that at the GEMM rate; of limit: limit ms / numba ms")
    if profile and all("profile_ms" in r for r in result["configs"]):
        names = [_SHORT[p] for p in PHASES]
        head = f"{'numba ms by phase':<17}" + "".join(f"{n:>9}" for n in names)
        lines += ["", head, "-" * len(head)]
        for r in result["configs"]:
            lines.append(f"{r['name']:<17}" + "".join(f"{r['profile_ms'][p]:>9.3f}" for p in PHASES))
    return "\n".join(lines)


def format_markdown(result: dict) -> str:
    """The tables as Markdown, with the machine and date, for results/benchmark.md."""
    lines = [
        "# fastes bench",
        "",
        f"Machine: {result['cpu']}, {result['cores']} cores, {result['threads']} Numba threads; "
        f"NumPy {result['numpy']}, Numba {result['numba']}; {result['date']}.",
        f"Float32 GEMM measured in the same run: {result['gemm_gflops']} GFLOP/s.",
        "",
        "| config | numba ms/gen | numpy ms/gen | speedup | generations/s | useful GFLOP | at GEMM rate, ms | limit fraction |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["configs"]:
        lines.append(
            f"| {r['name']} | {r['numba_ms']:.3f} | {r['numpy_ms']:.3f} | {r['speedup']:.1f}x | "
            f"{r['generations_per_second']:.1f} | {r['useful_gflop']:.4f} | {r['limit_ms']:.3f} | "
            f"{r['limit_fraction']:.2f} |"
        )
    if all("profile_ms" in r for r in result["configs"]):
        lines += [
            "",
            "Numba generation by phase, ms (median of instrumented generations):",
            "",
            "| config | " + " | ".join(PHASES) + " |",
            "| --- |" + " ---: |" * len(PHASES),
        ]
        for r in result["configs"]:
            lines.append(f"| {r['name']} | " + " | ".join(f"{r['profile_ms'][p]:.3f}" for p in PHASES) + " |")
    lines += [
        "",
        "One generation = noise offsets + population losses + shaping + gradient estimate + optimizer step,",
        "on a fixed MNIST batch. Useful GFLOP counts the multiply-adds the algorithm must do (non-zero pixels",
        "only, the first layer's shared product once, low-rank noise as its factors; see",
        "`fastes.cli.bench.useful_macs`) x 2; the limit fraction is the time that work takes at the GEMM rate",
        "over the numba time. Regenerate: `fastes bench --profile --out results/benchmark`.",
    ]
    return "\n".join(lines) + "\n"
