"""Files fastes writes and reads: model files and checkpoints, never pickled.

Model file (``model.npz``): arrays ``W0, b0, W1, b1, ...`` with ``Wk`` of shape
(fan_in, fan_out) float32, plus ``config``, a 0-d string array holding the run's
configuration as JSON, and for a ``--pca K`` run ``pca_mean`` (n_features,) and
``pca_components`` (n_features, K), which put an input where ``W0`` expects it:
``(x - pca_mean) @ pca_components``. Loads with ``np.load(path)`` and no pickle.

Checkpoint (``checkpoint.npz``): parameters, optimizer state, the standard deviations of a
strategy that learns them, counters, and the metrics so far (as JSON), written atomically:
temporary file, fsync, rename.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
import tempfile
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..config import LEARNED_SIGMA, Config, ConfigError
from ..errors import ModelFileError, one_line
from .paths import regular_file
from .projection import Projection
from ..layout import ParamLayout
from ..memory import available_bytes, format_bytes
from ..state import METRIC_COLUMNS, TrainState

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
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:  # a full disk names no file: name ours
            raise type(exc)(exc.errno, exc.strerror, str(path)) from None
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


def save_model(path: str | Path, layout: ParamLayout, theta: np.ndarray, config: dict,
               projection: Projection | None = None) -> None:
    """Write ``model.npz`` (see module docstring)."""
    arrays = layout.to_arrays(theta)
    if projection is not None:
        arrays["pca_mean"], arrays["pca_components"] = projection.mean, projection.components
    arrays["config"] = np.array(json.dumps(config))
    atomic_write(Path(path), lambda fh: np.savez(fh, **arrays))


def read_npz(path: str | Path, kind: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, never unpickling and never allocating more than the
    file declares: each member's ``.npy`` header is checked against the member's size, and
    their total against the memory available. Any problem is a :class:`ModelFileError`."""
    path = regular_file(path, f"{kind} file", ModelFileError)
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{kind} file {path} is not an .npz file (not a zip archive); give a {kind}.npz written by fastes")
    arrays = {}
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            total = sum(m.file_size for m in members)
            if total > available_bytes():
                raise ModelFileError(
                    f"{kind} file {path} unpacks to {format_bytes(total)}, more than the "
                    f"{format_bytes(available_bytes())} of memory available; is it really a fastes {kind}?"
                )
            for member in members:
                if not member.filename.endswith(".npy"):
                    raise ModelFileError(f"{kind} file {path} holds {member.filename!r}, not a NumPy array")
                with archive.open(member) as fh:
                    _check_npy_header(fh, member, path, kind)
                with archive.open(member) as fh:
                    arrays[member.filename[:-4]] = np.lib.format.read_array(fh, allow_pickle=False)
    except ModelFileError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error,
            NotImplementedError, RuntimeError, struct.error, SyntaxError, TypeError, tokenize.TokenError) as exc:
        # what a damaged archive raises: bad CRC, truncated member, unsupported compression, a
        # .npy header NumPy cannot tokenize ...
        raise ModelFileError(f"{kind} file {path} is corrupt or truncated ({one_line(exc)})") from None
    return arrays


def _check_npy_header(fh, member, path, kind) -> None:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version in ((2, 0), (3, 0)):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    else:  # read_magic returns whichever two version bytes the file holds
        raise ValueError(f"unsupported .npy version {version}")
    if dtype.hasobject:
        raise ModelFileError(f"{kind} file {path}: {member.filename} holds Python objects; fastes files hold only numbers and text")
    if math.prod(shape) * dtype.itemsize > member.file_size:
        raise ModelFileError(f"{kind} file {path}: {member.filename} declares {shape} {dtype} but holds fewer bytes; the file is corrupt")


def _json_entry(value: np.ndarray, path, kind: str, entry: str) -> dict:
    """A text entry of an .npz file (a 0-d string array) holding a JSON object."""
    if value.ndim != 0 or value.dtype.kind != "U":
        raise ModelFileError(f"{kind} file {path}: its {entry} entry is not a text (0-d string) array")
    try:
        data = json.loads(str(value))
    except (json.JSONDecodeError, RecursionError):
        raise ModelFileError(f"{kind} file {path}: its {entry} entry is not valid JSON") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{kind} file {path}: its {entry} entry is JSON {type(data).__name__}, not an object")
    return data


def _model_config(config: dict, path) -> dict:
    """A model file's config, every known option checked as :class:`Config` checks it
    (options a model file may lack, or a later fastes may add, are left to the reader)."""
    from ..config import check_field

    for key in {f.name for f in dataclasses.fields(Config)} & set(config):
        try:
            config[key] = check_field(key, config[key])
        except ConfigError as exc:
            raise ModelFileError(f"model file {path}: its config entry is invalid: {exc}") from None
    return config


