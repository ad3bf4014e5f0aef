"""The package's shape: subpackages that draw the architecture, functions with few
parameters, and comments that say why rather than quote timings."""

import ast
import io
import re
import tokenize
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fastes"
#: A measured figure in a comment: a number with a unit of time or speed.
TIMING = re.compile(r"\d\s*(ms|us|µs|ns|s|sec|seconds|GFLOP/s|GFMA/s|gen/s|generations/s)\b|\d+(\.\d+)?x (faster|slower)")


def _functions():
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path, node


def test_no_function_takes_more_than_ten_parameters():
    wide = []
    for path, fn in _functions():
        args = fn.args
        names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
        names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
        count = len([n for n in names if n not in ("self", "cls")])
        if count > 10:
            wide.append(f"{path.relative_to(PACKAGE)}:{fn.lineno} {fn.name} ({count})")
    assert not wide, wide


def test_the_top_level_holds_few_modules_and_the_rest_is_in_subpackages():
    top = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))
    subpackages = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    assert len(top) <= 12, top
    assert {"backends", "cli", "io", "strategies"} <= set(subpackages), subpackages


def test_no_comment_quotes_a_timing():
    quoted = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
            if tok.type == tokenize.COMMENT and TIMING.search(tok.string):
                quoted.append(f"{path.relative_to(PACKAGE)}:{tok.start[0]} {tok.string.strip()}")
    assert not quoted, quoted
