"""The README is a front door and docs/ a site: `mkdocs build --strict` passes (no broken
link, anchor or missing page), the API reference renders the public docstrings, and no page
tells the history of how the figures got there (that is CHANGELOG.md's)."""

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()
#: The site's own pages (docs/results is a link to results/, whose files the pages quote).
PAGES = sorted(p for p in DOCS.rglob("*.md") if p.relative_to(DOCS).parts[0] != "results")


def test_readme_is_a_front_door():
    lines = README.splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; keep it at most 150 and move the rest to docs/"
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.split("#")[0].strip()]
    assert commands == ["make train", "make test"], commands
    assert 'make train ARGS="--preset quick"' in README


def test_readme_links_resolve():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert any(link.startswith("docs/") for link in local), "the README links nothing in docs/"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, missing


def test_ci_runs_the_readme_commands():
    """.ci/run calls exactly the README's two commands (the main job under a budget)."""
    script = (ROOT / ".ci" / "run").read_text()
    make_lines = [line.strip() for line in script.splitlines() if line.strip().startswith("make ")]
    assert len(make_lines) == 2, make_lines
    assert make_lines[0] == "make test", make_lines
    assert make_lines[1].startswith('make train ARGS="--max-seconds 20 '), make_lines


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_no_page_tells_history(page):
    text = page.read_text().lower()
    for phrase in ("latest round", "round before", "before this round", "how the kernels got here",
                   "tried and not kept", "was retrained", " before, at "):
        assert phrase not in text, f"{page.name}: {phrase!r} is history; it belongs in CHANGELOG.md"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("mkdocs", reason="the docs tools are not installed (pip install -e '.[dev]')")
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def _text(html_file: Path) -> str:
    """A built page's words, tags removed."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", html_file.read_text())))


def _shows_docstring(page_text: str, obj) -> bool:
    """The page holds the first sentence of ``obj``'s docstring, as rendered (no Sphinx roles,
    no backquotes; compared without whitespace, which the HTML puts between elements)."""
    first = re.split(r"(?<=[.:;])\s", obj.__doc__.strip(), maxsplit=1)[0]
    words = re.sub(r":\w+:`", "", first).replace("`", "")
    return re.sub(r"\s+", "", words) in re.sub(r"\s+", "", page_text)


def test_site_builds_strict_with_every_page(site):
    for page in PAGES:
        rel = page.relative_to(DOCS).with_suffix("")
        built = site / "index.html" if rel == Path("index") else site / rel / "index.html"
        assert built.is_file(), f"{page.relative_to(ROOT)} was not built"


def test_api_reference_shows_the_public_docstrings(site):
    from fastes.backends import reference, workspace
    from fastes.estimator import PARAMETERS, ESClassifier
    from fastes.io import checkpoints, data, projection

    estimator = _text(site / "reference" / "estimator" / "index.html")
    assert _shows_docstring(estimator, ESClassifier)
    for param in PARAMETERS:  # the Parameters section completed at import: every option it exposes
        assert f" {param} " in estimator, param
    for method in (ESClassifier.fit, ESClassifier.partial_fit, ESClassifier.predict_proba):
        assert _shows_docstring(estimator, method), method.__name__
    assert "{parameters}" not in estimator and ":class:" not in estimator

    backends = _text(site / "reference" / "backends" / "index.html")
    public = [obj for module in (workspace, reference) for name, obj in vars(module).items()
              if callable(obj) and not name.startswith("_") and getattr(obj, "__module__", "") == module.__name__]
    assert len(public) > 10
    for obj in public:  # (reference.relu, a one-liner, has no docstring)
        assert obj.__name__ in backends and (obj.__doc__ is None or _shows_docstring(backends, obj)), obj.__name__

    strategies = _text(site / "reference" / "strategies" / "index.html")
    for name in ("OpenES", "PGPE", "SNES", "tell"):
        assert name in strategies, name
    io = _text(site / "reference" / "io" / "index.html")
    for obj in (checkpoints.load_model, checkpoints.save_model, data.load_dataset, projection.principal_directions,
                projection.network_inputs):
        assert obj.__name__ in io and _shows_docstring(io, obj), obj.__name__
    config = _text(site / "reference" / "config" / "index.html")
    for name in ("fastes.config.Config", "fastes.config.preset"):
        assert name in config, name
