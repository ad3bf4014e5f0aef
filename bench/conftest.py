import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # pyproject's addopts disable benchmarks so that `pytest` runs them once as smoke
    # tests; `pytest bench --benchmark-only` asks for real timings, so turn them back on.
    if config.getoption("benchmark_only", default=False):
        config.option.benchmark_disable = False
