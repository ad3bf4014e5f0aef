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


@contextmanager
def make_progress(quiet: bool = False, stream=None):
    """Yield a callback for :class:`fastes.trainer.Trainer` (or None when quiet)."""
    stream = stream or sys.stdout
    if quiet:
        yield None
        return
    if not stream.isatty():
        def plain(info: dict) -> None:
            if info["row"] is not None:
                print(_log_line(info), file=stream, flush=True)

        yield plain
        return

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (
        TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("gen  {task.fields[rate]:>6.0f} gen/s"),
        TextColumn("loss {task.fields[loss]}  acc {task.fields[acc]}  test {task.fields[test]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False, refresh_per_second=4) as bar:
        task = bar.add_task("train", total=None, epoch=0, epochs=0, rate=0.0, loss="-", acc="-", test="-")
        last_test = ["-"]

        def live(info: dict) -> None:
            if info["row"] is not None:
                last_test[0] = _fmt(info["row"]["test_accuracy"])
                bar.console.print(_log_line(info), highlight=False)
            bar.update(
                task,
                total=info["total_generations"],
                completed=info["generation"],
                epoch=min(info["epoch"] + 1, info["epochs"]),
                epochs=info["epochs"],
                rate=info["generations_per_second"],
                loss=_fmt(info["train_loss"]),
                acc=_fmt(info["train_accuracy"]),
                test=last_test[0],
            )

        yield live
