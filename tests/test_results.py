"""results/ and the pages that quote it: every results file the README or a docs page shows
exists, and every figure they quote is a file in results/ (a run's summary.json, or a row of
results/benchmark.md, results/strategies.md, results/peers.md or results/estimator/table.md)
that this test reads."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()
PAGE = {name: (DOCS / f"{name}.md").read_text()
        for name in ("trained-runs", "strategies", "performance", "peers", "estimator")}
#: The runs the README and the Results page quote.
RUNS = ("seed", "seed-numpy", "default")
README_RUNS = ("seed", "default", "binary")
#: The strategies comparison: row label -> results folder.
STRATEGY_RUNS = {"openai-es (`default`": "default", "pgpe (`pgpe`": "pgpe", "snes (`snes`": "snes"}
LEVELS = ("0.80", "0.85", "0.89", "0.95", "0.97", "0.98")


def summary(run: str) -> dict:
    return json.loads((RESULTS / run / "summary.json").read_text())


def table_rows(text: str) -> list[str]:
    """Every row of every Markdown table in ``text``, the separator rows left out."""
    return [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| ---")]


def row_for(text: str, needle: str) -> str:
    row = next((line for line in table_rows(text) if needle in line), None)
    assert row is not None, f"no table row with {needle!r}"
    return row


def rate(gps: float) -> str:
    return f"{gps:.0f}" if gps >= 100 else f"{gps:.1f}"


def test_every_results_file_a_page_references_exists():
    pages = {"README.md": README, **{f"docs/{p.relative_to(DOCS)}": p.read_text() for p in DOCS.glob("*.md")}}
    for name, text in pages.items():
        for path in re.findall(r"results/[\w./-]+\.(?:png|json|md|csv|toml|txt|npz)", text):
            assert (ROOT / path).is_file(), f"{name} references {path}, which does not exist"
    assert "results/peers.png" in README


@pytest.mark.parametrize("run", sorted(set(RUNS) | set(README_RUNS) | set(STRATEGY_RUNS.values())))
def test_run_folders_are_complete(run):
    folder = RESULTS / run
    for name in ("metrics.csv", "summary.json", "metrics.png", "examples.png", "confusion_matrix.png", "config.toml"):
        assert (folder / name).is_file(), f"{run}/{name}"
    assert not (folder / "checkpoint.npz").exists() or "checkpoint" in (ROOT / ".gitignore").read_text()
    s = summary(run)
    for key in ("wall_seconds", "generations", "generations_per_second", "time_to_accuracy", "config", "final",
                "peak_rss_mb"):
        assert key in s, key
    assert 0.0 < s["final"]["test_accuracy"] <= 1.0
    assert set(s["time_to_accuracy"]) == {"0.80", "0.85", "0.89", "0.95", "0.97", "0.98"}


@pytest.mark.parametrize("run", README_RUNS)
def test_readme_quotes_the_summaries(run):
    """The README's results table: each run's wall time, generations/s and test accuracy."""
    s = summary(run)
    row = row_for(README, f"results/{run}/")
    for figure in (f"{s['wall_seconds']:.0f} s", f"| {rate(s['generations_per_second'])} |",
                   f"{100 * s['final']['test_accuracy']:.2f}%"):
        assert figure in row, (row, figure)


@pytest.mark.parametrize("run", RUNS)
def test_results_page_quotes_the_summaries(run):
    """docs/trained-runs.md: each run's row, and its time to each accuracy level."""
    s = summary(run)
    row = row_for(PAGE["trained-runs"], f"(results/{run}/summary.json)")
    backend = "numpy" if run.endswith("numpy") else "numba"
    for figure in (f"| {backend} |", f"| {s['wall_seconds']:.0f} s |", f"| {rate(s['generations_per_second'])} |",
                   f"| {100 * s['final']['test_accuracy']:.2f}% |", f"| {100 * s['final']['train_accuracy']:.2f}% |",
                   f"| {s['peak_rss_mb']:.0f} MB |"):
        assert figure in row, (row, figure)
    times = s["time_to_accuracy"]
    expected = "| " + " | ".join([run] + [f"{times[k]:.1f} s" if times[k] is not None else "not reached"
                                          for k in LEVELS]) + " |"
    assert expected in PAGE["trained-runs"].splitlines(), expected


