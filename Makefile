# Every target creates .venv when it is missing and installs the project into it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: quickstart train-quickstart test test-fast lint bench loadtest install install-test install-bench clean help cluster-up cluster-down

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

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[bench]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed  ## create .venv and install the project

install-test: $(VENV)/.installed-test  ## create .venv and install the project with test extras

install-bench: $(VENV)/.installed-bench  ## create .venv and install the project with the load test's locust

QUICKSTART_STORE := sqlite:///$(CURDIR)/outputs/mlflow.db
SAMPLE := Germline mutations in BRCA1 are associated with hereditary breast and ovarian cancer .

# When make started (before any install), and $(call stage,NAME,COMMAND): run COMMAND, then one line
# saying how long it took; the recipe stops if COMMAND fails.
START := $(shell date +%s)
stage = t0=$$(date +%s); $(2); rc=$$?; echo "[quickstart] $(1): $$(( $$(date +%s) - t0 )) s"; exit $$rc

quickstart: install  ## the whole loop on NCBI-disease with MiniLM on the CPU: tune, refit, register, promote, predict
	@echo "[quickstart] install (venv and packages, skipped when present): $$(( $$(date +%s) - $(START) )) s"
	@$(call stage,search + refit over seeds + register (bioner tune),$(BIN)/bioner tune experiments/quickstart.yaml)
	@$(call stage,promote,MLFLOW_TRACKING_URI=$(QUICKSTART_STORE) $(BIN)/bioner promote --dataset ncbi-disease || true)
	@$(call stage,predict,MLFLOW_TRACKING_URI=$(QUICKSTART_STORE) $(BIN)/bioner predict --model models:/bioner-ncbi-disease@champion "$(SAMPLE)")
	@echo "[quickstart] total: $$(( $$(date +%s) - $(START) )) s"
	@echo
	@echo "compare trials:  $(BIN)/bioner runs compare --experiment quickstart --tracking-uri $(QUICKSTART_STORE)"
	@echo "MLflow UI:       $(BIN)/mlflow ui --backend-store-uri $(QUICKSTART_STORE) --host 127.0.0.1 --port 5000"
	@echo "serve champion:  PATH=$(CURDIR)/$(BIN):\$$PATH MLFLOW_TRACKING_URI=$(QUICKSTART_STORE) mlflow models serve -m models:/bioner-ncbi-disease@champion --env-manager local -h 127.0.0.1 -p 5001"
	@echo "                 curl -s 127.0.0.1:5001/invocations -H 'Content-Type: application/json' -d '{\"inputs\": [\"$(SAMPLE)\"]}'"

train-quickstart: install  ## train the quickstart config's base values once (no search)
	$(BIN)/bioner train experiments/quickstart.yaml

lint: install-test  ## the formatter and linter (ruff), then the layer contract (lint-imports)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test: lint  ## lint, then the whole test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The edit-test loop: the unit tests (tests/test_*.py), then the one test marked `smoke` (a real
# Ray Train fit); the integration and fault scenarios are left to `make test`.
test-fast: lint  ## lint, the unit tests and one real-Ray smoke test (minutes; times in experiments/benchmarks/README.md)
	$(BIN)/python -m pytest tests/test_*.py $(PYTEST_ARGS)
	$(BIN)/python -m pytest tests/integration tests/faults -m smoke $(PYTEST_ARGS)

cluster-up: install  ## a one-machine cluster here: Ray head (token auth) on 127.0.0.1:8265, MLflow server on 127.0.0.1:5000
	BIN=$(BIN) cluster/local/up.sh

cluster-down:  ## stop what cluster-up started (by its process ids)
	cluster/local/down.sh

bench: install  ## training and prediction throughput against the plain HF recipe (MiniLM, CPU; about 10 min)
	$(BIN)/bioner bench train experiments/benchmarks/bench.yaml
	$(BIN)/bioner bench predict experiments/benchmarks/bench.yaml

LOADTEST_ARGS ?=
loadtest: install-bench  ## bioner serve (1, 2 replicas) against mlflow models serve at 1/8/32 clients, and 3 promotions under load (about 10 min; idle machine)
	$(BIN)/python experiments/benchmarks/loadtest.py $(LOADTEST_ARGS)

clean:  ## remove outputs of local runs (keeps .venv)
	rm -rf outputs .pytest_cache
