"""results/ and the README: every file the README shows exists, every figure it quotes
comes from a summary.json that carries it."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
RUNS = ("seed", "seed-numpy", "default")
#: The strategies comparison: README row label -> results folder.
STRATEGY_RUNS = {"openai-es (`default`": "default", "pgpe (`pgpe`": "pgpe", "snes (`snes`": "snes"}


def test_every_results_file_the_readme_references_exists():
    referenced = set(re.findall(r"results/[\w./-]+\.(?:png|json|md|csv|toml|txt|npz)", README))
    assert referenced, "the README references no results files"
    missing = sorted(p for p in referenced if not (ROOT / p).is_file())
    assert not missing, missing


@pytest.mark.parametrize("run", sorted(set(RUNS) | set(STRATEGY_RUNS.values())))
def test_run_folders_are_complete(run):
    folder = ROOT / "results" / run
    for name in ("metrics.csv", "summary.json", "metrics.png", "examples.png", "confusion_matrix.png", "config.toml"):
        assert (folder / name).is_file(), f"{run}/{name}"
    assert not (folder / "checkpoint.npz").exists() or "checkpoint" in (ROOT / ".gitignore").read_text()
    summary = json.loads((folder / "summary.json").read_text())
    for key in ("wall_seconds", "generations", "generations_per_second", "time_to_accuracy", "config", "final"):
        assert key in summary, key
    assert 0.0 < summary["final"]["test_accuracy"] <= 1.0
    assert set(summary["time_to_accuracy"]) == {"0.80", "0.85", "0.89", "0.95", "0.97", "0.98"}


def test_readme_quotes_the_summaries():
    """The comparison table's accuracy and wall time for each run match its summary.json."""
    for run in RUNS:
        summary = json.loads((ROOT / "results" / run / "summary.json").read_text())
        accuracy = f"{100 * summary['final']['test_accuracy']:.2f}%"
        seconds = f"{summary['wall_seconds']:.0f} s"
        row = next((line for line in README.splitlines() if f"results/{run}/" in line and line.startswith("|")), None)
        assert row is not None, f"no README table row for results/{run}"
        assert accuracy in row and seconds in row, (row, accuracy, seconds)


def test_readme_strategies_table_quotes_the_summaries():
    """Each strategy's final test accuracy and wall time, in the README and in
    results/strategies.md, are its run's summary.json."""
    table = (ROOT / "results" / "strategies.md").read_text()
    for label, run in STRATEGY_RUNS.items():
        summary = json.loads((ROOT / "results" / run / "summary.json").read_text())
        accuracy = f"{summary['final']['test_accuracy']:.4f}"
        row = next((line for line in README.splitlines() if line.startswith(f"| {label}")), None)
        assert row is not None, f"no README strategies row for {label}"
        assert f"{accuracy} ({summary['wall_seconds']:.0f} s)" in row, (row, accuracy)
        assert f"`results/{run}`" in table and accuracy in table, (run, accuracy)


def test_benchmark_json_has_the_documented_keys():
    bench = json.loads((ROOT / "results" / "benchmark.json").read_text())
    assert bench["gemm_gflops"] > 0 and bench["cpu"] and bench["date"]
    names = {c["name"] for c in bench["configs"]}
    assert {"seed", "medium", "large"} <= names
    for row in bench["configs"]:
        assert set(row) >= {"name", "numba_ms", "numpy_ms", "speedup", "useful_gflop", "limit_fraction", "profile_ms"}


def test_readme_benchmark_tables_quote_results_benchmark():
    """The README's benchmark tables are rows of results/benchmark.md (one run), and the GEMM
    rate it quotes is that run's: the figures are said once and copied, never retyped."""
    bench_md = (ROOT / "results" / "benchmark.md").read_text()
    bench = json.loads((ROOT / "results" / "benchmark.json").read_text())
    section = README[README.index("## Benchmarks"):]
    section = section[: section.index("\n## ", 1)]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    assert len(rows) >= 1 + len(bench["configs"]), "the README shows no benchmark table"
    for row in rows:
        assert row in bench_md.splitlines(), f"README benchmark row not in results/benchmark.md: {row}"
    assert f"float32 GEMM {bench['gemm_gflops']} GFLOP/s measured in the same run" in section
    for config in bench["configs"]:
        assert f"| {config['name']} | {config['numba_ms']:.3f} |" in section, config["name"]
