"""A training run in a results folder: config.toml, checkpoints, metrics and plots.

This is what ``fastes train`` does, apart from parsing arguments. A run folder is always in
one of three states: untouched (as it was before the command), resumable (a checkpoint
that ``--resume`` accepts, and its config.toml), or complete (that, plus every result
file, summary.json written last). To keep it so:

* everything that can be refused is checked before anything is written: the folder, the
  configuration, a resumed checkpoint against the folder, the dataset, the memory the run
  needs; the trainer is built;
* nothing is written until the first checkpoint (at the first metrics row, after the first
  epoch, at a signal, or when training ends); then the folder is created (or an
  ``--overwrite``-n run's files are removed), the checkpoint is written, then config.toml;
* metrics.csv grows a row at a time while the run trains (a resumed run first rewrites it
  from its checkpoint's rows);
* results are written after the last checkpoint, summary.json last; a signal while they are
  written stops with the checkpoint in place (``--resume`` writes them).
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import numpy as np

from . import report
from ..config import RESUME_OPTIONS, Config, check_used, load_toml
from .data import load_dataset
from ..errors import ConfigError, DivergenceError, Interrupted, ModelFileError, RunFolderError
from ..memory import check_fits, peak_rss_mb
from .checkpoints import atomic_write_text, load_checkpoint, save_checkpoint, save_model
from ..state import ACCURACY_LEVELS, TrainState
from ..trainer import Trainer

__all__ = ["RESULT_FILES", "RESUME_OPTIONS", "RunFolderError", "default_out_dir", "train_to_folder", "write_results"]

RESULT_FILES = ("metrics.csv", "summary.json", "metrics.png", "examples.png", "confusion_matrix.png",
                "classification_report.txt", "model.npz", "config.toml")
#: Every file a run folder holds: its results and its checkpoint.
RUN_FILES = (*RESULT_FILES, "checkpoint.npz")


def _is_run_file(entry: Path) -> bool:
    """A regular file fastes writes in a run folder, or the temporary file of a write cut short."""
    name = entry.name
    ours = name in RUN_FILES or (name.endswith(".tmp") and any(name.startswith(f".{f}.") for f in RUN_FILES))
    return ours and entry.is_file() and not entry.is_symlink()


def _entries(out: Path) -> tuple[list[Path], list[str]]:
    """The run files in ``out``, and the names of everything else there."""
    try:
        entries = sorted(out.iterdir())
    except OSError as exc:
        raise RunFolderError(f"cannot read results folder {out}: {exc.strerror or exc}; choose another --out") from None
    return [e for e in entries if _is_run_file(e)], [e.name for e in entries if not _is_run_file(e)]


def _folder_config(path: Path) -> Config:
    """The configuration a run's config.toml holds (it lists every option; raises ConfigError
    or TypeError when it is no run's)."""
    values = load_toml(path)
    values.pop("preset", None)
    return Config(**values)


def _holds_a_run(out: Path) -> bool:
    """Whether ``out`` is recognisably a fastes run: its config.toml or its checkpoint reads as one."""
    try:
        _folder_config(out / "config.toml")
        return True
    except (ConfigError, TypeError):
        pass
    try:
        load_checkpoint(out / "checkpoint.npz")
        return True
    except (ModelFileError, ConfigError):
        return False


