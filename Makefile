# The project's two commands, over a project-local virtual environment (.venv):
#   make train [ARGS="--preset quick"]   the main job: `fastes train` (default preset, bundled MNIST)
#   make test  [ARGS="-x -k strategy"]   the tests: `python -m pytest` (tests/, bench/ once, the docs)
# The first use makes .venv with $(PYTHON) and installs fastes into it, editable, with the dev
# and ray extras; later uses reuse it, and reinstall only when pyproject.toml has changed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: train test docs serve-docs venv clean help
.DEFAULT_GOAL := help

help:
	@echo "make train [ARGS=\"...\"]   fastes train ARGS (the default preset on the bundled MNIST)"
	@echo "make test  [ARGS=\"...\"]   python -m pytest ARGS"
	@echo "make docs                 mkdocs build --strict (the site in site/)"
	@echo "make serve-docs           mkdocs serve (the site at http://127.0.0.1:8000)"
	@echo "make venv                 only create and fill $(VENV)"
	@echo "make clean                remove $(VENV) and site/"

train: $(STAMP)
	$(BIN)/fastes train $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

docs: $(STAMP)
	$(BIN)/python -m mkdocs build --strict

serve-docs: $(STAMP)
	$(BIN)/python -m mkdocs serve

venv: $(STAMP)

# The stamp is written only after a complete install, so an interrupted one is redone.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
		{ echo "fastes needs Python >= 3.10; $(PYTHON) is $$($(PYTHON) --version 2>&1). Try: make PYTHON=python3.12 ..." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -e ".[dev,ray]"
	touch $@

clean:
	rm -rf $(VENV) site
