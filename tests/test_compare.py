"""``fastes compare``: the strategies table and plot, from run folders."""

import json

import pytest

from fastes.cli.compare import accuracy_at, compare_runs, first_reaching
from fastes.io.report import write_metrics_csv

ROW = dict(epoch=0.5, generation=1, train_loss=1.0, train_accuracy=0.5, test_loss=1.0)


def _history(*points):
    return [{**ROW, "wall_seconds": s, "test_accuracy": a} for s, a in points]


def test_accuracy_at_is_the_evaluation_scheduled_there():
    history = _history((1.0, 0.5), (30.2, 0.9), (60.1, 0.951), (90.3, 0.96))
    assert accuracy_at(history, 60.0) == (0.951, 60.1)  # measured at the generation boundary after 60 s
    assert accuracy_at(history, 30.0) == (0.9, 30.2)
    assert accuracy_at(history, 600.0) is None
    assert first_reaching(history, 0.95) == 60.1 and first_reaching(history, 0.99) is None


def _fake_run(folder, history, finished, strategy="pgpe"):
    """A run folder as fastes train leaves it, reduced to what compare reads."""
    folder.mkdir()
    write_metrics_csv(folder / "metrics.csv", history)
    last = history[-1]
    (folder / "summary.json").write_text(json.dumps({
        "config": {"strategy": strategy, "population": 512}, "finished": finished, "generations_per_second": 9.5,
        "final": {"test_accuracy": last["test_accuracy"]}, "wall_seconds": last["wall_seconds"]}))
    return folder


def test_compare_writes_the_table_and_the_plot(tmp_path, quick_run):
    early = _fake_run(tmp_path / "early", _history((1.0, 0.5), (45.0, 0.97)), finished=True, strategy="snes")
    stopped = _fake_run(tmp_path / "stopped", _history((1.0, 0.6), (30.5, 0.8), (31.0, 0.81)), finished=False)
    table = compare_runs([f"quick={quick_run}", str(early), f"cut={stopped}"], tmp_path / "strategies")
    assert (tmp_path / "strategies.png").stat().st_size > 0
    assert (tmp_path / "strategies.md").read_text().endswith(table)
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "| snes | 512 | 9.5 | 0.9700 (45 s) | 0.9700 (45 s) | 45 s | 0.9700 | 45 |" in rows["early"]
    assert "n/a (stopped earlier)" in rows["cut"] and "| never |" in rows["cut"]
    assert "| openai-es | 128 |" in rows["quick"]  # the quick preset, finished within seconds
    assert "Best at 60 s: early (0.9700)." in table and "Best at 600 s: early (0.9700)." in table


def test_compare_refuses_a_folder_without_a_run_summary(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    write_metrics_csv(folder / "metrics.csv", _history((1.0, 0.5)))
    (folder / "summary.json").write_text('{"config": 3}')
    from fastes.errors import RunFolderError

    with pytest.raises(RunFolderError, match="not the summary.json of a fastes run"):
        compare_runs([str(folder)], tmp_path / "out")
    assert not (tmp_path / "out.md").exists()


def test_a_run_folder_whose_path_holds_an_equals_sign(tmp_path, run_cli):
    """``a=b/run`` is the folder when it exists, and otherwise LABEL=DIR split at the first
    ``=``, so ``label=x=y/run`` finds the folder ``x=y/run``."""
    import shutil

    from fastes.io.report import read_run

    source = tmp_path / "src"
    assert run_cli(["train", "--preset", "quick", "--epochs", "1", "--quiet", "--out", source])[0] == 0
    folder = tmp_path / "lr=0.1" / "run"
    shutil.copytree(source, folder)
    assert read_run(str(folder))[:2] == ("run", folder)
    assert read_run(f"fast={folder}")[:2] == ("fast", folder)
    assert run_cli(["plot", folder, "--out", tmp_path / "p.png"])[0] == 0
    code, _, err, _ = run_cli(["plot", f"{tmp_path}/nope=x", "--out", tmp_path / "q.png"])
    assert code == 2 and "read as LABEL=x" in err
