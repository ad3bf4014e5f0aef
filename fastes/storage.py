"""Files fastes writes and reads: model files and checkpoints, never pickled.

Model file (``model.npz``): arrays ``W0, b0, W1, b1, ...`` with ``Wk`` of shape
(fan_in, fan_out) float32, plus ``config``, a 0-d string array holding the run's
configuration as JSON. Loads with ``np.load(path)`` and no pickle.

Checkpoint (``checkpoint.npz``): parameters, optimizer state, counters, and the metrics so
far (as JSON), written atomically: temporary file, fsync, rename.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .errors import ModelFileError
from .layout import ParamLayout

CHECKPOINT_FORMAT = "fastes-checkpoint-1"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write(path: Path, write) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, fsync, then rename.

    A crash at any point leaves either the old file or the new one, never a torn file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are ordinary files
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode()))


def save_model(path: str | Path, layout: ParamLayout, theta: np.ndarray, config: dict) -> None:
    """Write ``model.npz`` (see module docstring)."""
    arrays = layout.to_arrays(theta)
    arrays["config"] = np.array(json.dumps(config))
    atomic_write(Path(path), lambda fh: np.savez(fh, **arrays))


def _open_npz(path: Path, kind: str):
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ModelFileError(f"{kind} file {path} does not exist") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelFileError(f"{kind} file {path} is corrupt or not an .npz file ({exc})") from None


def load_model(path: str | Path) -> tuple[ParamLayout, np.ndarray, dict]:
    """Read a model file: layout, parameters (P,) float32, and its config dict."""
    path = Path(path)
    try:
        with _open_npz(path, "model") as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise ModelFileError(f"model file {path} is corrupt or truncated ({exc})") from None
    layout, theta = ParamLayout.from_arrays(arrays, source=str(path))
    config = {}
    if "config" in arrays:
        try:
            config = json.loads(str(arrays["config"]))
        except json.JSONDecodeError:
            raise ModelFileError(f"model file {path}: its config entry is not valid JSON") from None
    return layout, theta, config


def save_checkpoint(path: str | Path, state, config: dict, layout: ParamLayout) -> None:
    """Write ``checkpoint.npz`` from a :class:`fastes.trainer.TrainState`."""
    meta = {
        "format": CHECKPOINT_FORMAT,
        "config": config,
        "dims": list(layout.dims),
        "generation": state.generation,
        "epoch": state.epoch,
        "batch": state.batch,
        "loss_sum": state.loss_sum,
        "correct": state.correct,
        "seen": state.seen,
        "elapsed": state.elapsed,
        "history": state.history,
        "time_to_accuracy": state.time_to_accuracy,
        "optimizer_keys": sorted(state.optimizer),
    }
    arrays = {"theta": state.theta, "meta": np.array(json.dumps(meta))}
    arrays.update({f"opt_{k}": np.asarray(v) for k, v in state.optimizer.items()})
    atomic_write(Path(path), lambda fh: np.savez(fh, **arrays))


def load_checkpoint(path: str | Path):
    """Read a checkpoint: ``(TrainState, config dict, dims)``."""
    from .trainer import TrainState

    path = Path(path)
    try:
        with _open_npz(path, "checkpoint") as npz:
            arrays = {name: npz[name] for name in npz.files}
        meta = json.loads(str(arrays["meta"]))
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ModelFileError(f"{path} is not a fastes checkpoint (format {meta.get('format')!r})")
        theta = np.ascontiguousarray(arrays["theta"], dtype=np.float32)
        optimizer = {k: arrays[f"opt_{k}"] for k in meta["optimizer_keys"]}
        state = TrainState(
            theta=theta,
            generation=int(meta["generation"]),
            epoch=int(meta["epoch"]),
            batch=int(meta["batch"]),
            loss_sum=float(meta["loss_sum"]),
            correct=int(meta["correct"]),
            seen=int(meta["seen"]),
            elapsed=float(meta["elapsed"]),
            history=list(meta["history"]),
            time_to_accuracy=dict(meta["time_to_accuracy"]),
            optimizer=optimizer,
        )
        dims = tuple(int(d) for d in meta["dims"])
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError, json.JSONDecodeError, zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ModelFileError(f"checkpoint {path} is corrupt or not a fastes checkpoint ({exc!r})") from None
    if theta.ndim != 1 or theta.shape[0] != ParamLayout(dims).size:
        raise ModelFileError(f"checkpoint {path}: parameters do not match its layer sizes {dims}")
    return state, meta["config"], dims
