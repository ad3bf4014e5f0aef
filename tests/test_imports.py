"""The package's import graph: no cycles, and light modules stay light.

Every ``from .x import ...`` and ``from . import x`` of ``fastes/*.py`` is an edge, wherever
it is written (a function-level import is an edge too: it only delays the cycle)."""

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fastes"


def import_graph() -> dict[str, set[str]]:
    """Module name -> names of the package's modules it imports. A subpackage's modules are
    named with dots (``kernels.sparse``), its ``__init__`` by the subpackage (``kernels``)."""
    files = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
            if not parts:
                continue  # the package's own __init__
            files[".".join(parts)] = (path, parts)
        else:
            files[".".join(parts)] = (path, parts[:-1])
    graph = {}
    for name, (path, package) in files.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 1:
                base = list(package[: len(package) - (node.level - 1)])
                targets = [node.module] if node.module else [alias.name for alias in node.names]
                for target in targets:
                    dotted = ".".join(base + target.split("."))
                    while dotted and dotted not in files:  # `from .kernels.sparse import x` -> a module
                        dotted = dotted.rpartition(".")[0]
                    if dotted:
                        edges.add(dotted)
        graph[name] = edges - {name}
    return graph


def test_the_import_graph_sees_the_known_edges():
    graph = import_graph()
    assert "backends.kernels" in graph["backends.numba_backend"] and "backends.numba_backend" in graph["backends.ray_backend"]


def test_the_import_graph_has_no_cycle():
    try:
        tuple(TopologicalSorter(import_graph()).static_order())
    except CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")
@pytest.mark.parametrize("module", ["fastes.io.report", "fastes.io.checkpoints"])
def test_files_and_reports_load_no_training_code(module):
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert module in loaded
    assert not loaded & {"fastes.trainer", "fastes.backends.kernels", "fastes.backends", "numba"}