def test_strategies_page_quotes_the_summaries_and_results_strategies():
    """Each strategy's row: its run's final test accuracy and wall time (summary.json), and
    the rest of the row's figures as results/strategies.md has them."""
    table = (RESULTS / "strategies.md").read_text()
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in table_rows(table)}
    for label, run in STRATEGY_RUNS.items():
        s = summary(run)
        accuracy = f"{s['final']['test_accuracy']:.4f}"
        row = row_for(PAGE["strategies"], f"| {label}")
        assert f"{accuracy} ({s['wall_seconds']:.0f} s)" in row, (row, accuracy)
        assert f"`results/{run}`" in table and accuracy in table, (run, accuracy)
        name = "openai-es" if run == "default" else run
        source = rows[name]  # run | strategy | population | gen/s | at 60 s | at 600 s | reaches 0.95 | ...
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == source[3] and cells[2] == source[4].split(" (")[0] and cells[3] == source[6], (row, source)


def test_benchmark_json_has_the_documented_keys():
    bench = json.loads((RESULTS / "benchmark.json").read_text())
    assert bench["gemm_gflops"] > 0 and bench["cpu"] and bench["date"]
    names = {c["name"] for c in bench["configs"]}
    assert {"seed", "medium", "large"} <= names
    for row in bench["configs"]:
        assert set(row) >= {"name", "numba_ms", "numpy_ms", "speedup", "useful_gflop", "limit_fraction", "profile_ms"}


def test_performance_page_quotes_results_benchmark():
    """The performance page's measured tables are rows of results/benchmark.md (one run), every
    config in both; the GEMM rate it quotes is that run's; every decimal figure in its prose
    is one of results/benchmark.md's."""
    bench_md = (RESULTS / "benchmark.md").read_text()
    bench = json.loads((RESULTS / "benchmark.json").read_text())
    page = PAGE["performance"]
    bench_lines = set(bench_md.splitlines())
    headers = [line for line in table_rows(bench_md) if line.startswith("| config |")]
    assert len(headers) == 2 and all(h in page for h in headers), "the page lacks results/benchmark.md's tables"
    names = {c["name"] for c in bench["configs"]}
    widths = {h.count("|") for h in headers}
    quoted = [line for line in table_rows(page) if line.split(" | ")[0][2:] in names and line.count("|") in widths]
    for row in quoted:
        assert row in bench_lines, f"performance.md row not in results/benchmark.md: {row}"
    for config in bench["configs"]:
        assert f"| {config['name']} | {config['numba_ms']:.3f} |" in page, config["name"]
        assert sum(row.startswith(f"| {config['name']} |") for row in quoted) == 2, config["name"]
    assert f"float32 GEMM {bench['gemm_gflops']} GFLOP/s measured in the same run" in page
    prose = "\n".join(line for line in page.splitlines() if not line.startswith("|"))
    for figure in re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", prose):
        assert figure in bench_md, f"performance.md quotes {figure}, which is not in results/benchmark.md"


def test_performance_page_configs_are_the_bench_configs():
    from fastes.cli.bench import CONFIGS

    page = PAGE["performance"]
    for name, config in CONFIGS.items():
        row = row_for(page, f"| {name} | {config['population']} |")
        assert f"| {config['batch_size']} |" in row, row


