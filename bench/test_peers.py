"""The pure parts of bench/peers.py: snapshot schedule, accuracy at a time, batches, the
training loop's snapshots (on a stepped clock) and the report. No peer package is needed:
the runners import theirs only when built."""

import itertools

import numpy as np
import pytest

import peer_tools as tools
import peers
from fastes.io.data import epoch_order, load_dataset


def test_schedule_holds_early_times_report_times_and_the_end():
    assert peers.eval_schedule(300.0, 20.0) == [1.0, 2.0, 4.0, 8.0, 16.0] + [20.0 * i for i in range(1, 16)]
    assert peers.eval_schedule(70.0, 25.0) == [1.0, 2.0, 4.0, 8.0, 16.0, 25.0, 50.0, 60.0, 70.0]
    assert peers.eval_schedule(5.0, 20.0) == [1.0, 2.0, 4.0, 5.0]
    assert peers.report_times(300.0) == [60.0, 300.0]
    assert peers.report_times(5.0) == [5.0]
    assert peers.report_times(100.0) == [60.0, 100.0]


def test_accuracy_at_is_the_first_snapshot_at_or_after_the_time():
    rows = [{"seconds": 1.02, "test_accuracy": 0.5}, {"seconds": 59.99, "test_accuracy": 0.8},
            {"seconds": 60.4, "test_accuracy": 0.9}, {"seconds": 300.1, "test_accuracy": 0.95}]
    assert peers.accuracy_at(rows, 1.0) == 0.5
    assert peers.accuracy_at(rows, 60.0) == 0.9
    assert peers.accuracy_at(rows, 300.0) == 0.95
    assert peers.accuracy_at(rows, 301.0) is None


def test_batch_stream_lays_epoch_orders_end_to_end_in_full_batches():
    stream = tools.BatchStream(seed=3, n=10, batch=4, shuffle=True)
    rows = np.concatenate([stream.take(1).ravel(), stream.take(4).ravel()])  # 20 rows: epochs 0 and 1
    np.testing.assert_array_equal(rows, np.concatenate([epoch_order(3, 0, 10, True), epoch_order(3, 1, 10, True)]))
    assert stream.take(2).shape == (2, 4)
    np.testing.assert_array_equal(tools.BatchStream(0, 5, 2, False).take(3).ravel(), [0, 1, 2, 3, 4, 0])


def test_chunk_size_spreads_calls_over_about_a_twentieth_of_a_second():
    assert tools.chunk_size(0.001) == 50
    assert tools.chunk_size(0.2) == 1
    assert tools.chunk_size(1e-7) == 1000


class _CountingRunner:
    """Counts generations; its parameters are the count."""

    def __init__(self):
        self.done, self.rows = 0, []

    def run(self, rows):
        self.rows.append(rows)
        self.done += len(rows)

    def theta(self):
        return np.array([self.done], dtype=np.float32)


def test_train_snapshots_at_the_first_chunk_boundary_at_or_after_each_time():
    ticks = itertools.count()
    runner = _CountingRunner()
    stream = tools.BatchStream(0, 100, 5, False)
    # every chunk of 3 generations takes 0.7 s: chunks end at 0.7, 1.4, 2.1, 2.8, 3.5, 4.2
    generations, rows, thetas = tools.train(runner, stream, [1.0, 2.0, 4.0], 3, clock=lambda: 0.7 * next(ticks))
    assert generations == 18
    assert [r["seconds"] for r in rows] == [1.4, 2.1, 4.2]
    assert [r["generation"] for r in rows] == [6, 9, 18]
    assert [int(t[0]) for t in thetas] == [6, 9, 18]
    np.testing.assert_array_equal(np.concatenate(runner.rows).ravel(), np.arange(90))


def test_every_es_tool_starts_where_fastes_does():
    from fastes.trainer import Trainer

    config = tools.config_for("modern").replace(dataset="digits")
    dataset = load_dataset("digits")
    np.testing.assert_array_equal(tools.initial_theta(config, dataset), Trainer(config, dataset).initial_state().theta)


def _result():
    evaluations = [{"seconds": 1.01, "generation": 10, "test_accuracy": 0.5},
                   {"seconds": 60.2, "generation": 600, "test_accuracy": 0.81},
                   {"seconds": 300.3, "generation": 3000, "test_accuracy": 0.9}]
    runs = [
        {"tool": "fastes", "config": "seed", "implementation": "the kernels", "ms_per_generation": 0.25,
         "generations": 3000, "warm_up_seconds": 1.23, "peak_rss_mb": 400.4, "evaluations": evaluations,
         "load_before": 0.1},
        {"tool": "evosax", "config": "seed", "implementation": "Open_ES", "ms_per_generation": 2.0,
         "generations": 150, "warm_up_seconds": 6.0, "peak_rss_mb": 800.0, "evaluations": evaluations[:2],
         "load_before": 0.2},
        {"tool": "evotorch", "config": "seed", "error": "ModuleNotFoundError: No module named 'evotorch'"},
    ]
    return {"cpu": "a CPU", "cores": 2, "python": "3.11", "date": "2026-01-01", "seconds": 300.0, "eval_every": 20.0,
            "configs": {"seed": tools.config_for("seed").to_dict()}, "runs": runs}


def test_markdown_tables_every_run_with_its_accuracy_at_each_report_time():
    text = peers.render_markdown(_result())
    assert "| fastes (Numba) | 0.250 | 1.0x | 3000 | 0.8100 | 0.9000 | 1.2 | 400 |" in text
    assert "| evosax (JAX) | 2.000 | 8.0x | 150 | 0.8100 | n/a | 6.0 | 800 |" in text
    assert "| EvoTorch (PyTorch) | failed: ModuleNotFoundError: No module named 'evotorch' |" in text
    assert "MLP 784-16-16-10 (ReLU, normal init), population 8, sigma 0.001, zscore shaping, mse loss" in text
    assert "python bench/peers.py --seconds 300 --out results" in text
    assert "- evosax (JAX), seed: Open_ES." in text
    assert "1-minute load average before each run: 0.10 to 0.20 (an idle machine)." in text


def test_markdown_warns_when_the_machine_was_busy():
    result = _result()
    result["runs"][1]["load_before"] = 3.0
    assert "0.10 to 3.00 (**the machine was not idle" in peers.render_markdown(result)


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    peers.plot(_result(), tmp_path / "peers.png")
    assert (tmp_path / "peers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
