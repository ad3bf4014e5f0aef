"""``fastes compare``: runs side by side, as a Markdown table of test accuracy at given wall
times and a plot of test accuracy against wall time (``results/strategies`` compares the
three strategies' presets).

Everything is read from the run folders (``metrics.csv`` and ``summary.json``); nothing trains.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import RunFolderError
from ..io.paths import output_files, read_bytes
from ..io.report import plot_accuracy_vs_time, read_run
from ..io.checkpoints import atomic_write_text

#: Wall seconds at which the table compares test accuracy.
CHECKPOINTS = (60.0, 600.0)
#: The accuracy whose first wall second the table reports.
TARGET = 0.95


def accuracy_at(history: list[dict], seconds: float) -> tuple[float, float] | None:
    """(test accuracy, wall seconds) of the evaluation that stands for the model at
    ``seconds``: the first one at or after it (evaluations are scheduled at round seconds
    and happen at the next generation boundary); None when the run has none that late."""
    timed = [r for r in history if math.isfinite(r["test_accuracy"])]
    for row in timed:
        if row["wall_seconds"] >= seconds:
            return row["test_accuracy"], row["wall_seconds"]
    return None


def first_reaching(history: list[dict], accuracy: float) -> float | None:
    """Wall seconds of the first evaluation with test accuracy >= ``accuracy`` (None: never)."""
    return next((r["wall_seconds"] for r in history if r["test_accuracy"] >= accuracy), None)


def _summary(folder: Path) -> dict:
    path = folder / "summary.json"
    try:
        summary = json.loads(read_bytes(path, "run summary", RunFolderError, 1 << 20))
        return {"strategy": summary["config"].get("strategy", "openai-es"),
                "population": summary["config"]["population"], "finished": summary["finished"],
                "generations_per_second": float(summary["generations_per_second"]),
                "final": float(summary["final"]["test_accuracy"]), "wall": float(summary["wall_seconds"])}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise RunFolderError(f"{path} is not the summary.json of a fastes run; give folders written by fastes train") from None


def _cell(text: str) -> str:
    """``text`` as one Markdown table cell: its pipes escaped, its line breaks spaces."""
    return " ".join(text.replace("|", "\\|").split())


def compare_table(runs: list[tuple[str, Path, list[dict]]]) -> str:
    """The Markdown comparison of ``runs`` (label, folder, metrics rows), best values named."""
    head = (["run", "strategy", "population", "generations/s"] + [f"test accuracy at {s:.0f} s" for s in CHECKPOINTS]
            + [f"reaches {TARGET} at", "final test accuracy", "wall s"])
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * 2 + " ---: |" * (len(head) - 2)]
    best: dict[float, tuple[float, str]] = {}
    for label, folder, history in runs:
        info = _summary(folder)
        cells = [_cell(label), info["strategy"], str(info["population"]), f"{info['generations_per_second']:.1f}"]
        for seconds in CHECKPOINTS:
            at = accuracy_at(history, seconds)
            if at is None and info["finished"]:  # done before these seconds: its model from then on
                at = (info["final"], info["wall"])
            cells.append("n/a (stopped earlier)" if at is None else f"{at[0]:.4f} ({at[1]:.0f} s)")
            if at is not None and at[0] > best.get(seconds, (-1.0, ""))[0]:
                best[seconds] = (at[0], label)
        reached = first_reaching(history, TARGET)
        cells += ["never" if reached is None else f"{reached:.0f} s", f"{info['final']:.4f}", f"{info['wall']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for seconds in CHECKPOINTS:
        if seconds in best:
            lines.append(f"Best at {seconds:.0f} s: {best[seconds][1]} ({best[seconds][0]:.4f}).")
    lines += ["", "Test accuracy at T s is the first evaluation at or after T s of training (its time in brackets),",
              "or the end of a run that finished earlier. Runs: " + ", ".join(f"`{f}`" for _, f, _ in runs)
              + " (each folder's config.toml reruns it)."]
    return "\n".join(lines) + "\n"


def compare_runs(specs: list[str], out: Path) -> str:
    """``fastes compare``: write ``OUT.md`` (the table) and ``OUT.png`` (test accuracy
    against wall time) for run folders given as ``DIR`` or ``LABEL=DIR``; returns the table."""
    files = output_files(out, (".md", ".png"), "--out")
    runs = [read_run(spec) for spec in specs]
    table = compare_table(runs)
    atomic_write_text(files[".md"], "# Test accuracy against wall time\n\n" + table)
    plot_accuracy_vs_time(files[".png"], [(label, history) for label, _, history in runs])
    return table