def test_peers_page_quotes_results_peers():
    """The peers page's tables are rows of results/peers.md, every tool of both configs; its
    prose's decimal figures are results/peers.md's (the load average that says it was not idle)."""
    peers_md = (RESULTS / "peers.md").read_text()
    page = PAGE["peers"]
    rows = table_rows(page)
    assert len(rows) >= 2 + 2 * 5
    for row in rows:
        assert row in peers_md.splitlines(), f"peers.md row not in results/peers.md: {row}"
    assert len(rows) == len(table_rows(peers_md)), "the page leaves out rows of results/peers.md"
    prose = "\n".join(line for line in page.splitlines() if not line.startswith("|"))
    for figure in re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", prose):
        assert figure in peers_md, f"peers.md page quotes {figure}, which is not in results/peers.md"
    if "not idle" in peers_md:  # the run's own warning travels with its figures
        assert "not a fair comparison" in " ".join(page.split())



def test_binary_page_quotes_results_binary():
    """docs/binary.md: the comparison table is results/binary-vs-ste.md's, whose ES run is the
    binary preset's run folder; every decimal figure of its prose is in results/binary-vs-ste.md,
    results/binary-trials.md or that run's summary."""
    page = (DOCS / "binary.md").read_text()
    table = (RESULTS / "binary-vs-ste.md").read_text()
    rows = table_rows(table)
    assert len(rows) == 3 and all(row in page for row in rows)
    comparison = json.loads((RESULTS / "binary-vs-ste.json").read_text())
    s = summary("binary")
    es = next(run for run in comparison["runs"] if run["tool"] == "fastes")
    assert es["final_test_accuracy"] == s["final"]["test_accuracy"] and s["config"]["activation"] == "sign"
    assert comparison["seconds"] == s["config"]["max_seconds"]
    sources = table + (RESULTS / "binary-trials.md").read_text() + json.dumps(s)
    prose = "\n".join(line for line in page.splitlines() if not line.startswith("|"))
    for figure in re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", prose):
        assert figure in sources, f"binary.md quotes {figure}, which is in none of its results files"


def test_frontier_tables_are_rows_of_results_frontier():
    """docs/trained-runs.md's frontier tables: every row is a row of results/frontier.md (which
    bench/frontier.py writes from results/frontier/), and none is left out."""
    frontier = (RESULTS / "frontier.md").read_text()
    begin, end = "<!-- frontier tables: rows of results/frontier.md -->", "<!-- end of frontier tables -->"
    section = PAGE["trained-runs"].split(begin, 1)[1].split(end, 1)[0]
    rows = table_rows(section)
    assert rows and set(rows) == set(table_rows(frontier))


def test_estimator_page_quotes_results_estimator():
    """docs/estimator.md's comparison with MLPClassifier is results/estimator/table.md's table,
    row for row, every table and both ways of feeding it; every decimal figure of its prose is
    in that file; and that file is what bench/estimator_vs_mlp.py renders from table.json."""
    import importlib.util

    table_md = (RESULTS / "estimator" / "table.md").read_text()
    result = json.loads((RESULTS / "estimator" / "table.json").read_text())
    spec = importlib.util.spec_from_file_location("estimator_vs_mlp", ROOT / "bench" / "estimator_vs_mlp.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.render_markdown(result) == table_md, "results/estimator/table.md is not table.json's rendering"
    assert {(r["data"], r["preprocessing"]) for r in result["rows"]} == {
        (data, features) for data in bench.DATASETS for features in bench.FEATURES}
    section = PAGE["estimator"].split("## Against MLPClassifier", 1)[1].split("\n## ", 1)[0]
    rows = table_rows(section)
    assert rows == table_rows(table_md), "docs/estimator.md's comparison is not results/estimator/table.md's table"
    prose = "\n".join(line for line in section.splitlines() if not line.startswith("|"))
    for figure in re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", prose):
        assert figure in table_md, f"estimator.md quotes {figure}, which is not in results/estimator/table.md"
    assert "results/estimator/table.md" in section and "bench/estimator_vs_mlp.py" in section
    if "not idle" in table_md:  # the run's own warning travels with its figures
        assert "not idle" in section
