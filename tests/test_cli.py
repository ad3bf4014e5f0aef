import json

import numpy as np
import pytest

from fastes.cli.bench import PHASES
from fastes.cli.main import main
from fastes.io.run_folder import RESULT_FILES

def test_train_writes_every_result_file(quick_run):
    for name in RESULT_FILES + ("checkpoint.npz",):
        assert (quick_run / name).is_file(), name
    summary = json.loads((quick_run / "summary.json").read_text())
    assert summary["final"]["test_accuracy"] > 0.8
    assert summary["generations"] == 2 * 22 and summary["generations_per_second"] > 0
    assert summary["config"]["population"] == 128
    lines = (quick_run / "metrics.csv").read_text().splitlines()
    assert lines[0] == "epoch,generation,wall_seconds,train_loss,train_accuracy,test_loss,test_accuracy"
    # one row per epoch, plus timed rows in between (how many depends on the machine)
    epochs = [float(line.split(",")[0]) for line in lines[1:]]
    assert [e for e in epochs if e == int(e)] == [1.0, 2.0] and epochs[-1] == 2.0


def test_model_file_loads_with_plain_numpy(quick_run):
    with np.load(quick_run / "model.npz", allow_pickle=False) as npz:
        assert set(npz.files) == {"W0", "b0", "W1", "b1", "config"}
        assert npz["W0"].shape == (64, 32) and npz["W0"].dtype == np.float32
        assert json.loads(str(npz["config"]))["dataset"] == "digits"


def test_evaluate_reproduces_summary(quick_run, capsys):
    summary = json.loads((quick_run / "summary.json").read_text())
    assert main(["evaluate", str(quick_run / "model.npz"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["test_accuracy"] == pytest.approx(summary["final"]["test_accuracy"], abs=1e-12)
    assert main(["evaluate", str(quick_run / "model.npz")]) == 0
    assert "precision" in capsys.readouterr().out


def test_same_seed_identical_model_file(tmp_path, quick_run, quick_args, model_bytes):
    out = tmp_path / "again"
    assert main(["train", *quick_args, "--out", str(out)]) == 0
    assert model_bytes(out) == model_bytes(quick_run) and set(model_bytes(out)) == {"W0", "b0", "W1", "b1"}


def test_console_script_errors_are_one_line(tmp_path, fastes_process):
    proc = fastes_process("train", "--preset", "quick", "--sigma", "-1", "--out", tmp_path / "x")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 2
    assert stderr.strip().count("\n") == 0 and "Traceback" not in stderr
    assert "sigma must be positive" in stderr


@pytest.mark.parametrize(
    "args, match",
    [
        (["train", "--preset", "nope"], "invalid choice"),
        (["train", "--preset", "quick", "--hidden", "8,a"], "hidden sizes"),
        (["train", "--preset", "quick", "--population", "0"], "population must be"),
        (["train", "--preset", "quick", "--lr", "0"], "lr must be positive"),
        (["train", "--preset", "quick", "--batch-size", "0"], "batch_size must be"),
        (["train", "--preset", "quick", "--loss", "hinge"], "invalid choice"),
        (["train", "--preset", "quick", "--data-dir", "/nonexistent"], "does not exist"),
        (["evaluate", "/nonexistent/model.npz"], "does not exist"),
    ],
)
def test_bad_input_exit_2(args, match, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        code = main(args + ["--out", str(tmp_path / "o")] if args[0] == "train" else args)
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1


def test_plot_and_bench_commands(tmp_path, quick_run, capsys):
    out = tmp_path / "acc.png"
    assert main(["plot", f"quick={quick_run}", str(quick_run), "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    assert f"wrote {out}" in capsys.readouterr().out
    assert main(["bench", "--configs", "seed", "--repeats", "2", "--json", "--out", str(tmp_path / "b")]) == 0
    result = json.loads(capsys.readouterr().out)
    row = result["configs"][0]
    assert row["name"] == "seed" and row["numba_ms"] > 0 and row["numpy_ms"] > 0 and row["useful_gflop"] > 0
    assert 0 <= row["limit_fraction"] < 1
    assert set(row["profile_ms"]) == set(PHASES)
    assert (tmp_path / "b.md").read_text().startswith("# fastes bench")
    assert main(["plot", str(tmp_path), "--out", str(out)]) == 2
    assert "no metrics.csv" in capsys.readouterr().err


def test_progress_lines_when_not_a_terminal(tmp_path, capsys):
    assert main(["train", "--preset", "quick", "--epochs", "2", "--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("epoch 1/2") and "gen/s" in out[0] and "test loss" in out[0]
    assert out[1].startswith("epoch 2/2") and out[2].startswith("done: test accuracy")
    assert main(["train", "--preset", "quick", "--epochs", "1", "--quiet", "--out", str(tmp_path / "q")]) == 0
    assert capsys.readouterr().out == ""


def test_progress_says_the_plan_fitted_to_the_budget(tmp_path, capsys):
    args = ["train", "--preset", "quick", "--epochs", "2", "--fit-budget", "--max-seconds", "1000"]
    assert main([*args, "--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("planned 2 epoch(s) to fit --max-seconds 1000 at the ") and "generations/s" in out[0]
    assert out[1].startswith("epoch 1/2")


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_a_bad_numba_num_threads_is_one_line(tmp_path, fastes_process, value):
    """Numba raises at import on NUMBA_NUM_THREADS=0, the variable fastes's --threads message names."""
    import os

    proc = fastes_process("train", "--preset", "quick", "--out", tmp_path / "x", env={**os.environ, "NUMBA_NUM_THREADS": value})
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 2 and stderr.count("\n") == 1 and "NUMBA_NUM_THREADS" in stderr, stderr
    assert not (tmp_path / "x").exists()


def test_an_unreachable_ray_address_is_one_line_at_once(tmp_path, fastes_process):
    """Ray retries an unreachable address for minutes, with its own log lines: fastes tries one
    connection first."""
    import time

    pytest.importorskip("ray")
    started = time.monotonic()
    proc = fastes_process("train", "--preset", "quick", "--backend", "ray", "--address", "127.0.0.1:9",
                          "--out", tmp_path / "run")
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2 and stderr.count("\n") == 1, stderr
    assert "cannot reach a Ray cluster at 127.0.0.1:9" in stderr and not (tmp_path / "run").exists()
    assert time.monotonic() - started < 60
