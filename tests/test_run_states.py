"""A run folder is always in one of three states, whatever failed: untouched (byte for byte
as before the command), resumable (``fastes train --resume`` accepts it) or complete
(every result file, summary.json saying finished, and the checkpoint they came from)."""

import json
import os
import shutil
import signal

import numpy as np
import pytest

from fastes.cli.main import main
from fastes.io import run_folder as runs
from fastes.io.run_folder import RESULT_FILES
from fastes.io.checkpoints import load_checkpoint

SEED = ["--preset", "seed", "--quiet"]


@pytest.fixture
def folder_state(tree_snapshot):
    return lambda folder, before: _folder_state(folder, before, tree_snapshot)


def _folder_state(folder, before, snapshot) -> str:
    if snapshot(folder) == before:
        return "untouched"
    _, state = runs.resume_run(folder, {})  # what --resume accepts (raises otherwise)
    summary = folder / "summary.json"
    if summary.exists() and json.loads(summary.read_text())["finished"]:
        missing = [n for n in RESULT_FILES if not (folder / n).is_file()]
        assert not missing, f"summary.json says finished but {missing} are missing"
        assert json.loads(summary.read_text())["generations"] == state.generation
        return "complete"
    return "resumable"


@pytest.fixture(scope="module")
def data(tmp_path_factory, idx_folder):
    return idx_folder(tmp_path_factory.mktemp("data") / "tiny")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data, run_cli):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert run_cli(["train", *SEED, "--data-dir", data, "--epochs", 2, "--out", out])[0] == 0
    return out


@pytest.fixture
def complete_run(tmp_path, finished):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def _interrupt_once(monkeypatch, target: str):
    """Make ``target`` (module.function) send this process SIGINT the first time it runs."""
    module, name = target.rsplit(".", 1)
    original = getattr(__import__(module, fromlist=[name]), name)
    sent = []

    def wrapper(*args, **kwargs):
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(target, wrapper)


def test_refused_before_anything_is_written(tmp_path, data, complete_run, run_cli, folder_state, tree_snapshot):
    new = tmp_path / "new"
    for args, folder in [
        (["train", *SEED, "--data-dir", data, "--sigma", "-1", "--out", new], new),
        (["train", *SEED, "--data-dir", data, "--threads", "999", "--out", new], new),  # refused by the backend
        (["train", *SEED, "--data-dir", data, "--sigma", "1e-50", "--overwrite", "--out", complete_run], complete_run),
        (["train", "--resume", complete_run, "--epochs", "1"], complete_run),
        (["train", "--resume", complete_run, "--lr", "0.5"], complete_run),
    ]:
        before = tree_snapshot(folder)
        assert run_cli(args)[0] == 2
        assert folder_state(folder, before) == "untouched", args


def test_divergence_before_the_first_checkpoint_leaves_the_folder_untouched(tmp_path, data, complete_run, run_cli,
                                                                            folder_state, tree_snapshot):
    new = tmp_path / "new"
    code, _, err, _ = run_cli(["train", *SEED, "--data-dir", data, "--init-std", "1e30", "--out", new])
    assert code == 2 and "--init-std" in err and "nothing was written" in err
    assert folder_state(new, None) == "untouched"
    assert run_cli(["train", *SEED, "--data-dir", data, "--epochs", 1, "--out", new])[0] == 0  # --out accepts it
    assert folder_state(new, None) == "complete"
    # --overwrite over a finished run that diverges at once keeps the finished run
    before = tree_snapshot(complete_run)
    code, _, err, _ = run_cli(["train", *SEED, "--data-dir", data, "--init-std", "1e30", "--overwrite",
                               "--out", complete_run])
    assert code == 2 and folder_state(complete_run, before) == "untouched"


