"""``fastes bench``: one generation timed on the Numba kernels and on the NumPy reference.

:data:`CONFIGS` is the one comparison table: ``fastes bench``, the pytest-benchmark suite
in ``bench/`` and the equivalence tests all draw their cases from it.

One generation = noise offsets + population losses + fitness shaping + gradient estimate
+ optimizer step, on a fixed MNIST batch. GFLOP/s counts the population forward as the
dense work it stands for, ``2 * n * B * sum(fan_in * fan_out)``, divided by the Numba
population-loss time; ``gemm_fraction`` divides that by this machine's float32 GEMM rate
(NumPy ``matmul`` of 2048x2048 matrices) measured in the same run.
"""

from __future__ import annotations

import platform
import statistics
import time
from datetime import date

import numba
import numpy as np

from .config import Config

#: name -> Config overrides. Population counts members (antithetic pairs count twice).
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
}


def bench_config(name: str, backend: str, threads: int | None = None) -> Config:
    return Config(**CONFIGS[name], dataset="mnist", sigma=0.01, lr=0.01, backend=backend, threads=threads)


class Generation:
    """One ES generation on a fixed batch, callable repeatedly (the generation advances).

    Parameters
    ----------
    name : str
        Key of :data:`CONFIGS`.
    backend : {"numba", "numpy"}
    """

    def __init__(self, name: str, backend: str, threads: int | None = None, workers: int = 2):
        from .trainer import Trainer

        self.config = bench_config(name, backend, threads).replace(workers=workers)
        self.trainer = Trainer(self.config)
        self.state = self.trainer.initial_state()
        self.rows = np.arange(self.config.batch_size, dtype=np.int64)
        self.forward_seconds = 0.0
        backend = self.trainer.backend
        backend.begin(self.state.theta, self.trainer.es.optimizer.state(), 0)
        # time the population forward inside the trainer's own generation step
        population_losses = backend.population_losses

        def timed(*args):
            t0 = time.perf_counter()
            losses = population_losses(*args)
            self.forward_seconds = time.perf_counter() - t0
            return losses

        backend.population_losses = timed

    def __call__(self) -> None:
        self.trainer.generation(self.state, self.rows, self.config.sigma, self.config.lr)

    def forward_flops(self) -> float:
        dims = self.trainer.layout.dims
        dense = sum(i * o for i, o in zip(dims[:-1], dims[1:]))
        return 2.0 * self.config.population * self.config.batch_size * dense



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


def time_generation(gen: Generation, repeats: int | None, min_seconds: float = 1.0) -> tuple[float, float]:
    """Median seconds per generation and median population-forward seconds."""
    gen()  # warm-up (compiles on first use)
    totals, forwards = [], []
    started = time.perf_counter()
    while True:
        totals.append(_timed(gen))
        forwards.append(gen.forward_seconds)
        n = len(totals)
        if repeats is not None and n >= repeats:
            break
        if repeats is None and n >= 3 and (time.perf_counter() - started >= min_seconds or n >= 200):
            break
    return statistics.median(totals), statistics.median(forwards)


def run_bench(names: list[str] | None = None, repeats: int | None = None, threads: int | None = None) -> dict:
    """Time every config on both backends; the dict ``fastes bench --json`` prints."""
    from .errors import ConfigError

    names = names or list(CONFIGS)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise ConfigError(f"unknown bench config(s) {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    gemm = gemm_gflops()
    rows = []
    for name in names:
        fast = Generation(name, "numba", threads)
        numba_s, forward_s = time_generation(fast, repeats)
        flops = fast.forward_flops()
        del fast
        slow = Generation(name, "numpy")
        numpy_s, _ = time_generation(slow, repeats if repeats is not None else None, min_seconds=0.5)
        del slow
        gflops = flops / forward_s / 1e9
        rows.append({
            "name": name,
            "numba_ms": round(numba_s * 1e3, 3),
            "numpy_ms": round(numpy_s * 1e3, 3),
            "speedup": round(numpy_s / numba_s, 2),
            "generations_per_second": round(1.0 / numba_s, 1),
            "forward_ms": round(forward_s * 1e3, 3),
            "gflops": round(gflops, 1),
            "gemm_fraction": round(gflops / gemm, 3),
        })
    return {
        "configs": rows,
        "gemm_gflops": round(gemm, 1),
        "threads": numba.get_num_threads(),
        "cpu": _cpu_model(),
        "cores": numba.config.NUMBA_NUM_THREADS,
        "date": date.today().isoformat(),
        "numpy": np.__version__,
        "numba": numba.__version__,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def format_table(result: dict) -> str:
    head = f"{'config':<18}{'numba ms':>11}{'numpy ms':>12}{'speedup':>9}{'gen/s':>9}{'GFLOP/s':>9}{'of GEMM':>9}"
    lines = [
        f"fastes bench: {result['cpu']}, {result['threads']} threads; float32 GEMM {result['gemm_gflops']} GFLOP/s",
        head,
        "-" * len(head),
    ]
    for r in result["configs"]:
        lines.append(
            f"{r['name']:<18}{r['numba_ms']:>11.3f}{r['numpy_ms']:>12.3f}{r['speedup']:>8.1f}x"
            f"{r['generations_per_second']:>9.1f}{r['gflops']:>9.1f}{r['gemm_fraction']:>8.0%} "
        )
    lines.append("GFLOP/s: dense-equivalent population forward (2*n*B*sum(fan_in*fan_out)) / numba forward time")
    return "\n".join(lines)


def format_markdown(result: dict) -> str:
    """The table as Markdown, with the machine and date, for results/benchmark.md."""
    lines = [
        "# fastes bench",
        "",
        f"Machine: {result['cpu']}, {result['cores']} cores, {result['threads']} Numba threads; "
        f"NumPy {result['numpy']}, Numba {result['numba']}; {result['date']}.",
        f"Float32 GEMM measured in the same run: {result['gemm_gflops']} GFLOP/s.",
        "",
        "| config | numba ms/gen | numpy ms/gen | speedup | generations/s | GFLOP/s | of GEMM |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["configs"]:
        lines.append(
            f"| {r['name']} | {r['numba_ms']:.3f} | {r['numpy_ms']:.3f} | {r['speedup']:.1f}x | "
            f"{r['generations_per_second']:.1f} | {r['gflops']:.1f} | {r['gemm_fraction']:.0%} |"
        )
    lines += [
        "",
        "One generation = noise offsets + population losses + shaping + gradient estimate + optimizer step,",
        "on a fixed MNIST batch. GFLOP/s counts the population forward as dense work,",
        "2 * n * B * sum(fan_in * fan_out), over the numba forward time (the kernels skip zero pixels and",
        "use low-rank structure, so this can exceed the GEMM rate). Regenerate: `fastes bench --out results/benchmark`.",
    ]
    return "\n".join(lines) + "\n"
