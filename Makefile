# The two set-up commands: `make demo` and `make test`. Both create .venv and install into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
KIT := $(BIN)/kit

.PHONY: demo test install install-dev clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# synth -> cv (two models) -> ensemble -> submit -> validate on a built-in synthetic contest.
demo: install
	@bash scripts/demo.sh $(KIT)

test: install-dev
	$(BIN)/python -m pytest -q

clean-venv:
	rm -rf $(VENV)
