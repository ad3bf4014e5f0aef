"""Fuzzing the readers of user files: TOML configs, IDX data, model and checkpoint files,
images. Random, truncated and bit-flipped inputs must each load or raise fastes's own
error (a FastesError, which the CLI prints as one line), never anything else."""

import gzip
import io
import json
import math
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fastes.config import OPTIONS, PRESETS, Config, resolve
from fastes.io.data import IDX_FILES, load_idx_folder, parse_idx
from fastes.errors import FastesError
from fastes.cli.evaluate import load_image
from fastes.layout import ParamLayout
from fastes.io.checkpoints import load_checkpoint, load_model, save_checkpoint, save_model
from fastes.state import TrainState

# Derandomized: CI sees the same examples every run (a red CI must mean a change broke
# something). To explore, run with derandomize=False and a larger max_examples (1,500 random
# examples per target passed on 2026-11-25).
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def loads_or_refuses(load, *args, **kwargs):
    """Call ``load``; a FastesError is a refusal, anything else escaping is a bug."""
    try:
        return load(*args, **kwargs)
    except FastesError as exc:
        assert "\n" not in str(exc).strip(), str(exc)
        return None


@st.composite
def damaged(draw, valid: bytes):
    """``valid`` bytes truncated, with bytes overwritten, or replaced by random bytes."""
    kind = draw(st.sampled_from(["truncate", "flip", "random"]))
    if kind == "random":
        return draw(st.binary(max_size=2 * len(valid)))
    data = bytearray(valid)
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


# --------------------------------------------------------------------------- TOML


FIELDS = sorted(f for f in Config.__dataclass_fields__) + ["preset"]
scalars = (st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.booleans()
           | st.text(max_size=12) | st.sampled_from(["seed", "mnist", "adam", "lowrank", "16,16", "", "false"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=4)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    return "[" + ", ".join(toml_value(v) for v in value) + "]"


@FUZZ
@given(options=st.dictionaries(st.sampled_from(FIELDS), values, max_size=5))
def test_toml_values(tmp_path_factory, options):
    path = tmp_path_factory.mktemp("toml") / "run.toml"
    path.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in options.items()))
    config = loads_or_refuses(resolve, None, path)
    if config is not None:  # what was accepted writes back and reads back as itself
        path.write_text(config.to_toml())
        assert resolve(None, path) == config


