"""Checkpoints and exact resume, config files, predict, and bad input from the CLI."""

import json
import os
import signal
import time
import zipfile

import numpy as np
import pytest

from fastes.cli.main import main
from fastes.io.data import load_dataset
from fastes.io.checkpoints import load_checkpoint

LONG = ["--preset", "quick", "--epochs", "150", "--quiet"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    assert main(["train", *LONG, "--out", str(out)]) == 0
    return out


def _wait_for(path, timeout=120):
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _kill_and_resume(fastes_process, args, out):
    """Start ``fastes train ARGS --out OUT``, SIGKILL it inside a later epoch, resume it to
    the end; returns the checkpoint's state as the kill left it."""
    proc = fastes_process("train", *args, "--out", out)
    _wait_for(out / "checkpoint.npz")
    time.sleep(0.7)  # somewhere inside a later epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state, _, _ = load_checkpoint(out / "checkpoint.npz")
    assert 0 < state.epoch < 150
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["epochs_done"] == 150
    return state


def test_sigkill_mid_run_then_resume_is_bit_identical(tmp_path, uninterrupted, fastes_process, model_bytes):
    out = tmp_path / "killed"
    _kill_and_resume(fastes_process, LONG, out)
    assert model_bytes(out) == model_bytes(uninterrupted)


@pytest.mark.parametrize("strategy", [["--strategy", "pgpe", "--optimizer", "clipup", "--lr", "0.05"],
                                      ["--strategy", "snes", "--shaping", "nes", "--optimizer", "sgd", "--lr", "1"]],
                         ids=["pgpe", "snes"])
def test_sigkill_then_resume_is_bit_identical_for_learned_sigmas(tmp_path, strategy, fastes_process, model_bytes):
    """The checkpoint carries the standard deviations (and ClipUp's velocity): a killed run
    resumes onto the uninterrupted run's trajectory."""
    args = [*LONG, *strategy]
    whole, out = tmp_path / "whole", tmp_path / "killed"
    assert main(["train", *args, "--out", str(whole)]) == 0
    killed = _kill_and_resume(fastes_process, args, out)
    assert killed.sigma is not None and killed.sigma.shape == killed.theta.shape
    assert model_bytes(out) == model_bytes(whole)
    final, _, _ = load_checkpoint(out / "checkpoint.npz")
    assert np.array_equal(final.sigma, load_checkpoint(whole / "checkpoint.npz")[0].sigma)


def test_ctrl_c_writes_results_exits_130_and_resumes(tmp_path, uninterrupted, fastes_process, model_bytes):
    out = tmp_path / "interrupted"
    proc = fastes_process("train", *LONG, "--out", out)
    _wait_for(out / "checkpoint.npz")
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err
    for name in ("summary.json", "metrics.csv", "model.npz", "checkpoint.npz"):
        assert (out / name).is_file()
    assert not json.loads((out / "summary.json").read_text())["finished"]
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert model_bytes(out) == model_bytes(uninterrupted)


def test_config_file_reproduces_a_run(tmp_path, uninterrupted, model_bytes):
    out = tmp_path / "again"
    assert main(["train", "--config", str(uninterrupted / "config.toml"), "--out", str(out), "--quiet"]) == 0
    assert model_bytes(out) == model_bytes(uninterrupted)


def test_config_file_with_flag_override(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('preset = "quick"\nepochs = 1\nhidden = [8]\n')
    out = tmp_path / "o"
    assert main(["train", "--config", str(cfg), "--hidden", "6", "--out", str(out), "--quiet"]) == 0
    assert "hidden = [6]" in (out / "config.toml").read_text()
    with np.load(out / "model.npz") as npz:
        assert npz["W0"].shape == (64, 6)


def test_predict_images(tmp_path, uninterrupted, capsys):
    from PIL import Image

    from fastes.cli.evaluate import predict_images

    ds = load_dataset("digits")
    paths = []
    for i in range(3):
        img = Image.fromarray((ds.x_test[i].reshape(8, 8) * 255).round().astype(np.uint8))
        paths.append(tmp_path / f"d{i}.png")
        img.save(paths[-1])
        Image.fromarray(255 - np.asarray(img)).save(tmp_path / f"inv{i}.png")
    results = predict_images(uninterrupted / "model.npz", [str(p) for p in paths])
    assert sum(r["label"] == y for r, y in zip(results, ds.y_test[:3])) >= 2
    assert all(abs(sum(r["probabilities"]) - 1) < 1e-5 for r in results)
    inverted = predict_images(uninterrupted / "model.npz", [str(tmp_path / f"inv{i}.png") for i in range(3)], invert=True)
    assert [r["label"] for r in inverted] == [r["label"] for r in results]
    assert main(["predict", str(uninterrupted / "model.npz"), *map(str, paths), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3


def _error_of(args, capsys):
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_existing_results_folder_refused_and_untouched(uninterrupted, capsys):
    before = {p.name: p.read_bytes() for p in uninterrupted.iterdir()}
    err = _error_of(["train", "--preset", "quick", "--out", str(uninterrupted)], capsys)
    assert "already holds a run" in err
    assert {p.name: p.read_bytes() for p in uninterrupted.iterdir()} == before


def test_unwritable_results_folder(tmp_path, capsys):
    if os.geteuid() == 0:
        target = "/proc/fastes-run"  # root can write anywhere else
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        target = str(locked / "run")
    err = _error_of(["train", "--preset", "quick", "--out", target], capsys)
    assert "results folder" in err


def test_corrupt_truncated_and_foreign_files(tmp_path, uninterrupted, capsys):
    model = (uninterrupted / "model.npz").read_bytes()
    (tmp_path / "trunc.npz").write_bytes(model[: len(model) // 2])
    assert "corrupt" in _error_of(["evaluate", str(tmp_path / "trunc.npz")], capsys)
    (tmp_path / "text.npz").write_text("not a zip")
    assert "corrupt" in _error_of(["evaluate", str(tmp_path / "text.npz")], capsys)
    np.savez(tmp_path / "foreign.npz", weights=np.zeros(3))
    assert "no W0" in _error_of(["evaluate", str(tmp_path / "foreign.npz")], capsys)
    np.savez(tmp_path / "chain.npz", W0=np.zeros((64, 5), np.float32), b0=np.zeros(5, np.float32),
             W1=np.zeros((4, 10), np.float32), b1=np.zeros(10, np.float32))
    assert "do not chain" in _error_of(["evaluate", str(tmp_path / "chain.npz")], capsys)
    # a checkpoint that is really a model file, and a truncated checkpoint
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.npz").write_bytes(model)
    assert "checkpoint" in _error_of(["train", "--resume", str(run)], capsys)
    ckpt = (uninterrupted / "checkpoint.npz").read_bytes()
    (run / "checkpoint.npz").write_bytes(ckpt[:100])
    assert "corrupt" in _error_of(["train", "--resume", str(run)], capsys)
    assert "does not exist" in _error_of(["train", "--resume", str(tmp_path / "none")], capsys)
    assert zipfile.is_zipfile(uninterrupted / "checkpoint.npz")


def test_divergence_stops_with_clear_message(tmp_path, capsys):
    out = tmp_path / "diverge"
    err = _error_of(["train", "--preset", "quick", "--optimizer", "sgd", "--lr", "1e30", "--sigma", "1e10",
                     "--epochs", "3", "--out", str(out)], capsys)
    assert "generation" in err and ("learning rate" in err or "sigma" in err)


def test_result_files_follow_the_umask(uninterrupted):
    mask = os.umask(0)
    os.umask(mask)
    for name in ("model.npz", "summary.json", "checkpoint.npz"):
        assert (uninterrupted / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_checkpoint_with_unreadable_config(tmp_path, uninterrupted, capsys):
    import json as _json

    with np.load(uninterrupted / "checkpoint.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = _json.loads(str(arrays["meta"]))
    meta["config"]["colour"] = "red"
    arrays["meta"] = np.array(_json.dumps(meta))
    run = tmp_path / "run"
    run.mkdir()
    np.savez(run / "checkpoint.npz", **arrays)
    assert "cannot read" in _error_of(["train", "--resume", str(run)], capsys)
