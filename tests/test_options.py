"""Options declared once (issue 16): the flags, TOML keys, value checks (and the estimator
parameters and the README's table) all come from the :class:`fastes.config.Config` fields'
declarations; and the defects where hand-written copies had drifted apart."""

import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from sklearn.datasets import load_digits

from fastes import ESClassifier
from fastes.cli import build_parser, main
from fastes.config import OPTIONS, RESUME_OPTIONS, load_toml, preset, resolve
from fastes.estimator import PARAMETERS

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(hidden=(16,), population=32, epochs=3, batch_size=64, lr=0.03, sigma=0.05, random_state=0)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X / 16, y


def _same_model(a: ESClassifier, b: ESClassifier) -> bool:
    return all(np.array_equal(p, q) for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_))


# --------------------------------------------------------------------------- one declaration


def test_every_option_is_a_flag_and_a_toml_key(tmp_path):
    config = preset("default").replace(data_dir="elsewhere", threads=1, address="head:6379", seed=7, lr_decay=0.5)
    argv = ["train"]
    for name, opt in OPTIONS.items():
        value = getattr(config, name)
        if opt.kind == "bool":
            argv.append(opt.flag if value else f"--no-{opt.flag[2:]}")
        else:
            argv += [opt.flag, ",".join(map(str, value)) if opt.kind == "hidden" else str(value)]
    args = build_parser().parse_args(argv)
    assert resolve("seed", None, **{name: getattr(args, name) for name in OPTIONS}) == config
    path = tmp_path / "config.toml"
    path.write_text(config.to_toml())
    assert set(load_toml(path)) == set(OPTIONS) | {"preset"}
    help_text = build_parser().commands["train"].format_help()
    assert all(opt.flag in help_text for opt in OPTIONS.values())
    args = build_parser().parse_args(["train"])
    assert all(getattr(args, name) is None for name in OPTIONS)  # not given: the preset decides


def test_estimator_parameters_are_the_exposed_options():
    exposed = {opt.parameter for opt in OPTIONS.values() if opt.parameter}
    assert set(ESClassifier().get_params()) == exposed == set(PARAMETERS)
    assert {"lr_decay", "sigma_decay", "sigma_schedule", "momentum", "beta1", "beta2"} <= exposed
    with pytest.raises(TypeError, match="colour"):
        ESClassifier(colour="red")


def _other_value(name: str, value):
    """A valid value of option ``name`` other than ``value``."""
    opt = OPTIONS[name]
    if opt.kind == "choice":
        return next(c for c in opt.choices if c != value)
    if opt.kind == "bool":
        return not value
    if opt.kind == "int":
        return 1 if value is None else value + 1
    if opt.kind == "hidden":
        return (3,)
    if opt.kind == "text":
        return "elsewhere"
    return 1.0 if value is None else value / 2 if value > 0 else 0.5


def test_every_estimator_parameter_reaches_the_config():
    defaults = ESClassifier().get_params()
    changed = {param: _other_value(name, defaults[param]) for param, name in PARAMETERS.items() if name != "seed"}
    config = ESClassifier(**changed)._config(seed=7)
    for param, value in changed.items():
        assert getattr(config, PARAMETERS[param]) == value, param
    assert config.seed == 7


def test_resume_options_are_declared():
    assert RESUME_OPTIONS == tuple(name for name, opt in OPTIONS.items() if opt.resume)
    assert set(RESUME_OPTIONS) == {"epochs", "max_seconds", "threads", "address", "workers"}


# --------------------------------------------------------------------------- defect 1: Python 3.10


