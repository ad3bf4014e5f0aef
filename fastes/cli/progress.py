"""Progress output for ``fastes train``: a live rich progress bar on a terminal, one plain
line per metrics row otherwise, nothing with ``--quiet``."""

from __future__ import annotations

import math
import sys
from contextlib import contextmanager


def _fmt(x: float, spec: str = ".4f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _log_line(info: dict) -> str:
    row = info["row"]
    return (
        f"epoch {row['epoch']:g}/{info['epochs']}  gen {row['generation']}  {row['wall_seconds']:.1f}s  "
        f"{info['generations_per_second']:.0f} gen/s  train loss {_fmt(row['train_loss'])} acc {_fmt(row['train_accuracy'])}  "
        f"test loss {_fmt(row['test_loss'])} acc {_fmt(row['test_accuracy'])}"
    )


#: A kernel warm-up longer than this was a compile (loading Numba's cache takes well under).
COMPILE_NOTICE_SECONDS = 2.0


def _compile_line(seconds: float) -> str:
    return f"compiled kernels in {seconds:.1f} s (first run only: cached for later runs; not in the training time)"


def _plan_line(info: dict) -> str:
    return (f"planned {info['epochs']} epoch(s) to fit --max-seconds {info['max_seconds']:g} "
            f"at the {info['rate']:.1f} generations/s measured before training")


def _eta(info: dict) -> str:
    """Time left: the rest of the planned generations at the current rate, or the rest of
    the --max-seconds budget if that ends the run first."""
    rate = info["generations_per_second"]
    left = (info["total_generations"] - info["generation"]) / rate if rate > 0 else float("inf")
    if info.get("max_seconds") is not None:
        left = min(left, max(info["max_seconds"] - info["elapsed"], 0.0))
    if not math.isfinite(left):
        return "-:--:--"
    left = int(round(left))
    return f"{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"


@contextmanager
def make_progress(quiet: bool = False, stream=None):
    """Yield a callback for :class:`fastes.trainer.Trainer` (or None when quiet)."""
    stream = stream or sys.stdout
    if quiet:
        yield None
        return
    if not stream.isatty():
        def plain(info: dict) -> None:
            if info.get("stage") == "plan":
                print(_plan_line(info), file=stream, flush=True)
            elif "stage" in info:  # a line only for a real compile, not for loading the cache
                if info["seconds"] is not None and info["seconds"] >= COMPILE_NOTICE_SECONDS:
                    print(_compile_line(info["seconds"]), file=stream, flush=True)
            elif info["row"] is not None:
                print(_log_line(info), file=stream, flush=True)

        yield plain
        return

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("gen  {task.fields[rate]:>6.0f} gen/s"),
        TextColumn("loss {task.fields[loss]}  acc {task.fields[acc]}  test {task.fields[test]}"),
        TimeElapsedColumn(),
        TextColumn("ETA {task.fields[eta]}"),
    )
    fields = dict(rate=0.0, loss="-", acc="-", test="-", eta="-:--:--")
    # The bar starts with the first generation; while the kernels compile a spinner of its own
    # says so (rich allows one live display at a time).
    bar = Progress(*columns, transient=False, refresh_per_second=4)
    status = None
    task = None
    last_test = ["-"]

    def live(info: dict) -> None:
        nonlocal status, task
        if info.get("stage") == "plan":
            bar.console.print(_plan_line(info), highlight=False)
            return
        if "stage" in info:
            if info["seconds"] is None:
                status = bar.console.status("compiling kernels (first run only) ...")
                status.start()
            else:
                status.stop()
                if info["seconds"] >= COMPILE_NOTICE_SECONDS:
                    bar.console.print(_compile_line(info["seconds"]), highlight=False)
            return
        if task is None:
            bar.start()
            task = bar.add_task("epoch", total=None, **fields)
        if info["row"] is not None:
            last_test[0] = _fmt(info["row"]["test_accuracy"])
            bar.console.print(_log_line(info), highlight=False)
        bar.update(
            task,
            total=info["total_generations"],
            completed=info["generation"],
            description=f"epoch {info['epoch'] + info['batch'] / max(info['n_batches'], 1):.1f}/{info['epochs']}",
            eta=_eta(info),
            rate=info["generations_per_second"],
            loss=_fmt(info["train_loss"]),
            acc=_fmt(info["train_accuracy"]),
            test=last_test[0],
        )

    try:
        yield live
    finally:
        if status is not None:
            status.stop()
        if task is not None:
            bar.stop()