def load_model(path: str | Path) -> tuple[ParamLayout, np.ndarray, dict, Projection | None]:
    """Read a model file: layout (with the activation its config records), parameters (P,)
    float32, its config dict, and the ``--pca`` projection of its inputs (None: it takes the
    features as they are)."""
    path = Path(path)
    arrays = read_npz(path, "model")
    config = _model_config(_json_entry(arrays["config"], path, "model", "config"), path) if "config" in arrays else {}
    # files written before --activation existed hold ReLU networks
    layout, theta = ParamLayout.from_arrays(arrays, str(path), config.get("activation", "relu"))
    return layout, theta, config, _projection(arrays, layout, path)


def _projection(arrays: dict, layout: ParamLayout, path) -> Projection | None:
    """A model file's ``pca_mean`` and ``pca_components``, checked against its first layer."""
    mean, components = arrays.get("pca_mean"), arrays.get("pca_components")
    if mean is None and components is None:
        return None
    if mean is None or components is None:
        raise ModelFileError(f"model file {path} has one of pca_mean and pca_components but not the other; "
                             "the file was edited or damaged")
    if (components.ndim != 2 or mean.shape != (components.shape[0],) or components.shape[1] != layout.dims[0]
            or components.dtype.kind != "f" or mean.dtype.kind != "f"):
        raise ModelFileError(f"model file {path}: pca_components {components.shape} and pca_mean {mean.shape} do not "
                             f"fit its first layer's {layout.dims[0]} inputs; the file was edited or damaged")
    if not (np.isfinite(mean).all() and np.isfinite(components).all()):
        raise ModelFileError(f"model file {path}: its pca_mean or pca_components contain NaN or infinity")
    return Projection(mean.astype(np.float32), np.ascontiguousarray(components, dtype=np.float32))


def save_checkpoint(path: str | Path, state: TrainState, config: dict, layout: ParamLayout) -> None:
    """Write ``checkpoint.npz`` from a :class:`fastes.state.TrainState`."""
    arrays, progress = state.to_arrays()
    meta = {"format": CHECKPOINT_FORMAT, "config": config, "dims": list(layout.dims), **progress}
    arrays["meta"] = np.array(json.dumps(meta))
    atomic_write(Path(path), lambda fh: np.savez(fh, **arrays))


def load_checkpoint(path: str | Path) -> tuple[TrainState, dict, tuple[int, ...]]:
    """Read a checkpoint: ``(TrainState, config dict, dims)``, every field checked (the
    config as a :class:`fastes.config.Config`; how it fits the run is the caller's check)."""
    path = Path(path)
    arrays = read_npz(path, "checkpoint")
    if "meta" not in arrays or "theta" not in arrays:
        raise ModelFileError(f"{path} is not a fastes checkpoint (no meta or theta entry); is it a model file?")
    meta = _json_entry(arrays["meta"], path, "checkpoint", "meta")
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{path} is not a fastes checkpoint (format {meta.get('format')!r})")
    check = _MetaCheck(path, meta)
    config = check.config()
    dims = check.int_list("dims", minimum=1, min_length=2)
    theta = arrays["theta"]
    if theta.ndim != 1 or theta.dtype.kind != "f" or theta.shape[0] != ParamLayout(dims).size:
        raise ModelFileError(f"checkpoint {path}: its parameters ({theta.dtype} {theta.shape}) do not match its layer sizes {dims}")
    if not np.isfinite(theta).all():
        raise ModelFileError(f"checkpoint {path}: its parameters contain NaN or infinity")
    optimizer = _optimizer_state(arrays, check.key_list("optimizer_keys"), config, theta.shape[0], path)
    progress = {
        **{k: check.int(k) for k in TrainState.COUNTS},
        **{k: check.float(k) for k in TrainState.SUMS},
        "history": check.history(METRIC_COLUMNS),
        "time_to_accuracy": check.time_to_accuracy(),
        "optimizer_keys": sorted(optimizer),
    }
    if progress["correct"] > progress["seen"]:
        raise ModelFileError(
            f"checkpoint {path}: {progress['correct']} correct of {progress['seen']} seen is impossible; the file was edited"
        )
    state_arrays = {"theta": theta, **{f"opt_{k}": v for k, v in optimizer.items()}}
    sigma = _sigma_state(arrays.get("sigma"), config, theta.shape[0], path)
    if sigma is not None:
        state_arrays["sigma"] = sigma
    state = TrainState.from_arrays(state_arrays, progress)
    return state, config, tuple(dims)


