"""The one training configuration: a validated dataclass shared by the CLI, TOML files and
:class:`fastes.ESClassifier`, plus the named presets.

Each option is declared once, as a :class:`Config` field with an :class:`Option` in its
metadata (help text, values, flag, estimator parameter, whether ``--resume`` may change
it). The value checks here, the ``fastes train`` flags (:mod:`fastes.cli.main`), the TOML keys,
the estimator's parameters (:mod:`fastes.estimator`) and the options table of the docs are
all derived from it.
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
from .layout import ACTIVATIONS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pyproject.toml installs tomli, tomllib's original, on Python 3.10
    import tomli as tomllib

#: Ranges of real-valued options (intervals as written in the options table of the docs).
POSITIVE, NON_NEGATIVE, UNIT, FACTOR, FRACTION = "(0, inf)", "[0, inf)", "[0, 1)", "(0, 1]", "(0, 1)"
#: The evolution strategies (:mod:`fastes.strategies`), by ``--strategy`` name: whether each
#: learns a standard deviation per parameter.
STRATEGIES = {"openai-es": False, "pgpe": True, "snes": True}
LEARNED_SIGMA = tuple(name for name, learned in STRATEGIES.items() if learned)
_INT64_MAX = 2**63 - 1
#: Widest hidden layer: any product of two widths and the input size stays far inside int64
#: (a layer this wide already needs more memory than a machine has, which the memory check says).
MAX_WIDTH = 1 << 24


@dataclass(frozen=True)
class Option:
    """What one :class:`Config` field is, declared once in the field's metadata.

    Attributes
    ----------
    help : str
        What the option does (the flag's ``--help`` text and the docs' options table).
    kind : {"int", "float", "bool", "choice", "text", "hidden"}
        The value's type: an integer, a real number, a switch, one of ``choices``, a
        non-empty string, or hidden layer sizes.
    choices : tuple of str
        The values of a ``choice`` option.
    minimum, maximum : int
        The range of an ``int`` option.
    interval : str
        The range of a ``float`` option: :data:`POSITIVE`, :data:`NON_NEGATIVE`,
        :data:`UNIT`, :data:`FACTOR` or :data:`FRACTION`.
    float32 : bool
        A ``float`` option that reaches the kernels as float32: it must be a normal
        float32 number.
    optional : bool
        ``None`` is a value (the field's default is ``None``).
    metavar : str
        The placeholder of the flag's value (``--population N``).
    estimator : str or None
        The :class:`fastes.ESClassifier` parameter that sets it: ``""`` (the default)
        for one named as the field, another name, or None where the estimator does not
        expose it (see :attr:`parameter`).
    resume : bool
        ``fastes train --resume`` may change it (it does not change the trajectory).
    used_when : tuple of (str, tuple)
        ``(field, values)``: a run uses this option only when ``field`` has one of
        ``values`` (empty: always); a flag typed for a run that ignores it is refused.
    name : str
        The field's name (its TOML key), filled in by :data:`OPTIONS`.
    """

    help: str
    kind: str
    choices: tuple[str, ...] = ()
    minimum: int = 1
    maximum: int = _INT64_MAX
    interval: str = POSITIVE
    float32: bool = False
    optional: bool = False
    metavar: str | None = None
    estimator: str | None = ""
    resume: bool = False
    used_when: tuple = ()
    name: str = ""

    @property
    def flag(self) -> str:
        """The ``fastes train`` flag: ``--`` and the name with dashes."""
        return "--" + self.name.replace("_", "-")

    @property
    def parameter(self) -> str | None:
        """The :class:`fastes.ESClassifier` parameter that sets it, or None."""
        return self.name if self.estimator == "" else self.estimator

    @property
    def values(self) -> str:
        """The values it takes, in words (for help texts and the docs)."""
        if self.kind == "choice":
            return ", ".join(self.choices)
        if self.kind == "int":
            below = f", < 2**{self.maximum.bit_length()}" if self.maximum != _INT64_MAX else ""
            return f"integer >= {self.minimum}{below}"
        if self.kind == "float":
            return self.interval
        return {"bool": "on or off", "text": "text", "hidden": "positive integers, comma-separated"}[self.kind]


def option(default: Any, help: str, kind: str, **spec: Any) -> Any:
    """A :class:`Config` field with its :class:`Option` (``spec``: the Option's other
    attributes)."""
    spec.setdefault("optional", default is None)
    return dataclasses.field(default=default, metadata={"option": Option(help, kind, **spec)})


@dataclass
class Config:
    """Every hyperparameter of a training run.

    Defaults are what a bare ``fastes train`` runs (the ``default`` preset); every other
    preset of :data:`PRESETS` says how it differs from them.
    """

    # data
    dataset: str = option("mnist", "the bundled MNIST, or scikit-learn's 8x8 digits (quick runs)", "choice",
                          choices=("mnist", "digits"), estimator=None, used_when=("data_dir", (None,)))
    data_dir: str | None = option(None, "read MNIST-format IDX files from this folder instead (Fashion-MNIST, "
                                  "KMNIST...); recorded as an absolute path", "text", metavar="DIR", estimator=None,
                                  resume=True)
    pca: int = option(100, "feed the network each image's coordinates on the first K principal directions of the "
                      "training images (centred) instead of its pixels: a first layer K wide, whose noise ES "
                      "averages out faster; 0: the features as they are", "int", minimum=0, metavar="K",
                      estimator=None)
    # model
    hidden: tuple[int, ...] = option((128,), "hidden layer sizes (empty: a linear model)", "hidden", metavar="16,16")
    activation: str = option("relu", "hidden layers' activation: ReLU, tanh, or binary neurons with no useful "
                             "gradient, sign (-1 or +1) and step (0 or 1)", "choice", choices=ACTIVATIONS)
    init: str = option("he", "initial weights: N(0, init_std), He or Glorot; biases start at zero", "choice",
                       choices=("normal", "he", "glorot"))
    init_std: float = option(0.1, "standard deviation of the normal initial weights", "float", float32=True,
                             metavar="X", used_when=("init", ("normal",)))
    # evolution strategy
    strategy: str = option("openai-es", "OpenAI ES (one noise scale for all parameters), or PGPE (Sehnke et al. 2010) "
                           "or SNES (Schaul et al. 2011), which learn a standard deviation per parameter", "choice",
                           choices=tuple(STRATEGIES))
    population: int = option(4096, "members per generation", "int", metavar="N")
    sigma: float = option(0.04, "standard deviation of the parameter noise (pgpe, snes: every parameter's initial "
                          "one)", "float", float32=True, metavar="X")
    antithetic: bool = option(True, "mirrored pairs +eps, -eps sharing one noise vector (needs an even population)",
                              "bool")
    shaping: str = option("centered-rank", "advantages (f - mean) / std, ranks mapped to [-0.5, 0.5], or NES's utilities "
                          "of the ranks, max(0, ln(n/2 + 1) - ln rank) normalised, minus 1/n", "choice",
                          choices=("zscore", "centered-rank", "nes"))
    perturbation: str = option("lowrank", "full-rank noise, or each weight matrix perturbed by A.T @ B / sqrt(rank), "
                               "A (rank, fan_in), B (rank, fan_out) (EGGROLL, arXiv 2511.16652)", "choice",
                               choices=("full", "lowrank"))
    rank: int = option(1, "rank of low-rank perturbations", "int", metavar="R",
                       used_when=("perturbation", ("lowrank",)))
    loss: str = option("cross-entropy", "MSE against one-hot labels summed over outputs, softmax cross-entropy, or "
                       "zero-one: the error rate itself (a member scores the fraction of the batch it misclassifies)",
                       "choice", choices=("mse", "cross-entropy", "zero-one"))
    # optimizer
    optimizer: str = option("adam", "how to step along the gradient estimate; ClipUp (Toklu et al. 2020): momentum on "
                            "the normalised gradient, each step at most --max-speed long", "choice",
                            choices=("sgd", "momentum", "adam", "clipup"))
    lr: float = option(0.005, "learning rate (snes: of the centre, 1 in the natural-gradient form; clipup: its step "
                       "size)", "float", float32=True, metavar="X")
    momentum: float = option(0.9, "momentum coefficient (--optimizer momentum or clipup)", "float", interval=UNIT,
                             metavar="X", used_when=("optimizer", ("momentum", "clipup")))
    max_speed: float | None = option(None, "ClipUp's longest step, an L2 norm over all parameters (default: 2 x the "
                                     "learning rate)", "float", metavar="X", used_when=("optimizer", ("clipup",)))
    beta1: float = option(0.9, "Adam's decay rate of the gradient mean", "float", interval=UNIT, metavar="X",
                          used_when=("optimizer", ("adam",)))
    beta2: float = option(0.999, "Adam's decay rate of the squared gradient mean", "float", interval=UNIT,
                          metavar="X", used_when=("optimizer", ("adam",)))
    weight_decay: float = option(0.0, "L2: adds X * theta to the gradient", "float", interval=NON_NEGATIVE, metavar="X")
    lr_schedule: str = option("cosine", "learning rate per epoch: constant, lr * lr_decay**epoch, or annealed to 0 "
                              "along a cosine over the run's epochs", "choice",
                              choices=("constant", "exponential", "cosine"))
    lr_decay: float = option(1.0, "per-epoch factor of the exponential lr schedule", "float", interval=FACTOR,
                             metavar="X", used_when=("lr_schedule", ("exponential",)))
    sigma_schedule: str = option("constant", "sigma per epoch: constant, or sigma * sigma_decay**epoch", "choice",
                                 choices=("constant", "exponential"))
    sigma_decay: float = option(1.0, "per-epoch factor of the exponential sigma schedule", "float", interval=FACTOR,
                                metavar="X", used_when=("sigma_schedule", ("exponential",)))
    sigma_lr: float | None = option(None, "learning rate of the standard deviations (pgpe, snes; default: pgpe 0.1, "
                                    "snes (3 + ln P) / (5 sqrt P) for P parameters)", "float", metavar="X",
                                    used_when=("strategy", LEARNED_SIGMA))
    sigma_max_change: float = option(0.2, "pgpe: the most a standard deviation may change in one generation, as a "
                                     "fraction of itself", "float", interval=UNIT, metavar="X",
                                     used_when=("strategy", ("pgpe",)))
    # schedule of data and time
    batch_size: int = option(256, "training rows per generation", "int", metavar="N")
    shift: int = option(1, "augment the training images: each epoch moves every one by its own (dy, dx) pixels, "
                        "each drawn from -N..N from (seed, epoch), on its non-zero pixels (those moved off the image "
                        "are dropped); 0: off", "int", minimum=0, maximum=7, metavar="N", estimator=None)
    shuffle: bool = option(True, "a new order of the training rows each epoch, from (seed, epoch); off: in order",
                           "bool")
    epochs: int = option(60, "passes over the training data (and the length of a cosine lr schedule)", "int",
                         metavar="N", resume=True)
    max_seconds: float | None = option(600.0, "stop cleanly after this many seconds of training; results are written",
                                       "float", metavar="S", resume=True, optional=True)
    fit_budget: bool = option(True, "plan no more epochs than --max-seconds holds: time a few generations before "
                              "training and lower epochs to fit (the run's config.toml holds the epochs planned)",
                              "bool", estimator=None)
    eval_every_seconds: float = option(30.0, "seconds between test evaluations (after those at 1, 2, 4, 8 and 16 s)",
                                       "float", metavar="S", estimator=None)
    seed: int = option(0, "the run's seed: initial weights, noise and batch order follow from it", "int", minimum=0,
                       maximum=2**64 - 1, metavar="N", estimator="random_state")
    # execution
    backend: str = option("numba", "the Numba kernels, the plain NumPy reference, or Ray workers", "choice",
                          choices=("numba", "numpy", "ray"))
    threads: int | None = option(None, "Numba threads (default: all cores; with --backend ray: per worker)", "int",
                                 metavar="N", estimator="n_threads", resume=True,
                                 used_when=("backend", ("numba", "ray")))
    address: str | None = option(None, "Ray cluster address (with --backend ray; default: a local Ray)", "text",
                                 metavar="ADDR", resume=True, used_when=("backend", ("ray",)))
    workers: int = option(2, "Ray workers (with --backend ray)", "int", metavar="N", resume=True,
                          used_when=("backend", ("ray",)))

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
        if self.activation != "relu" and not self.hidden:
            raise ConfigError(f"activation {self.activation} acts on hidden layers, and this network has none; "
                              "give --hidden sizes, or --activation relu")
        if self.population < 2:
            raise ConfigError(f"population must be at least 2 to estimate a gradient, got {self.population}")
        if self.fit_budget and self.max_seconds is None:
            raise ConfigError("fit_budget plans the epochs that --max-seconds holds, but max_seconds is not set; "
                              "give --max-seconds S, or drop --fit-budget")
        if self.learns_sigma:
            _check_learned_sigma(self)
        if self.sigma_schedule == "exponential":
            _check_sigma_schedule(self.sigma, self.sigma_decay, self.epochs)
        return self

    @property
    def learns_sigma(self) -> bool:
        """The strategy learns a standard deviation per parameter (PGPE, SNES)."""
        return self.strategy in LEARNED_SIGMA

    @property
    def n_noise(self) -> int:
        """Distinct noise vectors per generation (half the population when antithetic)."""
        return self.population // 2 if self.antithetic else self.population

    def replace(self, **changes: Any) -> "Config":
        """A validated copy with ``changes`` applied (``None`` values are ignored)."""
        updates = {k: v for k, v in changes.items() if v is not None}
        unknown = set(updates) - set(OPTIONS)
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


#: Every option by name (the field's name, its TOML key), in the order of :class:`Config`.
OPTIONS: dict[str, Option] = {f.name: dataclasses.replace(f.metadata["option"], name=f.name) for f in fields(Config)}
#: The values of each ``choice`` option.
CHOICES: dict[str, tuple[str, ...]] = {name: o.choices for name, o in OPTIONS.items() if o.kind == "choice"}
#: Options ``fastes train --resume`` may change: none of them changes the trajectory
#: (``epochs`` only where no cosine schedule's length depends on it, see :mod:`fastes.io.run_folder`).
RESUME_OPTIONS: tuple[str, ...] = tuple(name for name, o in OPTIONS.items() if o.resume)
_FLOAT32_TINY = float(np.finfo(np.float32).tiny)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_field(name: str, value: Any) -> Any:
    """One configuration field's value, type- and range-checked as its :class:`Option`
    says, and normalised.

    This is the one check of every value, whether it came from a flag, a TOML file, a
    checkpoint, a model file or :class:`fastes.ESClassifier`.
    """
    if name not in OPTIONS:
        raise ConfigError(f"unknown config option {name!r}; choose one of: {', '.join(OPTIONS)}")
    return check_value(OPTIONS[name], value)


def check_value(opt: Option, value: Any) -> Any:
    """``value`` checked and normalised as ``opt`` declares (:func:`check_field` for a
    :class:`Config` field; the estimator's own parameters are declared as Options too)."""
    name = opt.name
    if value is None and opt.optional:
        return None
    if opt.kind == "choice":
        if not isinstance(value, str) or value not in opt.choices:
            raise ConfigError(f"unknown {name} {value!r}; choose one of: {', '.join(opt.choices)}")
        return value
    if opt.kind == "hidden":
        return parse_hidden(value)
    if opt.kind == "text":
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a path that is not UTF-8 cannot be written to config.toml
            raise ConfigError(f"{name} {value!r} is not UTF-8 text; rename it or give another path") from None
        return value
    if opt.kind == "bool":
        if not isinstance(value, (bool, np.bool_)):
            raise ConfigError(f"{name} must be true or false (unquoted), got {value!r}")
        return bool(value)
    if opt.kind == "int":
        return _check_int(name, value, opt.minimum, opt.maximum)
    value = _check_float(name, value, opt.interval)
    if opt.float32 and not _FLOAT32_TINY <= value <= _FLOAT32_MAX:
        with np.errstate(all="ignore"):  # the cast overflows by design: it shows what float32 makes of it
            as_float32 = float(np.float32(value))
        raise ConfigError(
            f"{name} {value:g} is outside float32's normal range [{_FLOAT32_TINY:.3g}, {_FLOAT32_MAX:.3g}] "
            f"(training computes in float32, where it would be {as_float32:g}); choose a value in that range"
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


def _check_float(name: str, value: Any, interval: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value}")
    low, high = (float(end) for end in interval[1:-1].split(", "))
    above = low < value if interval[0] == "(" else low <= value
    below = value < high if interval[-1] == ")" else value <= high
    if not (above and below):
        if high == math.inf:
            raise ConfigError(f"{name} must be {'positive' if interval[0] == '(' else 'non-negative'}, got {value}")
        raise ConfigError(f"{name} must be in {interval}, got {value}")
    return value


def _check_learned_sigma(config: "Config") -> None:
    """PGPE and SNES perturb every parameter by its own standard deviation, which they learn."""
    flag = f"--strategy {config.strategy}"
    if config.perturbation != "full":
        raise ConfigError(
            f"{flag} learns a standard deviation per parameter, which needs full-rank noise (a low-rank perturbation "
            "scaled parameter by parameter is no longer low-rank); use --perturbation full, or --strategy openai-es"
        )
    if config.sigma_schedule != "constant":
        raise ConfigError(
            f"{flag} learns its standard deviations, so --sigma-schedule {config.sigma_schedule} has nothing to "
            "schedule (it applies to openai-es); use --sigma-schedule constant"
        )


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
        parts = [p.strip() for p in value.split(",")] if value.strip() else []
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
        if isinstance(size, (bool, np.bool_)) or not isinstance(size, numbers.Integral) or not 1 <= size <= MAX_WIDTH:
            raise ConfigError(f"hidden sizes must be integers from 1 to {MAX_WIDTH}, got {list(sizes)!r}")
    return tuple(int(size) for size in sizes)


#: A population sized to its network (``ESClassifier(population=None)``, the ``digits`` preset):
#: one member per this many parameters ...
PARAMETERS_PER_MEMBER = 10
#: ... and at least, at most, this many (more members than this make slow generations).
MIN_POPULATION, MAX_POPULATION = 16, 1024


def sized_population(n_params: int) -> int:
    """One member per :data:`PARAMETERS_PER_MEMBER` of ``n_params`` parameters, rounded up to
    an even number (antithetic pairs), from :data:`MIN_POPULATION` to :data:`MAX_POPULATION`:
    the gradient estimate spreads its members over every parameter."""
    members = 2 * math.ceil(n_params / PARAMETERS_PER_MEMBER / 2)
    return min(MAX_POPULATION, max(MIN_POPULATION, members))


#: The presets that train on the pixels as they are, as every run did before the default
#: preset took principal coordinates and moved images (issue 23)
_PIXELS: dict[str, Any] = dict(pca=0, shift=0)

#: What the ``pgpe`` and ``snes`` presets change: PGPE and SNES learn a standard deviation per
#: parameter, which needs full-rank noise, so their populations are smaller than the low-rank 4096.
_LEARNED_SIGMA_MNIST: dict[str, Any] = dict(perturbation="full", population=512, epochs=100, **_PIXELS)

#: Named starting points, each as its differences from :class:`Config`'s defaults.
PRESETS: dict[str, dict[str, Any]] = {
    # what a bare ``fastes train`` runs: the images' first 100 principal coordinates, each epoch's
    # images moved by up to a pixel, low-rank antithetic noise, population 4096, Adam on a cosine
    # schedule, as many epochs as the 10-minute budget holds on the machine at hand (at most 60)
    "default": {},
    # the original Julia program: its network, initial weights, noise, loss, advantages and plain SGD,
    # batches in order, 100 epochs
    "seed": dict(hidden=(16, 16), init="normal", population=8, sigma=0.001, antithetic=False, shaping="zscore",
                 perturbation="full", loss="mse", optimizer="sgd", lr=0.001, lr_schedule="constant", batch_size=64,
                 shuffle=False, epochs=100, max_seconds=None, fit_budget=False, **_PIXELS),
    # EvoTorch's and EvoJAX's PGPE: symmetric sampling, centred ranks, ClipUp with lr = max_speed / 2
    # (the ClipUp paper's rule); momentum, sigma_lr and the 20% limit on sigma steps are the options' defaults
    "pgpe": dict(**_LEARNED_SIGMA_MNIST, strategy="pgpe", sigma=0.02, optimizer="clipup", lr=0.2),
    # SNES's natural-gradient update (SGD on sigma * sum_m w_m u_m) with NES's utilities and its own
    # sigma learning rate (sigma_lr left unset)
    "snes": dict(**_LEARNED_SIGMA_MNIST, strategy="snes", shaping="nes", optimizer="sgd", lr=2.0),
    # binary neurons (sign: -1 or +1), which backpropagation cannot train without a surrogate
    # gradient: the default run's ES, low-rank noise and budget on them, on the pixels
    "binary": dict(activation="sign", **_PIXELS),
    # seconds on scikit-learn's 8x8 digits
    "quick": dict(dataset="digits", hidden=(32,), population=128, sigma=0.02, perturbation="full", lr=0.03,
                  lr_schedule="constant", batch_size=64, epochs=10, max_seconds=None, fit_budget=False, **_PIXELS),
    # scikit-learn's 8x8 digits, sized as :class:`fastes.ESClassifier` sizes a run (the population to the
    # 64-64-10 network, generations enough for a small set): what a run on the digits starts from when it
    # names no preset
    "digits": dict(dataset="digits", hidden=(64,), population=sized_population(64 * 64 + 64 + 64 * 10 + 10),
                   sigma=0.1, lr=0.03, batch_size=64, epochs=60, max_seconds=None, fit_budget=False, **_PIXELS),
    # small tabular problems: what :class:`fastes.ESClassifier` starts from (which sizes the population
    # and epochs to the data it is given; these are about its choice on the digits)
    "tabular": dict(hidden=(32,), population=256, sigma=0.1, lr=0.02, lr_schedule="constant", batch_size=64,
                    epochs=10, max_seconds=None, fit_budget=False, **_PIXELS),
}


#: Datasets with a preset of their own (named after them), where a run on them starts when it
#: names no preset: the ``default`` preset's population and budget are sized for MNIST.
DATASET_PRESETS = ("digits",)


def absolute_data_dir(config: Config) -> Config:
    """``config`` with its data folder as an absolute path, so that the run it records can be
    evaluated, resumed and rerun from any folder."""
    if config.data_dir is None or Path(config.data_dir).is_absolute():
        return config
    return config.replace(data_dir=str(Path(config.data_dir).absolute()))


def check_used(config: Config, given) -> None:
    """Refuse an option of ``given`` (names typed on the command line) that ``config`` does
    not use, naming what it needs (a config.toml lists every option and is not checked)."""
    for name in given:
        opt = OPTIONS[name]
        if not opt.used_when:
            continue
        field, values = opt.used_when
        value, other = getattr(config, field), OPTIONS[field]
        if value in values:
            continue
        if values == (None,):
            raise ConfigError(f"{opt.flag} is not used with {other.flag} (this run reads {other.flag} {value}); "
                              f"drop one of them")
        shown = " or ".join(str(v) for v in values)
        raise ConfigError(f"{opt.flag} is used only with {other.flag} {shown}, and this run has {other.flag} {value}; "
                          f"drop {opt.flag}, or add {other.flag} {values[0]}")


def preset(name: str) -> Config:
    """The named preset as a validated :class:`Config`."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return Config(**PRESETS[name])


#: Largest config file read (a resolved config.toml is about 1 KiB).
MAX_CONFIG_BYTES = 1 << 20


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into a dict of field values (checked by :func:`resolve`)."""
    from .io.paths import read_bytes

    path = Path(path)
    raw = read_bytes(path, "config file", ConfigError, MAX_CONFIG_BYTES)
    try:
        data = tomllib.loads(raw.decode("utf-8-sig"))  # a byte-order mark, as some editors write, is no error
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}); give a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(OPTIONS) - {"preset"})
    if unknown:
        raise ConfigError(f"config file {path}: unknown option(s) {', '.join(unknown)}")
    return data


def resolve(preset_name: str | None = None, file: str | Path | None = None, **overrides: Any) -> Config:
    """Preset, then config file, then explicit overrides (``None`` means not given). With no
    preset named (by ``preset_name`` or the file), a run on a dataset of :data:`DATASET_PRESETS`
    starts from that dataset's preset, any other from ``default``."""
    file_values = load_toml(file) if file is not None else {}
    from_file = file_values.pop("preset", None)
    name = preset_name if preset_name is not None else from_file
    if name is None:  # none named: the run's dataset's own preset where it has one
        dataset = overrides.get("dataset") or file_values.get("dataset")
        name = dataset if dataset in DATASET_PRESETS else "default"
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