def test_divergence_after_a_checkpoint_leaves_a_resumable_run(tmp_path, data, complete_run, run_cli, folder_state, tree_snapshot):
    new = tmp_path / "new"
    code, _, err, _ = run_cli(["train", *SEED, "--data-dir", data, "--lr", "1e30", "--out", new])
    assert code == 2 and "learning rate" in err and "--overwrite" in err
    assert folder_state(new, None) == "resumable"
    # --overwrite over a finished run: none of the old run's results stay beside the new config
    before = tree_snapshot(complete_run)
    code, _, err, _ = run_cli(["train", *SEED, "--data-dir", data, "--weight-decay", "1e30", "--overwrite",
                               "--out", complete_run])
    assert code == 2 and "--weight-decay" in err
    assert folder_state(complete_run, before) == "resumable"
    assert sorted(p.name for p in complete_run.iterdir()) == ["checkpoint.npz", "config.toml", "metrics.csv"]
    assert "weight_decay = 1e+30" in (complete_run / "config.toml").read_text()
    from fastes.io.report import read_metrics_csv  # the new run's rows so far, none of the old run's

    _, state = runs.resume_run(complete_run, {})
    assert [r["generation"] for r in read_metrics_csv(complete_run / "metrics.csv")] == [
        r["generation"] for r in state.history]


def test_ctrl_c_while_results_are_written_leaves_a_resumable_run(tmp_path, data, monkeypatch, run_cli, folder_state):
    out = tmp_path / "run"
    _interrupt_once(monkeypatch, "fastes.io.report.plot_confusion")
    code, _, err, _ = run_cli(["train", *SEED, "--data-dir", data, "--epochs", 2, "--out", out])
    assert code == 130 and err.count("\n") == 1 and f"fastes train --resume {out}" in err, err
    assert not (out / "summary.json").exists() and not (out / "confusion_matrix.png").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "a temporary file was left behind"
    assert folder_state(out, None) == "resumable"
    assert run_cli(["train", "--resume", out, "--quiet"])[0] == 0
    assert folder_state(out, None) == "complete"


def test_ctrl_c_during_training_then_resume_completes(tmp_path, data, monkeypatch, run_cli, folder_state):
    out = tmp_path / "run"
    _interrupt_once(monkeypatch, "fastes.io.run_folder.save_checkpoint")
    code, _, err, _ = run_cli(["train", *SEED, "--data-dir", data, "--epochs", 3, "--out", out])
    assert code == 130 and "--resume" in err
    assert folder_state(out, None) == "resumable"
    assert not json.loads((out / "summary.json").read_text())["finished"]
    monkeypatch.undo()
    assert run_cli(["train", "--resume", out, "--quiet"])[0] == 0
    assert folder_state(out, None) == "complete"


def test_ctrl_c_before_training_leaves_nothing(tmp_path, data, monkeypatch, run_cli, folder_state):
    out = tmp_path / "run"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("fastes.io.run_folder.load_dataset", interrupted)
    code, _, err, _ = run_cli(["train", *SEED, "--data-dir", data, "--out", out])
    assert code == 130 and err == "fastes: interrupted\n"
    assert folder_state(out, None) == "untouched"


def test_time_budget_ends_complete_and_resumable(tmp_path, data, run_cli, folder_state):
    out = tmp_path / "run"
    assert run_cli(["train", *SEED, "--data-dir", data, "--epochs", 5, "--max-seconds", "1e-9", "--out", out])[0] == 0
    assert folder_state(out, None) == "complete"
    state, _, _ = load_checkpoint(out / "checkpoint.npz")
    assert state.generation == json.loads((out / "summary.json").read_text())["generations"]
    assert run_cli(["train", "--resume", out, "--max-seconds", "600", "--quiet"])[0] == 0
    assert json.loads((out / "summary.json").read_text())["epochs_done"] == 5


# --------------------------------------------------------------------------- --resume --epochs


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


# --------------------------------------------------------------------------- metrics.csv while training


