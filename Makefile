# cdc-sync: every entry point a user or CI needs. `make demo` and `make test` set up everything.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STACKCTL := $(PYTHON) stack/stackctl.py
# Connector files and the daemon read hosts, ports and credentials from the environment.
STACK_ENV = eval "$$($(STACKCTL) env)"

CONFIG ?= config/cdc-sync.yaml

.PHONY: help venv stack-up stack-down stack-status connectors migrate demo test test-unit lint bench clean

help:
	@echo "make demo          the whole stack, connectors, simulated shoppers, live change feed"
	@echo "make test          the whole stack, then every test"
	@echo "make lint          ruff, mypy and the import rules"
	@echo "make bench         throughput benchmarks: apply (triggers off/on), bulk, delivery"
	@echo "make stack-up | stack-down | stack-status | connectors | migrate"

$(BIN)/.installed: pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found: install Python 3.11+"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@# setuptools warns about every editable install, a screenful on the first run: not ours to act on
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

stack-up:
	$(STACKCTL) up

stack-down:
	$(STACKCTL) down

stack-status:
	$(STACKCTL) status

connectors: venv
	$(STACK_ENV); $(BIN)/cdc-sync connectors apply connectors/*.json

migrate: venv stack-up
	$(BIN)/cdc-sync --config $(CONFIG) migrate

demo: venv stack-up connectors migrate
	$(STACK_ENV); CDC_SYNC_CONFIG=$(CONFIG) $(BIN)/python demo/run.py

test: venv stack-up connectors
	$(STACK_ENV); $(BIN)/pytest -q -p no:cacheprovider

test-unit: venv
	$(BIN)/pytest -q -m 'not stack'

lint: venv
	$(BIN)/ruff check cdc_sync tests demo stack bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# BENCH_WORKLOAD=realistic or bulk runs one of the two workloads.
BENCH_WORKLOAD ?= all
bench: venv stack-up
	python3 stack/stackctl.py tools
	$(STACK_ENV); \
	if [ "$(BENCH_WORKLOAD)" != bulk ]; then \
	  $(BIN)/python bench/apply.py --triggers off && $(BIN)/python bench/apply.py --triggers on; fi; \
	if [ "$(BENCH_WORKLOAD)" != realistic ]; then $(BIN)/python bench/bulk.py; fi; \
	$(BIN)/python bench/deliver.py && $(BIN)/python bench/api.py

clean:
	python3 stack/stackctl.py clean
	rm -rf $(VENV)
