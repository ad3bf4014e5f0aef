"""The one training configuration: a validated dataclass shared by the CLI, TOML files and
:class:`fastes.ESClassifier`, plus the named presets.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pyproject.toml installs tomli, tomllib's original, on Python 3.10
    import tomli as tomllib

CHOICES: dict[str, tuple[str, ...]] = {
    "dataset": ("mnist", "digits"),
    "loss": ("mse", "cross-entropy"),
    "shaping": ("zscore", "centered-rank"),
    "optimizer": ("sgd", "momentum", "adam"),
    "init": ("normal", "he", "glorot"),
    "perturbation": ("full", "lowrank"),
    "lr_schedule": ("constant", "exponential", "cosine"),
    "sigma_schedule": ("constant", "exponential"),
    "backend": ("numba", "numpy", "ray"),
}

#: Options ``fastes train --resume`` may change: none of them changes the trajectory.
RESUME_OPTIONS = ("threads", "epochs", "max_seconds", "workers", "address")


@dataclass
class Config:
    """Every hyperparameter of a training run.

    Defaults are the original Julia program's values (the ``seed`` preset), except that
    :data:`PRESETS` overrides them for ``default``.
    """

    # data
    dataset: str = "mnist"
    data_dir: str | None = None
    # model
    hidden: tuple[int, ...] = (16, 16)
    init: str = "normal"
    init_std: float = 0.1
    # evolution strategy
    population: int = 8
    sigma: float = 0.001
    antithetic: bool = False
    shaping: str = "zscore"
    perturbation: str = "full"
    rank: int = 1
    loss: str = "mse"
    # optimizer
    optimizer: str = "sgd"
    lr: float = 0.001
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    lr_decay: float = 1.0
    sigma_schedule: str = "constant"
    sigma_decay: float = 1.0
    # schedule of data and time
    batch_size: int = 64
    shuffle: bool = False
    epochs: int = 100
    max_seconds: float | None = None
    eval_every_seconds: float = 30.0
    seed: int = 0
    # execution
    backend: str = "numba"
    threads: int | None = None
    address: str | None = None
    workers: int = 2

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "Config":
        """Check every field's type and range, then how fields combine; raise
        :class:`ConfigError` naming the first bad one. Values are normalised in place
        (NumPy scalars become Python numbers, ``hidden`` a tuple)."""
        for f in fields(self):
            setattr(self, f.name, check_field(f.name, getattr(self, f.name)))
        if self.antithetic and self.population % 2:
            raise ConfigError(
                f"antithetic sampling needs an even population, got {self.population}; "
                "use an even --population or drop --antithetic"
            )
        if self.population < 2:
            raise ConfigError(f"population must be at least 2 to estimate a gradient, got {self.population}")
        if self.sigma_schedule == "exponential":
            _check_sigma_schedule(self.sigma, self.sigma_decay, self.epochs)
        return self

    @property
    def n_noise(self) -> int:
        """Distinct noise vectors per generation (half the population when antithetic)."""
        return self.population // 2 if self.antithetic else self.population

    def replace(self, **changes: Any) -> "Config":
        """A validated copy with ``changes`` applied (``None`` values are ignored)."""
        updates = {k: v for k, v in changes.items() if v is not None}
        unknown = set(updates) - {f.name for f in fields(self)}
        if unknown:
            raise ConfigError(f"unknown config option(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **updates)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["hidden"] = list(self.hidden)
        return out

    def to_toml(self) -> str:
        """The resolved configuration as TOML. ``None`` fields are left out (TOML has no
        null), so the file names the ``seed`` preset, whose values for them are ``None``:
        without it a file read with the ``default`` preset would gain its time budget."""
        lines = ["# fastes training configuration; rerun with: fastes train --config THIS_FILE",
                 "# every option is given below; the seed preset only supplies options left unset (None)",
                 'preset = "seed"']
        for key, value in self.to_dict().items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # a TOML basic string: JSON's escapes are TOML's, except that TOML also escapes DEL
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


#: Fields that hold a boolean, an integer (with its minimum) or a float (with its range).
_BOOLS = ("antithetic", "shuffle")
_INTS = {"population": 1, "batch_size": 1, "epochs": 1, "rank": 1, "workers": 1, "threads": 1, "seed": 0}
#: Largest integer a field takes: int64 counters, except the seed (an unsigned 64-bit key).
_INT_MAX = {"seed": 2**64 - 1}
_INT64_MAX = 2**63 - 1
#: Floats that reach the kernels as float32 must be normal float32 numbers.
_FLOAT32 = ("sigma", "lr", "init_std")
_POSITIVE = ("sigma", "lr", "init_std", "eval_every_seconds", "max_seconds", "lr_decay", "sigma_decay")
_UNIT = ("momentum", "beta1", "beta2")  # [0, 1)
_DECAYS = ("lr_decay", "sigma_decay")  # (0, 1]
_TEXT = ("data_dir", "address")
_OPTIONAL = ("data_dir", "address", "threads", "max_seconds")
_FLOAT32_TINY = float(np.finfo(np.float32).tiny)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_field(name: str, value: Any) -> Any:
    """One configuration field's value, type- and range-checked and normalised.

    This is the one check of every value, whether it came from a flag, a TOML file, a
    checkpoint, a model file or :class:`fastes.ESClassifier`.
    """
    if value is None and name in _OPTIONAL:
        return None
    if name in CHOICES:
        choices = CHOICES[name]
        if not isinstance(value, str) or value not in choices:
            raise ConfigError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")
        return value
    if name == "hidden":
        return parse_hidden(value)
    if name in _TEXT:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a path that is not UTF-8 cannot be written to config.toml
            raise ConfigError(f"{name} {value!r} is not UTF-8 text; rename it or give another path") from None
        return value
    if name in _BOOLS:
        if not isinstance(value, (bool, np.bool_)):
            raise ConfigError(f"{name} must be true or false (unquoted), got {value!r}")
        return bool(value)
    if name in _INTS:
        return _check_int(name, value, _INTS[name], _INT_MAX.get(name, _INT64_MAX))
    value = _check_float(name, value, positive=name in _POSITIVE)
    if name in _UNIT and not value < 1.0:
        raise ConfigError(f"{name} must be in [0, 1), got {value}")
    if name in _DECAYS and value > 1.0:
        raise ConfigError(f"{name} must be in (0, 1] (a per-epoch factor), got {value}")
    if name in _FLOAT32 and not _FLOAT32_TINY <= value <= _FLOAT32_MAX:
        raise ConfigError(
            f"{name} {value:g} is outside float32's normal range [{_FLOAT32_TINY:.3g}, {_FLOAT32_MAX:.3g}] "
            f"(training computes in float32, where it would be {float(np.float32(value)):g}); choose a value in that range"
        )
    return value


def _check_int(name: str, value: Any, minimum: int, maximum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    if value > maximum:
        raise ConfigError(f"{name} must be at most {maximum} (2**{maximum.bit_length()} - 1), got {value}")
    return value


def _check_float(name: str, value: Any, positive: bool) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")
    if not positive and value < 0:
        raise ConfigError(f"{name} must be non-negative, got {value}")
    return value


def _check_sigma_schedule(sigma: float, decay: float, epochs: int) -> None:
    """An exponential sigma schedule must not decay below float32's range within the run."""
    if decay < 1.0 and sigma * decay ** (epochs - 1) < _FLOAT32_TINY:
        epoch = 1 + math.ceil(math.log(_FLOAT32_TINY / sigma) / math.log(decay))
        raise ConfigError(
            f"sigma {sigma:g} x sigma_decay {decay:g} per epoch falls below float32's range (to 0) by epoch "
            f"{epoch} of {epochs}; raise sigma_decay or lower epochs"
        )