def test_metrics_csv_grows_while_training_survives_sigkill_and_resume_continues_it(tmp_path, fastes_process):
    """A running folder's metrics.csv has its rows so far (tail -f, fastes plot); SIGKILL
    leaves them and a resumable folder; --resume continues the file with no duplicate row."""
    import time

    from fastes.io.report import read_metrics_csv

    out = tmp_path / "run"
    proc = fastes_process("train", "--preset", "quick", "--quiet", "--epochs", "2000", "--eval-every-seconds", "0.5",
                          "--out", out)
    try:
        deadline, rows = time.monotonic() + 240, []
        while time.monotonic() < deadline and len(rows) < 6:
            time.sleep(0.5)
            if (out / "metrics.csv").exists():
                rows = read_metrics_csv(out / "metrics.csv")
        assert len(rows) >= 6, "metrics.csv did not grow while the run trained"
        assert not (out / "summary.json").exists()
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    killed = read_metrics_csv(out / "metrics.csv")
    assert len(killed) >= len(rows)
    config, state = runs.resume_run(out, {})  # the killed folder is resumable
    assert [r["generation"] for r in state.history] == [r["generation"] for r in killed[: len(state.history)]]
    assert main(["train", "--resume", str(out), "--max-seconds", str(state.elapsed + 2), "--quiet"]) == 0
    resumed = read_metrics_csv(out / "metrics.csv")
    generations = [r["generation"] for r in resumed]
    assert generations == sorted(set(generations)) and len(resumed) > len(state.history)
    assert resumed[: len(state.history)] == killed[: len(state.history)]


# --------------------------------------------------------------------------- recorded paths


def test_a_relative_data_dir_is_recorded_so_the_run_works_from_anywhere(tmp_path, data, run_cli, monkeypatch):
    """A run trained with a relative --data-dir is evaluated, resumed and rerun from another
    folder; when its data move, the message says how to point to them, and --resume takes
    the new --data-dir."""
    import shutil

    shutil.copytree(data, tmp_path / "here" / "tiny")
    monkeypatch.chdir(tmp_path / "here")
    assert run_cli(["train", *SEED, "--data-dir", "tiny", "--epochs", 1, "--max-seconds", "0.05", "--out", "run"])[0] == 0
    assert "data_dir = " + repr(str(tmp_path / "here" / "tiny")).replace("'", '"') in (tmp_path / "here" / "run" / "config.toml").read_text()
    monkeypatch.chdir(tmp_path)
    assert run_cli(["evaluate", "here/run/model.npz", "--json"])[0] == 0
    assert run_cli(["train", "--config", "here/run/config.toml", "--quiet", "--out", "again"])[0] == 0
    shutil.move(tmp_path / "here" / "tiny", tmp_path / "moved")
    code, _, err, _ = run_cli(["train", "--resume", "here/run", "--epochs", 2, "--quiet"])
    assert code == 2 and err.count("\n") == 1 and "--resume here/run --data-dir NEW_DIR" in err, err
    code, _, err, _ = run_cli(["evaluate", "here/run/model.npz"])
    assert code == 2 and "--data-dir NEW_DIR" in err, err
    assert run_cli(["train", "--resume", "here/run", "--data-dir", "moved", "--epochs", 2, "--quiet"])[0] == 0


def test_overwrite_on_a_full_disk_keeps_the_old_run(tmp_path, data, complete_run, run_cli, folder_state,
                                                    tree_snapshot, monkeypatch):
    """--overwrite removes the old run's files only once the new run's first checkpoint is
    written: when that write fails (a full disk), the old run is as it was."""
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    before = tree_snapshot(complete_run)
    monkeypatch.setattr("fastes.io.checkpoints.os.fsync", full)
    code, _, err, _ = run_cli(["train", *SEED, "--data-dir", data, "--overwrite", "--out", complete_run])
    monkeypatch.undo()
    assert code == 2 and "No space left on device" in err, err
    assert folder_state(complete_run, before) == "untouched"
