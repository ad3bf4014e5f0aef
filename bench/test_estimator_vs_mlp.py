"""bench/estimator_vs_mlp.py end to end on iris (seconds), and its verdict: the script that
writes results/estimator/ runs, and says which rows meet issue 26 and why the others miss."""

import json

import estimator_vs_mlp as bench


def test_one_table_end_to_end(tmp_path):
    assert bench.main(["--data", "iris", "--repeats", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "table.json").read_text())
    assert [(r["data"], r["preprocessing"]) for r in result["rows"]] == [("iris", "raw"), ("iris", "StandardScaler")]
    for row in result["rows"]:
        for run in row["runs"].values():
            assert len(run["accuracy"]) == 5 and len(run["seconds"]) == 1 and len(run["seconds"][0]) == 5
        assert row["runs"]["ESClassifier"]["sized"][0] == {"population": 26, "epochs": 60}  # 120 rows of 4 features
    assert (tmp_path / "table.md").read_text() == bench.render_markdown(result)


def test_verdict_names_what_a_row_misses():
    row = {"accuracy_difference": -0.02, "time_ratio": 1.0}
    assert bench.verdict(row) == "met"
    assert bench.verdict({**row, "accuracy_difference": -0.021}) == "misses accuracy"
    assert bench.verdict({**row, "time_ratio": 1.01}) == "misses fit time"
    assert bench.verdict({"accuracy_difference": -0.1, "time_ratio": 2.0}) == "misses accuracy and fit time"


def test_busy_is_load_before_or_more_load_after_than_the_run_makes():
    assert not bench.busy({"load_before": 0.04, "load_after": 0.7, "cores": 2})
    assert bench.busy({"load_before": 0.6, "load_after": 0.7, "cores": 2})
    assert bench.busy({"load_before": 0.0, "load_after": 2.5, "cores": 2})
