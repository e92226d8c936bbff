# Every target creates .venv when it is missing and installs the project into it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: quickstart test install install-test lint clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps make a second `make test` skip the install when pyproject.toml has not changed.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed  ## create .venv and install the project

install-test: $(VENV)/.installed-test  ## create .venv and install the project with test extras

quickstart: install  ## train the multi-task model on NCBI-disease with MiniLM on the CPU (embedded defaults)
	$(BIN)/bioner train experiments/quickstart.yaml

test: install-test  ## run the test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:  ## remove outputs of local runs (keeps .venv)
	rm -rf outputs .pytest_cache
