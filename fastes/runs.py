"""A training run in a results folder: config.toml, checkpoints, metrics and plots.

This is what ``fastes train`` does, apart from parsing arguments: prepare the folder
(refusing to clobber an earlier run), train with a checkpoint after every epoch and on
Ctrl-C/SIGTERM, then write every result file.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from . import report
from .config import Config
from .errors import FastesError, ModelFileError
from .storage import atomic_write_text, load_checkpoint, save_checkpoint, save_model
from .trainer import ACCURACY_LEVELS, Trainer, TrainState

RESULT_FILES = ("metrics.csv", "summary.json", "metrics.png", "examples.png", "confusion_matrix.png",
                "classification_report.txt", "model.npz", "config.toml")


class RunFolderError(FastesError):
    """A results folder that cannot be used."""


def default_out_dir() -> Path:
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def prepare_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Create ``out`` or check it may be used; never deletes anything."""
    if resume:
        if not (out / "checkpoint.npz").is_file():
            raise RunFolderError(f"cannot resume: {out / 'checkpoint.npz'} does not exist; start a new run instead")
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise RunFolderError(
            f"results folder {out} already holds a run; pass --resume to continue it, "
            "--overwrite to replace its files, or choose another --out"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot create results folder {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise RunFolderError(f"results folder {out} is not writable; choose another --out")


@contextmanager
def stop_on_signals(trainer: Trainer):
    """Turn SIGINT/SIGTERM into a clean stop at the next generation boundary."""
    received: list[int] = []

    def handler(signum, frame):
        received.append(signum)
        trainer.stop_requested = True

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def train_to_folder(config: Config | None, out: Path, resume: bool = False, overwrite: bool = False,
                    progress=None, resume_changes: dict | None = None) -> tuple[dict, int]:
    """Train and write every result into ``out``.

    With ``resume``, the configuration is the one saved in the checkpoint (``config`` is
    ignored) with ``resume_changes`` applied: only options that do not change the
    trajectory (threads, a longer epochs count, a time budget).

    Returns
    -------
    summary : dict
        What summary.json holds.
    exit_code : int
        0, or 130 / 143 when SIGINT / SIGTERM stopped training early (results so far are
        written and the checkpoint allows ``--resume``).
    """
    out = Path(out)
    prepare_folder(out, resume, overwrite)
    state = None
    if resume:
        state, saved_config, _ = load_checkpoint(out / "checkpoint.npz")
        try:
            config = Config(**saved_config).replace(**(resume_changes or {}))
        except TypeError as exc:
            raise ModelFileError(f"checkpoint in {out} holds a configuration this fastes cannot read ({exc})") from None
    trainer = Trainer(config, progress=progress)
    if state is not None and state.theta.shape[0] != trainer.layout.size:
        raise RunFolderError(f"checkpoint in {out} does not match the model of its config")
    atomic_write_text(out / "config.toml", config.to_toml())
    state = state or trainer.initial_state()
    checkpoint = out / "checkpoint.npz"

    def on_epoch(s: TrainState) -> None:
        save_checkpoint(checkpoint, s, config.to_dict(), trainer.layout)

    exit_code = 0
    with stop_on_signals(trainer) as received:
        try:
            state = trainer.run(state, on_epoch=on_epoch)
        finally:
            if trainer.stop_requested and received:
                exit_code = 130 if received[0] == signal.SIGINT else 143
    if exit_code:
        save_checkpoint(checkpoint, state, config.to_dict(), trainer.layout)
    summary = write_results(out, trainer, state, finished=not exit_code)
    return summary, exit_code


def write_results(out: Path, trainer: Trainer, state: TrainState, finished: bool = True) -> dict:
    """metrics.csv, summary.json, model.npz and the plots, from a run's state."""
    cfg, ds, layout = trainer.config, trainer.dataset, trainer.layout
    theta = state.theta
    started = time.perf_counter()
    train_loss, train_acc = trainer.evaluate(theta, ds.x_train, ds.y_train)
    test_loss, test_acc = trainer.evaluate(theta, ds.x_test, ds.y_test)
    predictions = trainer.logits(theta, ds.x_test).argmax(axis=1)
    labels = list(range(ds.n_classes))
    summary = {
        "config": cfg.to_dict(),
        "dataset": ds.name,
        "finished": finished,
        "epochs_done": round(state.epoch + state.batch / trainer.n_batches, 4),
        "generations": state.generation,
        "wall_seconds": round(state.elapsed, 3),
        "generations_per_second": state.generation / state.elapsed if state.elapsed > 0 else 0.0,
        "n_params": layout.size,
        "final": {"train_loss": train_loss, "train_accuracy": train_acc, "test_loss": test_loss, "test_accuracy": test_acc},
        "time_to_accuracy": {k: state.time_to_accuracy.get(k) for k in ACCURACY_LEVELS},
        "threads": getattr(trainer.backend, "threads", None),
        "backend": cfg.backend,
    }
    save_model(out / "model.npz", layout, theta, cfg.to_dict())
    report.write_metrics_csv(out / "metrics.csv", state.history)
    report.write_json(out / "summary.json", summary)
    title = f"fastes {cfg.backend}: test accuracy {test_acc:.4f}"
    if state.history:
        report.plot_metrics(out / "metrics.png", state.history, title)
    report.plot_examples(out / "examples.png", ds.x_test[:16], ds.image_shape, predictions[:16], ds.y_test[:16])
    report.plot_confusion(out / "confusion_matrix.png", ds.y_test, predictions, labels)
    atomic_write_text(out / "classification_report.txt", report.classification_table(ds.y_test, predictions, labels))
    summary["reporting_seconds"] = round(time.perf_counter() - started, 3)
    return summary
