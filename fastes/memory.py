"""Will a run fit? Its memory, estimated from the configuration and the dataset's size
before anything large is allocated, and the length of its noise vectors against the table.

:func:`check_fits` raises :class:`ResourceError` saying what the run needs, what is
available, and the largest population, batch size, rank or hidden width that fits.

The kernels' buffers come from the plans that the workspaces allocate from
(:func:`fastes.backends.workspace.population_plan`, :func:`fastes.backends.workspace.forward_plan`); the rest
follows :mod:`fastes.backends` and the NumPy reference.

The modules that compile (kernels, noise) are imported by the functions that need them:
reading files (:func:`available_bytes` bounds every read) loads no Numba.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from .errors import ResourceError
from .layout import ParamLayout

def available_bytes() -> int:
    """Memory this process may still allocate: the least of the system's available memory,
    the cgroup (container) limit and the address-space rlimit."""
    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limits.append(int(Path(limit_file).read_text()) - int(Path(usage_file).read_text()))
        except (OSError, ValueError):
            pass  # no such cgroup, or "max"
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            vm_pages = int(Path("/proc/self/statm").read_text().split()[0])
            limits.append(soft - vm_pages * os.sysconf("SC_PAGE_SIZE"))
    except (ImportError, OSError, ValueError, IndexError):
        pass
    if not limits:
        try:
            limits.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            limits.append(2**63 - 1)
    return max(0, min(limits))


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far, in MB (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    kilobytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kilobytes / (1024 if sys.platform != "darwin" else 1024 * 1024), 1)


def format_bytes(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024:
            break
    return f"{n:.1f} {unit}"


def run_bytes(config, n_train: int, n_test: int, n_features: int, n_classes: int, nnz: int | None = None) -> dict[str, int]:
    """Bytes a run allocates beyond its loaded dataset, by what they hold.

    ``nnz``: non-zero training pixels (default: all of them), for the sparse copies of the
    data. A batch holds at most the whole training set, as the backends allocate it.
    """
    from .backends.workspace import forward_plan, lowrank_stack_shapes, plan_bytes, population_plan
    from .strategies.noise import table_size_for
    from .strategies.optimizers import make_optimizer
    from .backends.reference import MEMBER_CHUNK

    layout = ParamLayout((config.pca or n_features, *config.hidden, n_classes))
    dims, size = layout.dims, layout.size
    batch, n_noise = min(config.batch_size, n_train), config.n_noise
    learned = config.learns_sigma
    nnz = n_train * n_features if nnz is None else nnz
    widest = max(dims[1:])
    moments = len(make_optimizer(config, 1).state()) - 1  # float64 vectors of P values besides the step count
    terms = {
        "noise table": 4 * table_size_for(layout.noise_size(config.perturbation, config.rank)),
        # theta, a float64 gradient, optimizer state and the step's float64 temporaries
        "parameters and optimizer state": size * (4 + 8 + 8 * moments + 8 * 4),
        # learned standard deviations: float32, the squares' float64 sum and the update's temporaries
        "standard deviations": size * (4 + 8 + 8 * 3) if learned else 0,
        # the CSR copies of both splits (indices and values; the test split's nnz estimated
        # at the training density), and a float32 copy of a batch at a time
        "sparse copies of the data": 8 * (nnz + n_train + 1) + 8 * (nnz * n_test // max(n_train, 1) + n_test + 1),
        "evaluation logits": (n_train + n_test) * (n_classes * (4 + 3 * 8) + 4 * widest),
        # --shift: the moved training rows (indices and values) and each entry's row and pixel
        # (int32, two narrow ints), beside the unmoved CSR copy (fastes.io.data.ShiftedRows)
        "shifted training rows": (8 * (nnz + n_train + 1) + 6 * nnz) if config.shift else 0,
        # --pca: both splits' coordinates (float32) and their CSR column numbers (int32), with
        # --shift the moved training coordinates (float32), and the float64 covariance with its
        # eigenvectors (fastes.io.projection)
        "principal coordinates": ((n_train + n_test) * (8 * config.pca + 8) + (4 * n_train * config.pca if config.shift
                                  else 0) + 24 * n_features**2) if config.pca else 0,
    }
    if config.backend == "numpy":
        chunk = min(MEMBER_CHUNK, n_noise) * (2 if config.antithetic else 1)
        terms["population chunk (members x parameters)"] = 3 * chunk * size * 4
        terms["population chunk activations (members x batch x width)"] = chunk * batch * (3 * widest * 4 + 3 * n_classes * 8)
    else:
        plan = population_plan(layout, n_noise, config.antithetic, batch, config.perturbation, config.rank,
                                         config.threads, scaled=learned)
        row_loss_shape, _ = plan["buffers"].pop("row_loss")
        terms["row losses (population x batch)"] = 8 * int(np.prod(row_loss_shape))
        terms["population workspace"] = plan_bytes(plan)
        terms["batch buffers"] = plan_bytes(forward_plan(layout, batch))
        if config.perturbation == "lowrank":
            terms["low-rank noise stacks (population x rank x widths)"] = sum(
                8 * int(np.prod(a)) + 8 * int(np.prod(b)) for a, b in lowrank_stack_shapes(layout, n_noise, config.rank))
    return terms


def check_fits(config, dataset) -> None:
    """Refuse a run that cannot fit: its memory (see :func:`run_bytes`) against
    :func:`available_bytes`, and its noise vectors against the noise table."""
    from .strategies.noise import TABLE_SIZE
    shape = (len(dataset.y_train), len(dataset.y_test), dataset.n_features, dataset.n_classes)
    nnz = dataset.nnz("train")

    def need(cfg) -> int:
        return sum(run_bytes(cfg, *shape, nnz=nnz).values())

    available = available_bytes()
    terms = run_bytes(config, *shape, nnz=nnz)
    total = sum(terms.values())
    if total > available:
        top = max(terms, key=terms.get)
        raise ResourceError(
            f"this run needs about {format_bytes(total)} of memory ({top}: {format_bytes(terms[top])}) but "
            f"{format_bytes(available)} is available; {_what_fits(config, need, available)}"
        )
    layout = ParamLayout((config.pca or dataset.n_features, *config.hidden, dataset.n_classes))
    length = layout.noise_size(config.perturbation, config.rank)
    if length > TABLE_SIZE:
        bias = layout.lowrank_size(0)  # a low-rank vector holds rank * (fan_in + fan_out) + fan_out per layer
        max_rank = (TABLE_SIZE - bias) // (layout.lowrank_size(1) - bias)
        if max_rank < 1:
            fix = "use smaller --hidden sizes"
        elif config.perturbation == "full":
            fix = f"low-rank perturbations fit: use --perturbation lowrank with --rank {max_rank} or less"
        else:
            fix = f"use --rank {max_rank} or less"
        what = "full-rank" if config.perturbation == "full" else f"rank-{config.rank} low-rank"
        raise ResourceError(
            f"a {what} perturbation of this {layout.size}-parameter network needs {length} noise values per member "
            f"but the shared noise table holds {TABLE_SIZE} (2**25); {fix}"
        )


def _what_fits(config, need, available: int) -> str:
    """The largest population, batch size, rank or hidden width that fits, the others unchanged."""
    step = 2 if config.antithetic else 1
    options = []
    for flag, name, low in (("--population", "population", 2), ("--batch-size", "batch_size", 1)):
        best = _largest(lambda v: need(config.replace(**{name: v * step if name == "population" else v})) <= available,
                        low // step if name == "population" else low, getattr(config, name) // (step if name == "population" else 1))
        if best is not None:
            options.append(f"{flag} {best * step if name == 'population' else best}")
    if config.perturbation == "lowrank":
        best = _largest(lambda v: need(config.replace(rank=v)) <= available, 1, config.rank)
        if best is not None:
            options.append(f"--rank {best}")
    if config.hidden:
        n = len(config.hidden)
        best = _largest(lambda v: need(config.replace(hidden=(v,) * n)) <= available, 1, max(config.hidden))
        if best is not None:
            options.append(f"--hidden {','.join([str(best)] * n)}")
    if not options:
        return "no smaller population, batch size, rank or hidden width fits; free memory or use a larger machine"
    return "it fits with at most " + " or ".join(options) + " (the other options as given)"


def _largest(fits, low: int, high: int) -> int | None:
    """The largest v in [low, high) with fits(v), assuming fits is monotone; None if none."""
    if high <= low or not fits(low):
        return None
    while high - low > 1:
        mid = (low + high) // 2
        if fits(mid):
            low = mid
        else:
            high = mid
    return low
