"""Reporting: metrics.csv, summary.json and the plots of a run folder.

Everything here reads finished numbers and writes files; nothing trains.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from ..errors import RunFolderError
from .paths import check_output_path, read_bytes
from ..state import METRIC_COLUMNS
from .checkpoints import atomic_write, atomic_write_text


def _figure(width: float, height: float, margins=(0.08, 0.12, 0.97, 0.88)):
    """A matplotlib Figure on the Agg canvas with fixed margins (left, bottom, right, top).

    Neither pyplot (slow to import, global state) nor tight_layout (which measures every
    text of every axes) is used: a run's plots cost little next to its training."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    left, bottom, right, top = margins
    fig.subplots_adjust(left=left, bottom=bottom, right=right, top=top, wspace=0.25)
    return fig


def plot_formats() -> tuple[str, ...]:
    """File extensions a plot can be written as (png, pdf, svg, ...)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return tuple(sorted(FigureCanvasAgg.get_supported_filetypes()))


def _save(fig, path: Path) -> None:
    """Write a figure atomically (a Ctrl-C leaves the old file or none, never half a plot)."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    atomic_write(Path(path), lambda fh: fig.savefig(fh, dpi=100, format=fmt))


def write_metrics_csv(path: Path, history: list[dict]) -> None:
    """One row per record (every epoch, and every ``eval_every_seconds``)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row[k] for k in METRIC_COLUMNS})
    atomic_write_text(path, buf.getvalue())


class MetricsLog:
    """A run's metrics.csv written as it trains: the rows so far at once (atomically), then
    each new row appended and flushed, so that ``tail -f`` and ``fastes plot`` see a running
    run and a killed one keeps its rows.

    Parameters
    ----------
    path : Path
    history : list of dict
        The rows so far (keys :data:`fastes.state.METRIC_COLUMNS`); a resumed run's, from its
        checkpoint, replace any rows written after it.
    """

    def __init__(self, path: Path, history: list[dict]):
        write_metrics_csv(path, history)
        self.file = open(path, "a", newline="", encoding="utf-8")
        self.writer = csv.DictWriter(self.file, fieldnames=METRIC_COLUMNS, lineterminator="\n")

    def append(self, row: dict) -> None:
        try:
            self.writer.writerow({k: row[k] for k in METRIC_COLUMNS})
            self.file.flush()
        except OSError as exc:  # a full disk names no file: name ours
            raise type(exc)(exc.errno, exc.strerror, self.file.name) from None

    def close(self) -> None:
        self.file.close()


#: Largest metrics.csv read (a 10-minute run writes about 5 KiB).
MAX_METRICS_BYTES = 64 << 20


def read_metrics_csv(path: Path) -> list[dict]:
    """The rows of a run's metrics.csv, each value a float (NaN where a run had no value)."""
    raw = read_bytes(path, "metrics file", RunFolderError, MAX_METRICS_BYTES)
    try:
        reader = csv.DictReader(io.StringIO(raw.decode("utf-8"), newline=""))
        missing = [c for c in METRIC_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise RunFolderError(f"{path} lacks the column(s) {', '.join(missing)}; give a metrics.csv written by fastes train")
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                rows.append({k: float(row[k]) for k in METRIC_COLUMNS})
            except (TypeError, ValueError):
                raise RunFolderError(
                    f"{path} line {line} is not a row of numbers; give a metrics.csv written by fastes train"
                ) from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RunFolderError(f"{path} is not a CSV file ({exc}); give a metrics.csv written by fastes train") from None
    return rows


def _clean(value):
    """JSON has no NaN: write null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(_clean(data), indent=2) + "\n")


def plot_metrics(path: Path, history: list[dict], title: str = "") -> None:
    """Loss and accuracy curves (train and test) against epochs."""
    epochs = [r["epoch"] for r in history]
    fig = _figure(10, 4, (0.07, 0.12, 0.98, 0.84 if title else 0.9))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for key, label in (("train_loss", "train (batches)"), ("test_loss", "test")):
        ax_loss.plot(epochs, [r[key] for r in history], marker=".", label=label)
    for key, label in (("train_accuracy", "train (batches)"), ("test_accuracy", "test")):
        ax_acc.plot(epochs, [r[key] for r in history], marker=".", label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    _save(fig, path)


def plot_examples(path: Path, images: np.ndarray, image_shape, predictions, truth, n: int = 16) -> None:
    """A 4x4 grid of test images titled with prediction and truth; mistakes in red.

    One axes with an image per tile, in the grey levels of the tiles' common range:
    matplotlib scales an image to the canvas through float arrays of the canvas's size,
    so one image of the whole grid cost 20 MB at its peak (a tile: a sixteenth)."""
    side = int(math.ceil(math.sqrt(n)))
    h, w = int(image_shape[0]), int(image_shape[1])
    gap = max(2, h // 7)
    shown = np.asarray(images[:n], dtype=np.float32)
    vmin, vmax = (float(shown.min()), float(shown.max())) if len(shown) else (0.0, 1.0)
    fig = _figure(2 * side, 2.2 * side, (0.01, 0.01, 0.99, 0.97))
    ax = fig.add_subplot()
    ax.axis("off")
    for i in range(len(shown)):
        r, c = divmod(i, side)
        top, left = r * (h + gap), c * (w + gap)
        ax.imshow(shown[i].reshape(h, w), cmap="gray", vmin=vmin, vmax=vmax,
                  extent=(left - 0.5, left + w - 0.5, top + h - 0.5, top - 0.5))
        wrong = predictions[i] != truth[i]
        ax.text(left + w / 2, top - 0.5, f"pred {predictions[i]} / true {truth[i]}" + (" ✗" if wrong else ""),
                color="red" if wrong else "black", fontsize=9, ha="center", va="bottom")
    ax.set_xlim(-0.5, side * (w + gap) - gap - 0.5)
    ax.set_ylim(side * (h + gap) - gap - 0.5, -0.5 - 0.25 * h)
    _save(fig, path)


def confusion_matrix(truth, predictions, n_classes: int) -> np.ndarray:
    """Counts (n_classes, n_classes), int64: row = true class, column = predicted class."""
    truth = np.asarray(truth, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    return np.bincount(truth * n_classes + predictions, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def plot_confusion(path: Path, truth, predictions, labels) -> None:
    """The test confusion matrix as an annotated image (the layout of scikit-learn's
    ``ConfusionMatrixDisplay``, counted by NumPy so that plotting never imports scikit-learn)."""
    counts = confusion_matrix(truth, predictions, len(labels))
    fig = _figure(7, 6, (0.1, 0.1, 0.95, 0.92))
    ax = fig.add_subplot()
    ax.imshow(counts, cmap="viridis")
    threshold = counts.max() / 2.0
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                    color="black" if counts[i, j] > threshold else "white")
    ticks = np.arange(len(labels))
    ax.set(xticks=ticks, yticks=ticks, xticklabels=labels, yticklabels=labels,
           xlabel="Predicted label", ylabel="True label", title="test confusion matrix")
    _save(fig, path)


def classification_table(truth, predictions, labels) -> str:
    """Per-class precision, recall, F1 and support, then accuracy and the macro and weighted
    averages, in the layout of scikit-learn's ``classification_report(digits=4)``; a class
    never predicted (or absent) scores 0, as with ``zero_division=0``."""
    counts = confusion_matrix(truth, predictions, len(labels)).astype(np.float64)
    hits = np.diag(counts)
    support = counts.sum(axis=1)
    predicted = counts.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, hits / predicted, 0.0)
        recall = np.where(support > 0, hits / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    total = support.sum()
    width = max(len("weighted avg"), *(len(str(label)) for label in labels))
    row = "{:>%d} " % width + " {:>9.4f}" * 3 + " {:>9}"
    lines = [("{:>%d} " % width + " {:>9}" * 4).format("", "precision", "recall", "f1-score", "support"), ""]
    for i, label in enumerate(labels):
        lines.append(row.format(str(label), precision[i], recall[i], f1[i], int(support[i])))
    accuracy = hits.sum() / total if total else 0.0
    lines += ["", ("{:>%d} " % width + " {:>9}" * 2 + " {:>9.4f} {:>9}").format("accuracy", "", "", accuracy, int(total))]
    weights = support / total if total else np.zeros_like(support)
    for name, avg in (("macro avg", lambda v: v.mean()), ("weighted avg", lambda v: (v * weights).sum())):
        lines.append(row.format(name, avg(precision), avg(recall), avg(f1), int(total)))
    return "\n".join(lines) + "\n"


def plot_accuracy_vs_time(path: Path, runs: list[tuple[str, list[dict]]]) -> None:
    """Test accuracy against wall seconds (log scale) for several runs on one plot."""
    fig = _figure(8, 5, (0.09, 0.11, 0.97, 0.92))
    ax = fig.add_subplot()
    for label, history in runs:
        points = [(r["wall_seconds"], r["test_accuracy"]) for r in history if r["wall_seconds"] > 0]
        if points:
            ax.plot(*zip(*points), marker=".", label=label)
    ax.set_xscale("log")
    ax.set(xlabel="wall seconds (log scale)", ylabel="test accuracy", title="test accuracy against wall time")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    _save(fig, path)


def read_run(spec: str) -> tuple[str, Path, list[dict]]:
    """A run folder given as ``DIR`` or ``LABEL=DIR``: its label (the folder's name by
    default), its path and its metrics.csv rows, which must hold a timed test accuracy.

    A folder that exists under the whole of ``spec`` is that folder, ``=`` and all; otherwise
    the label ends at the first ``=`` (a folder's path may hold more)."""
    label, _, folder = ("", "", spec) if "=" not in spec or Path(spec).is_dir() else spec.partition("=")
    folder = Path(folder)
    metrics = folder / "metrics.csv"
    if not metrics.is_file():
        named = f" (read as LABEL={folder}; give ./{spec} for a folder named so)" if label else ""
        raise RunFolderError(f"{folder} has no metrics.csv{named}; give folders written by fastes train")
    history = read_metrics_csv(metrics)
    if not any(r["wall_seconds"] > 0 and math.isfinite(r["test_accuracy"]) for r in history):
        raise RunFolderError(f"{metrics} has no timed test accuracy to plot; give folders of runs that trained")
    return label or folder.name, folder, history


def plot_runs(runs: list[str], out: Path) -> None:
    """``fastes plot``: test accuracy against wall seconds for run folders (LABEL=DIR allowed)."""
    out = check_output_path(out, "plot", plot_formats())
    plot_accuracy_vs_time(out, [(label, history) for label, _, history in map(read_run, runs)])