@FUZZ
@given(raw=st.binary(max_size=400) | damaged(Config(**PRESETS["default"]).to_toml().encode()))
def test_toml_bytes(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("toml") / "run.toml"
    path.write_bytes(raw)
    loads_or_refuses(resolve, None, path)


# --------------------------------------------------------------------------- IDX


@pytest.fixture(scope="module")
def idx_source(tmp_path_factory, idx_folder):
    return idx_folder(tmp_path_factory.mktemp("idx") / "data", n_train=12, n_test=4, side=4)


@FUZZ
@given(data=st.data())
def test_idx_bytes(idx_source, data):
    valid = (idx_source / data.draw(st.sampled_from(sorted(IDX_FILES.values())))).read_bytes()
    loads_or_refuses(parse_idx, data.draw(damaged(valid)), "fuzz")


@FUZZ
@given(data=st.data())
def test_idx_folder(idx_source, tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("idx")
    for stem in IDX_FILES.values():
        shutil.copy(idx_source / stem, folder / stem)
    stem = data.draw(st.sampled_from(sorted(IDX_FILES.values())))
    raw = (folder / stem).read_bytes()
    if data.draw(st.booleans()):  # the same damage inside a gzip file, or to the gzip file itself
        (folder / stem).unlink()
        stem += ".gz"
        raw = gzip.compress(raw) if data.draw(st.booleans()) else gzip.compress(data.draw(damaged(raw)))
    (folder / stem).write_bytes(data.draw(damaged(raw)))
    loads_or_refuses(load_idx_folder, folder)


# --------------------------------------------------------------------------- model and checkpoint files


@pytest.fixture(scope="module")
def npz_sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("npz")
    layout = ParamLayout((16, 5, 3))
    theta = layout.init("he", 0.1, np.random.default_rng(0))
    config = Config(**{**PRESETS["seed"], "hidden": (5,), "optimizer": "adam", "epochs": 3}).to_dict()
    save_model(folder / "model.npz", layout, theta, config)
    state = TrainState(theta=theta, generation=7, epoch=1, batch=2, loss_sum=3.5, correct=4, seen=9, elapsed=1.5,
                       history=[{"epoch": 1.0, "generation": 5, "wall_seconds": 1.0, "train_loss": 0.5,
                                 "train_accuracy": 0.5, "test_loss": float("nan"), "test_accuracy": 0.5}],
                       optimizer={"t": np.array(7), "m": np.zeros(layout.size), "v": np.ones(layout.size)})
    save_checkpoint(folder / "checkpoint.npz", state, config, layout)
    learned = TrainState(theta=theta, generation=7, optimizer={"t": np.array(7), "v": np.ones(layout.size)},
                         sigma=np.full(layout.size, 0.02, dtype=np.float32))  # PGPE's standard deviations
    save_checkpoint(folder / "checkpoint_pgpe.npz", learned,
                    Config(**{**PRESETS["seed"], "hidden": (5,), "strategy": "pgpe", "optimizer": "clipup", "epochs": 3}).to_dict(), layout)
    with np.load(folder / "model.npz") as npz:
        np.savez_compressed(folder / "compressed.npz", **{k: npz[k] for k in npz.files})
    return {name: (folder / f"{name}.npz").read_bytes()
            for name in ("model", "checkpoint", "checkpoint_pgpe", "compressed")}


@FUZZ
@given(data=st.data())
def test_model_and_checkpoint_files(npz_sources, tmp_path_factory, data):
    name = data.draw(st.sampled_from(sorted(npz_sources)))
    path = tmp_path_factory.mktemp("npz") / "file.npz"
    path.write_bytes(data.draw(damaged(npz_sources[name])))
    loads_or_refuses(load_checkpoint if name.startswith("checkpoint") else load_model, path)


def test_intact_files_load(npz_sources, tmp_path):
    for name, raw in npz_sources.items():
        (tmp_path / f"{name}.npz").write_bytes(raw)
    assert load_model(tmp_path / "model.npz")[0].dims == (16, 5, 3)
    assert load_model(tmp_path / "compressed.npz")[0].dims == (16, 5, 3)
    state, config, dims = load_checkpoint(tmp_path / "checkpoint.npz")
    assert state.generation == 7 and config["optimizer"] == "adam" and dims == (16, 5, 3) and state.sigma is None
    state, config, _ = load_checkpoint(tmp_path / "checkpoint_pgpe.npz")
    assert config["strategy"] == "pgpe" and state.sigma.dtype == np.float32 and (state.sigma == 0.02).all()
    assert (state.optimizer["v"] == 1).all()


# --------------------------------------------------------------------------- images

MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16", "F", "CMYK"]


@st.composite
def image_files(draw):
    mode = draw(st.sampled_from(MODES))
    size = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    bands = len(Image.new(mode, (1, 1)).getbands())
    depth = {"I": 4, "F": 4, "I;16": 2}.get(mode, 1)
    pixels = draw(st.binary(min_size=size[0] * size[1] * bands * depth, max_size=size[0] * size[1] * bands * depth))
    img = Image.frombytes(mode, size, pixels)
    if mode == "P" and draw(st.booleans()):
        img.info["transparency"] = draw(st.integers(0, 255))
    fmt = draw(st.sampled_from(["PNG", "GIF", "BMP", "TIFF"] + (["JPEG"] if mode in ("L", "RGB", "CMYK") else [])))
    buf = io.BytesIO()
    try:
        img.save(buf, format=fmt)
    except (OSError, ValueError, KeyError):  # this format cannot hold this mode
        img.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


@FUZZ
@given(data=st.data())
def test_image_files(tmp_path_factory, data):
    raw = data.draw(image_files())
    if data.draw(st.booleans()):
        raw = data.draw(damaged(raw))
    path = tmp_path_factory.mktemp("img") / "digit.img"
    path.write_bytes(raw)
    pixels = loads_or_refuses(load_image, path, 8, invert=data.draw(st.booleans()))
    if pixels is not None:
        assert pixels.shape == (64,) and pixels.dtype == np.float32 and 0 <= pixels.min() <= pixels.max() <= 1


def _flag_value() -> st.SearchStrategy[str]:
    """What a user might type after a flag: numbers of every size and form, and text."""
    numbers = st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
                        st.sampled_from(["0", "1", "2", "-1", "1e39", "1e-50", "0x10", "1_000", "16,,16", "16,", ",",
                                         " ", "", "nan", "inf", "true", "none"]))
    return st.one_of(numbers.map(str), st.text(max_size=12))


@FUZZ
@given(options=st.dictionaries(st.sampled_from(sorted(OPTIONS)), _flag_value(), max_size=4))
def test_command_line_options(options, run_cli):
    """Random values for every option through the real parser: each command either reaches
    training with a valid configuration or exits 2 with one line and no warning."""
    reached = []
    stub = lambda config, *a, **k: reached.append(config) or ({"final": {}}, 0)  # noqa: E731
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("fastes.io.run_folder.train_to_folder", stub)
        _check_command_line(options, run_cli, reached)


def _check_command_line(options, run_cli, reached):
    argv = ["train", "--preset", "quick", "--quiet", "--out", "unused"]
    for name, value in options.items():
        flag = OPTIONS[name].flag
        argv += [flag] if OPTIONS[name].kind == "bool" else [f"{flag}={value}"]
    code, _, err, warned = run_cli(argv)
    assert not warned, [str(w.message) for w in warned]
    assert "Traceback" not in err
    if code == 2:
        assert err.startswith("fastes: error: ") and err.count("\n") == 1, err
    else:
        assert reached and isinstance(reached[0], Config), (code, err)
