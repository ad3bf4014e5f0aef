"""The one training configuration: a validated dataclass shared by the CLI, TOML files and
:class:`fastes.ESClassifier`, plus the named presets.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

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
        """Check every field; raise :class:`ConfigError` naming the first bad one."""
        self.hidden = parse_hidden(self.hidden)
        for name, choices in CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                raise ConfigError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")
        for name in ("population", "batch_size", "epochs", "rank", "workers"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("seed", self.seed, minimum=0)
        if self.threads is not None:
            _check_int("threads", self.threads, minimum=1)
        for name in ("sigma", "lr", "init_std", "eval_every_seconds"):
            _check_float(name, getattr(self, name), positive=True)
        for name in ("weight_decay",):
            _check_float(name, getattr(self, name), positive=False)
        for name in ("momentum", "beta1", "beta2"):
            value = _check_float(name, getattr(self, name), positive=False)
            if not value < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {value}")
        for name in ("lr_decay", "sigma_decay"):
            value = _check_float(name, getattr(self, name), positive=True)
            if value > 1.0:
                raise ConfigError(f"{name} must be in (0, 1] (a per-epoch factor), got {value}")
        if self.max_seconds is not None:
            _check_float("max_seconds", self.max_seconds, positive=True)
        if self.antithetic and self.population % 2:
            raise ConfigError(
                f"antithetic sampling needs an even population, got {self.population}; "
                "use an even --population or drop --antithetic"
            )
        if self.population < 2:
            raise ConfigError(f"population must be at least 2 to estimate a gradient, got {self.population}")
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
        """The resolved configuration as TOML (``None`` fields are left out)."""
        lines = ["# fastes training configuration; rerun with: fastes train --config THIS_FILE"]
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
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_float(name: str, value: Any, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")
    if not positive and value < 0:
        raise ConfigError(f"{name} must be non-negative, got {value}")
    return float(value)


def parse_hidden(value: Any) -> tuple[int, ...]:
    """Hidden layer sizes from ``"16,16"``, ``[16, 16]`` or ``()`` (no hidden layer)."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        try:
            value = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"hidden sizes must be comma-separated positive integers, got {value!r}") from None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    try:
        sizes = tuple(value)
    except TypeError:
        raise ConfigError(f"hidden sizes must be a list of positive integers, got {value!r}") from None
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"hidden sizes must be positive integers, got {list(sizes)!r}")
    return sizes


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


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into a dict of field values (not yet validated)."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    known = {f.name for f in fields(Config)} | {"preset"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"config file {path}: unknown option(s) {', '.join(unknown)}")
    return data


def resolve(preset_name: str | None = None, file: str | Path | None = None, **overrides: Any) -> Config:
    """Preset, then config file, then explicit overrides (``None`` means not given)."""
    values: dict[str, Any] = {}
    file_values = load_toml(file) if file is not None else {}
    name = preset_name or file_values.pop("preset", None) or "default"
    file_values.pop("preset", None)
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    values.update(PRESETS[name])
    values.update(file_values)
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Config(**values)
    except TypeError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
