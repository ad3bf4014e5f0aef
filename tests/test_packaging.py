"""What pyproject.toml promises: Python 3.10 reads TOML with tomli."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_python_3_10_reads_toml_with_tomli(tmp_path):
    """On Python 3.10 (no tomllib) config.py must import tomli, as pyproject.toml promises."""
    path = tmp_path / "run.toml"
    path.write_text("epochs = 3\n")
    code = f"""
import sys, types, tomllib as real
import numpy
sys.modules["tomllib"] = None  # Python 3.10 has no tomllib ...
tomli = types.ModuleType("tomli")  # ... and pyproject.toml installs tomli there
tomli.loads, tomli.TOMLDecodeError = real.loads, real.TOMLDecodeError
sys.modules["tomli"] = tomli
sys.version_info = (3, 10, 13, "final", 0)
import fastes.config as config
assert config.tomllib is tomli, config.tomllib
assert config.load_toml({str(path)!r}) == {{"epochs": 3}}
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr


def test_pyproject_installs_tomli_where_there_is_no_tomllib():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.10"' in text and "tomli>=2; python_version < '3.11'" in text