def parse_hidden(value: Any) -> tuple[int, ...]:
    """Hidden layer sizes from ``"16,16"``, ``[16, 16]`` or ``()`` (no hidden layer)."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        try:
            value = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"hidden sizes must be comma-separated positive integers, got {value!r}") from None
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        value = [value]
    if isinstance(value, (dict, set, bytes)):
        raise ConfigError(f"hidden sizes must be a list of positive integers, got {value!r}")
    try:
        sizes = tuple(value)
    except TypeError:
        raise ConfigError(f"hidden sizes must be a list of positive integers, got {value!r}") from None
    for size in sizes:
        if isinstance(size, (bool, np.bool_)) or not isinstance(size, numbers.Integral) or not 1 <= size <= _INT64_MAX:
            raise ConfigError(f"hidden sizes must be positive integers, got {list(sizes)!r}")
    return tuple(int(size) for size in sizes)


#: Named starting points. ``seed`` is the original program; ``default`` is what a bare
#: ``fastes train`` runs, chosen by measurement (see README).
PRESETS: dict[str, dict[str, Any]] = {
    "seed": {},
    "default": dict(
        # Chosen by 60-90 s trials on this 2-core machine (README): low-rank noise lets a
        # population of 4096 run at several generations per second, and large
        # populations gained most per second of all we tried.
        hidden=(128,),
        init="he",
        population=4096,
        antithetic=True,
        perturbation="lowrank",
        rank=1,
        sigma=0.02,
        shaping="centered-rank",
        loss="cross-entropy",
        optimizer="adam",
        lr=0.005,
        lr_schedule="cosine",
        batch_size=256,
        shuffle=True,
        epochs=9,
        max_seconds=600.0,
    ),
    "quick": dict(
        dataset="digits",
        hidden=(32,),
        init="he",
        population=128,
        antithetic=True,
        sigma=0.02,
        shaping="centered-rank",
        loss="cross-entropy",
        optimizer="adam",
        lr=0.03,
        batch_size=64,
        shuffle=True,
        epochs=10,
    ),
}


def preset(name: str) -> Config:
    """The named preset as a validated :class:`Config`."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return Config(**PRESETS[name])


#: Largest config file read (a resolved config.toml is about 1 KiB).
MAX_CONFIG_BYTES = 1 << 20


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into a dict of field values (checked by :func:`resolve`)."""
    from .files import read_bytes

    path = Path(path)
    raw = read_bytes(path, "config file", ConfigError, MAX_CONFIG_BYTES)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}); give a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    known = {f.name for f in fields(Config)} | {"preset"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"config file {path}: unknown option(s) {', '.join(unknown)}")
    return data


def resolve(preset_name: str | None = None, file: str | Path | None = None, **overrides: Any) -> Config:
    """Preset, then config file, then explicit overrides (``None`` means not given)."""
    file_values = load_toml(file) if file is not None else {}
    from_file = file_values.pop("preset", None)
    name = preset_name if preset_name is not None else from_file if from_file is not None else "default"
    if not isinstance(name, str) or name not in PRESETS:
        where = f"config file {file}: " if preset_name is None and from_file is not None else ""
        raise ConfigError(f"{where}unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    for key, value in file_values.items():
        try:
            check_field(key, value)
        except ConfigError as exc:
            raise ConfigError(f"config file {file}: {exc}") from None
    values = {**PRESETS[name], **file_values, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return Config(**values)
    except TypeError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