def test_python_3_10_reads_toml_with_tomli(tmp_path):
    """On Python 3.10 (no tomllib) config.py must import tomli, as pyproject.toml promises."""
    path = tmp_path / "run.toml"
    path.write_text("epochs = 3\n")
    code = f"""
import sys, types, tomllib as real
import numpy
sys.modules["tomllib"] = None  # Python 3.10 has no tomllib ...
tomli = types.ModuleType("tomli")  # ... and pyproject.toml installs tomli there
tomli.loads, tomli.TOMLDecodeError = real.loads, real.TOMLDecodeError
sys.modules["tomli"] = tomli
sys.version_info = (3, 10, 13, "final", 0)
import fastes.config as config
assert config.tomllib is tomli, config.tomllib
assert config.load_toml({str(path)!r}) == {{"epochs": 3}}
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr


def test_pyproject_installs_tomli_where_there_is_no_tomllib():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.10"' in text and "tomli>=2; python_version < '3.11'" in text


# --------------------------------------------------------------------------- defect 2: estimator options


def test_estimator_exponential_schedule_decays(digits):
    X, y = digits
    constant = ESClassifier(**TINY).fit(X, y)
    decayed = ESClassifier(**TINY, lr_schedule="exponential", lr_decay=0.5).fit(X, y)
    assert not _same_model(constant, decayed)


# --------------------------------------------------------------------------- defect 3: partial_fit schedules


@pytest.mark.parametrize("schedule", [dict(lr_schedule="cosine"),
                                      dict(lr_schedule="exponential", lr_decay=0.5,
                                           sigma_schedule="exponential", sigma_decay=0.5)])
def test_epochs_partial_fits_train_the_model_fit_trains(digits, schedule):
    X, y = digits
    fitted = ESClassifier(**TINY, **schedule).fit(X, y)
    stepped = ESClassifier(**TINY, **schedule)
    for _ in range(TINY["epochs"]):
        stepped.partial_fit(X, y, classes=np.arange(10))
    assert stepped.n_generations_ == fitted.n_generations_ == 3 * 29  # ceil(1797 / 64) batches per pass
    assert _same_model(stepped, fitted)


def test_partial_fit_ends_with_the_cosine_schedule(digits):
    X, y = digits
    clf = ESClassifier(**TINY, lr_schedule="cosine")
    clf.partial_fit(X, y, classes=np.arange(10), n_generations=10**6)
    assert clf.n_generations_ == 3 * 29  # it stops where the schedule ends
    with pytest.raises(ValueError, match="cosine.*epochs=3.*call fit"):
        clf.partial_fit(X, y)
    clf.set_params(lr_schedule="constant").partial_fit(X, y)  # open-ended schedules go on
    assert clf.n_generations_ == 4 * 29


# --------------------------------------------------------------------------- defect 4: --resume --epochs


QUICK = ["--preset", "quick", "--quiet", "--epochs", "1"]


def test_resume_extends_a_constant_schedule_as_if_planned(tmp_path):
    assert main(["train", *QUICK, "--out", str(tmp_path / "planned"), "--epochs", "2"]) == 0
    assert main(["train", *QUICK, "--out", str(tmp_path / "extended")]) == 0
    assert main(["train", "--resume", str(tmp_path / "extended"), "--epochs", "2", "--quiet"]) == 0
    with np.load(tmp_path / "planned" / "model.npz") as a, np.load(tmp_path / "extended" / "model.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in ("W0", "b0", "W1", "b1"))


def test_resume_refuses_new_epochs_for_a_cosine_schedule(tmp_path, capsys, run_cli, tree_snapshot):
    out = tmp_path / "cosine"
    assert main(["train", *QUICK, "--lr-schedule", "cosine", "--out", str(out)]) == 0
    before = tree_snapshot(out)
    code, _, err, _ = run_cli(["train", "--resume", out, "--epochs", "2"])
    assert code == 2 and err.count("\n") == 1, err
    assert "--epochs 2 would change every later learning rate" in err and "cosine" in err
    assert tree_snapshot(out) == before
    assert run_cli(["train", "--resume", out, "--epochs", "1", "--quiet"])[0] == 0  # its own epochs: no change


# --------------------------------------------------------------------------- defect 5: n_threads


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads to see a change")
def test_n_threads_applies_to_the_call_only(digits):
    X, y = digits
    try:
        numba.set_num_threads(2)
        ESClassifier(**{**TINY, "epochs": 1}, n_threads=1).fit(X, y)
        assert numba.get_num_threads() == 2
        numba.set_num_threads(1)
        clf = ESClassifier(**{**TINY, "epochs": 1}, n_threads=None).partial_fit(X, y, classes=np.arange(10))
        assert numba.get_num_threads() == 1
        with pytest.raises(ValueError, match="threads=99"):
            clf.set_params(n_threads=99).partial_fit(X, y)
        assert numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


# --------------------------------------------------------------------------- defect 6: integer flags


@pytest.mark.parametrize("flag", [o.flag for o in OPTIONS.values() if o.kind == "int" and o.minimum == 1])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_non_positive_integer_flags_are_refused_naming_the_flag(flag, value, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["train", flag, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: " in err and f"must be >= 1, got {int(value)}" in err and err.count("\n") == 1


def test_seed_accepts_zero_and_refuses_negative(capsys):
    assert build_parser().parse_args(["train", "--seed", "0"]).seed == 0
    assert build_parser().parse_args(["train", "--seed", str(2**64 - 1)]).seed == 2**64 - 1
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--seed", "-1"])
    assert "argument --seed: seed must be >= 0, got -1" in capsys.readouterr().err


def test_a_bad_flag_value_is_refused_before_anything_is_read(tmp_path, capsys):
    """The value is checked as the flag is read, so --resume's folder is not even looked at."""
    with pytest.raises(SystemExit) as exc:
        main(["train", "--resume", str(tmp_path / "none"), "--threads", "0"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --threads: threads must be >= 1, got 0" in err and "does not exist" not in err