def _named(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def default_out_dir() -> Path:
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def check_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a folder that cannot be used as asked; reads only."""
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"results folder {out} is a file, not a folder; choose another {'--resume' if resume else '--out'}")
    if resume:
        if not (out / "checkpoint.npz").is_file():
            raise RunFolderError(f"cannot resume: {out / 'checkpoint.npz'} does not exist; start a new run instead")
    elif out.is_dir():
        ours, others = _entries(out)
        if (ours or others) and not _holds_a_run(out):
            raise RunFolderError(
                f"results folder {out} holds files but no fastes run ({_named([e.name for e in ours] + others)}); "
                "choose a new or empty --out" + (": --overwrite replaces only a fastes run" if overwrite else "")
            )
        if ours and not overwrite:
            raise RunFolderError(
                f"results folder {out} already holds a run; pass --resume to continue it, "
                "--overwrite to replace its files, or choose another --out"
            )
        if others:
            raise RunFolderError(
                f"results folder {out} holds files that fastes did not write ({_named(others)}); "
                "move them elsewhere or choose another --out"
            )
    else:  # created at the first checkpoint: its nearest existing folder must allow that
        parent = out.absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            problem = "is a file, not a folder" if not parent.is_dir() else "is not writable"
            raise RunFolderError(f"cannot create results folder {out}: {parent} {problem}; choose another --out")
        return
    if not os.access(out, os.W_OK | os.X_OK):
        raise RunFolderError(f"results folder {out} is not writable; choose another --out")


def resume_run(out: Path, changes: dict | None) -> tuple[Config, TrainState]:
    """The configuration and state of the run in ``out``, with ``changes`` (options of
    :data:`RESUME_OPTIONS`) applied, after checking the checkpoint belongs to the folder.

    None of them changes the trajectory: ``epochs`` is refused below the epochs begun,
    and for a cosine learning-rate schedule (whose length it is) any other value."""
    state, saved, _ = load_checkpoint(out / "checkpoint.npz")
    config = Config(**saved)
    _check_same_run(out, config)
    if state.epoch > config.epochs or (state.epoch == config.epochs and state.batch):
        raise ModelFileError(f"checkpoint in {out} is past its own {config.epochs} epochs; the file was edited or damaged")
    changes = {k: v for k, v in (changes or {}).items() if v is not None}
    unknown = sorted(set(changes) - set(RESUME_OPTIONS))
    if unknown:
        raise RunFolderError(f"--resume cannot change {', '.join(unknown)}; start a new run with --out instead")
    if config.lr_schedule == "cosine" and changes.get("epochs", config.epochs) != config.epochs:
        # its progress is generation / (epochs * batches): other epochs change every later learning rate
        raise RunFolderError(
            f"the run in {out} anneals its learning rate along a cosine over its {config.epochs} epochs; "
            f"--epochs {changes['epochs']} would change every later learning rate: leave --epochs out (a run its "
            "time budget stopped goes on with a larger --max-seconds), or start a new run with --out"
        )
    started = state.epoch + (1 if state.batch else 0)
    if changes.get("epochs", started) < started:
        part = f" and part of epoch {state.epoch + 1}" if state.batch else ""
        raise RunFolderError(
            f"the run in {out} has done {state.epoch} epoch(s){part}; --epochs {changes['epochs']} would end it "
            f"before that: give --epochs {started} or more, or leave --epochs out"
        )
    config = config.replace(**changes)
    check_used(config, changes)
    return config, state


def _check_same_run(out: Path, config: Config) -> None:
    """The checkpoint must be the run of the folder's config.toml (when there is one)."""
    path = out / "config.toml"
    if not path.exists():
        return  # stopped between writing its first checkpoint and config.toml
    try:
        folder = _folder_config(path).to_dict()
    except (ConfigError, TypeError) as exc:
        raise RunFolderError(f"cannot resume: {path} is not a valid run configuration ({exc}); restore it") from None
    ours = config.to_dict()
    for key, value in ours.items():
        if key not in RESUME_OPTIONS and folder.get(key) != value:
            raise RunFolderError(
                f"checkpoint.npz in {out} is not the run of its config.toml ({key} is {value!r} in the checkpoint, "
                f"{folder.get(key)!r} in config.toml); put back this run's checkpoint, or resume that checkpoint "
                "in a folder of its own"
            )


def _check_state_fits(state: TrainState, trainer: Trainer, out: Path) -> None:
    if state.theta.shape[0] != trainer.layout.size:
        raise RunFolderError(
            f"checkpoint in {out} holds {state.theta.shape[0]} parameters but its configuration on dataset "
            f"{trainer.dataset.name} makes {trainer.layout.size} (layers {trainer.layout.dims}); has the data changed?"
        )
    if state.batch >= trainer.n_batches:
        raise ModelFileError(f"checkpoint in {out} is at batch {state.batch} of an epoch of {trainer.n_batches}; "
                             "the file was edited or damaged")


class _Folder:
    """A run's writes into its folder, which it claims at the first checkpoint."""

    def __init__(self, out: Path, trainer: Trainer, resume: bool, overwrite: bool):
        self.out, self.trainer, self.layout = out, trainer, trainer.layout
        self.claimed = resume  # a resumed folder is this run's already
        self.overwrite = overwrite and not resume
        self.first = True
        self.log: report.MetricsLog | None = None

    def record(self, state: TrainState) -> None:
        """A new metrics row: appended to metrics.csv. The first claims the folder with a
        checkpoint (a folder with rows is resumable) and writes the rows so far, which for a
        resumed run are its checkpoint's: rows written after that checkpoint are dropped."""
        if not self.claimed:
            self.checkpoint(state)
        if self.log is None:
            self.log = report.MetricsLog(self.out / "metrics.csv", state.history)
        else:
            self.log.append(state.history[-1])

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None

    def checkpoint(self, state: TrainState) -> None:
        config = self.trainer.config  # the run's plan (its epochs fitted to the budget, if asked)
        write = lambda: save_checkpoint(self.out / "checkpoint.npz", state, config.to_dict(), self.layout)  # noqa: E731
        if self.claimed:
            write()
        else:
            self._claim(write)
        if self.first:  # config.toml after the checkpoint: a folder holding a checkpoint is resumable
            atomic_write_text(self.out / "config.toml", config.to_toml())
            self.first = False

    def _claim(self, write_checkpoint) -> None:
        """Create the folder and write the first checkpoint; with ``--overwrite``, remove the
        old run's own files only once that checkpoint is written. Its summary.json is set
        aside meanwhile (so it never looks complete beside a new checkpoint) and put back if
        the write fails (a full disk), so nothing of the old run is lost before then."""
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunFolderError(f"cannot create results folder {self.out}: {exc.strerror or exc}; choose another --out") from None
        old = _entries(self.out)[0] if self.overwrite else []
        summary, aside = self.out / "summary.json", self.out / f".summary.json.{os.getpid()}.tmp"
        if self.overwrite and summary.is_file():
            os.replace(summary, aside)
        try:
            write_checkpoint()
        except BaseException:
            if aside.exists():
                os.replace(aside, summary)
            raise
        for entry in old:
            if entry.name != "checkpoint.npz":
                entry.unlink(missing_ok=True)
        aside.unlink(missing_ok=True)
        self.claimed = True

    def where(self) -> str:
        if not self.claimed:
            return f"nothing was written to {self.out}"
        return f"{self.out} keeps the checkpoint of its last finished epoch; start again there with --overwrite and other values"


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


class _Signal(BaseException):
    """SIGINT/SIGTERM while results are written (a BaseException, as KeyboardInterrupt)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _raise_on_signals():
    def handler(signum, frame):
        raise _Signal(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def train_to_folder(config: Config | None, out: Path, resume: bool = False, overwrite: bool = False,
                    progress=None, resume_changes: dict | None = None) -> tuple[dict, int]:
    """Train and write every result into ``out`` (see the module docstring for the order).

    With ``resume``, the configuration is the one saved in the checkpoint (``config`` is
    ignored) with ``resume_changes`` applied: only options of :data:`RESUME_OPTIONS`.

    Returns
    -------
    summary : dict
        What summary.json holds.
    exit_code : int
        0, or 130 / 143 when SIGINT / SIGTERM stopped training early (results so far are
        written and the checkpoint allows ``--resume``).
    """
    out = Path(out)
    check_folder(out, resume, overwrite)
    state = None
    if resume:
        config, state = resume_run(out, resume_changes)
    moved = f"point to them with fastes train --resume {out} --data-dir NEW_DIR" if resume else None
    dataset = load_dataset(config.dataset, config.data_dir, if_moved=moved)
    check_fits(config, dataset)
    # the ray backend's workers load the data themselves, by name, unless it is handed over
    trainer = Trainer(config, dataset=None if config.backend == "ray" else dataset, progress=progress)
    if state is None:
        state = trainer.initial_state()
    else:
        _check_state_fits(state, trainer, out)
    folder = _Folder(out, trainer, resume, overwrite)
    exit_code = 0
    # NaN/inf is caught and explained by the trainer; NumPy's warnings about it would only repeat it
    with np.errstate(all="ignore"), stop_on_signals(trainer) as received:
        try:
            state = trainer.run(state, on_epoch=folder.checkpoint, on_record=folder.record)
        except DivergenceError as exc:
            raise DivergenceError(f"{exc}; {folder.where()}") from None
        finally:
            folder.close()
            if trainer.stop_requested and received:
                exit_code = 130 if received[0] == signal.SIGINT else 143
        folder.checkpoint(state)
    try:
        with np.errstate(all="ignore"), _raise_on_signals():
            summary = write_results(out, trainer, state, finished=not exit_code)
    except _Signal as stop:
        raise Interrupted(
            f"interrupted while writing results; the checkpoint is saved: fastes train --resume {out} writes them",
            stop.signum,
        ) from None
    return summary, exit_code


def write_results(out: Path, trainer: Trainer, state: TrainState, finished: bool = True) -> dict:
    """model.npz, metrics.csv, the plots, then summary.json (last: it marks a complete run)."""
    cfg, ds, layout = trainer.config, trainer.dataset, trainer.layout
    (out / "summary.json").unlink(missing_ok=True)
    theta = state.theta
    started = time.perf_counter()
    train_loss, train_acc = trainer.evaluate(theta, "train")
    test_loss, test_acc = trainer.evaluate(theta, "test")
    predictions = trainer.logits(theta, "test").argmax(axis=1)
    labels = list(range(ds.n_classes))
    summary = {
        "config": cfg.to_dict(),
        "dataset": ds.name,
        "finished": finished,
        "epochs_done": round(state.epoch + state.batch / trainer.n_batches, 4),
        "generations": state.generation,
        "wall_seconds": round(state.elapsed, 3),
        "compile_seconds": None if trainer.compile_seconds is None else round(trainer.compile_seconds, 3),
        "planned_generations_per_second": None if trainer.planned_rate is None else round(trainer.planned_rate, 2),
        "generations_per_second": state.generation / state.elapsed if state.elapsed > 0 else 0.0,
        "n_params": layout.size,
        "final": {"train_loss": train_loss, "train_accuracy": train_acc, "test_loss": test_loss, "test_accuracy": test_acc},
        "time_to_accuracy": {k: state.time_to_accuracy.get(k) for k in ACCURACY_LEVELS},
        "threads": trainer.backend.threads,
        "backend": cfg.backend,
    }
    save_model(out / "model.npz", layout, theta, cfg.to_dict(), trainer.projection)
    report.write_metrics_csv(out / "metrics.csv", state.history)
    title = f"fastes {cfg.backend}: test accuracy {test_acc:.4f}"
    if state.history:
        report.plot_metrics(out / "metrics.png", state.history, title)
    report.plot_examples(out / "examples.png", ds.dense("test", slice(0, 16)), ds.image_shape, predictions[:16], ds.y_test[:16])
    report.plot_confusion(out / "confusion_matrix.png", ds.y_test, predictions, labels)
    atomic_write_text(out / "classification_report.txt", report.classification_table(ds.y_test, predictions, labels))
    summary["peak_rss_mb"] = peak_rss_mb()
    report.write_json(out / "summary.json", summary)
    summary["reporting_seconds"] = round(time.perf_counter() - started, 3)
    return summary