def _sigma_state(value, config: dict, size: int, path) -> np.ndarray | None:
    """The checkpoint's standard deviations: P finite positive float32 numbers exactly where
    the configured strategy learns them (PGPE, SNES), None otherwise."""
    if config["strategy"] not in LEARNED_SIGMA:
        if value is not None:
            raise ModelFileError(
                f"checkpoint {path} holds standard deviations but its strategy {config['strategy']} keeps none; "
                "the file was edited or damaged"
            )
        return None
    sigma = None
    if value is not None and value.shape == (size,) and value.dtype.kind == "f":
        with np.errstate(over="ignore"):
            sigma = np.array(value, dtype=np.float32)
    if sigma is None or not np.isfinite(sigma).all() or not (sigma > 0).all():
        found = "missing" if value is None else f"{value.dtype} {value.shape}"
        raise ModelFileError(
            f"checkpoint {path}: its standard deviations 'sigma' are {found}, expected {size} finite positive "
            "float32 numbers; the file is truncated, edited or damaged"
        )
    return sigma


def _optimizer_state(arrays: dict, keys: list[str], config: dict, size: int, path) -> dict:
    """The checkpoint's optimizer state: exactly the arrays, shapes and kinds that the
    configured optimizer keeps, all finite, as that optimizer's dtypes; a fresh state where
    the checkpoint has none (written before the first step by an earlier fastes)."""
    from ..strategies.optimizers import make_optimizer

    expected = make_optimizer(Config(**config), size).state()
    if not keys:
        return expected
    if sorted(keys) != sorted(expected):
        raise ModelFileError(
            f"checkpoint {path}: optimizer state {sorted(keys)} does not match its {config['optimizer']} "
            f"optimizer {sorted(expected)}; the file was edited or damaged"
        )
    state = {}
    for key, like in expected.items():
        value = arrays.get(f"opt_{key}")
        if (value is None or value.shape != like.shape or value.dtype.kind != like.dtype.kind
                or not np.isfinite(value).all() or (value.ndim == 0 and value < 0)):
            found = "missing" if value is None else f"{value.dtype} {value.shape}"
            raise ModelFileError(
                f"checkpoint {path}: optimizer state {key!r} is {found}, expected finite {like.dtype} {like.shape}; "
                "the file is truncated, edited or damaged"
            )
        state[key] = np.array(value, dtype=like.dtype)
    return state


class _MetaCheck:
    """Typed reads of a checkpoint's metadata; anything else is a one-line ModelFileError."""

    def __init__(self, path, meta: dict):
        self.path, self.meta = path, meta

    def _bad(self, key: str, what: str):
        return ModelFileError(
            f"checkpoint {self.path}: {key} must be {what}, found {self.meta.get(key)!r:.80}; "
            "the file was edited or damaged: resume from an intact checkpoint or start a new run"
        )

    def config(self) -> dict:
        from ..config import Config

        value = self.meta.get("config")
        if not isinstance(value, dict):
            raise self._bad("config", "an object of options")
        try:
            return Config(**value).to_dict()
        except (ConfigError, TypeError) as exc:
            raise ModelFileError(
                f"checkpoint {self.path} holds a configuration this fastes cannot read ({one_line(exc)})"
            ) from None

    def int(self, key: str, minimum: int = 0) -> int:
        value = self.meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._bad(key, f"an integer >= {minimum}")
        return value

    def float(self, key: str) -> float:
        value = self.meta.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise self._bad(key, "a finite number >= 0")
        return float(value)

    def int_list(self, key: str, minimum: int, min_length: int) -> list[int]:
        value = self.meta.get(key)
        if (not isinstance(value, list) or len(value) < min_length
                or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in value)):
            raise self._bad(key, f"a list of at least {min_length} integers >= {minimum}")
        return value

    def key_list(self, key: str) -> list[str]:
        value = self.meta.get(key)
        if not isinstance(value, list) or any(not isinstance(v, str) for v in value):
            raise self._bad(key, "a list of names")
        return value

    def history(self, columns) -> list[dict]:
        value = self.meta.get("history")
        number = (int, float)
        if not isinstance(value, list) or any(
            not isinstance(row, dict) or any(isinstance(row.get(c), bool) or not isinstance(row.get(c), number) for c in columns)
            for row in value
        ):
            raise self._bad("history", f"a list of rows with numbers for {', '.join(columns)}")
        return value

    def time_to_accuracy(self) -> dict:
        value = self.meta.get("time_to_accuracy")
        if not isinstance(value, dict) or any(
            v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))) for v in value.values()
        ):
            raise self._bad("time_to_accuracy", "an object of seconds (or null) per accuracy level")
        return value
