# `make demo` and `make test` set up everything on a fresh machine: the virtual environment
# in .venv is created and filled when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of PyTorch (a looser pin may download a several-GB CUDA build).
TORCH ?= torch==2.13.0

.PHONY: install demo test test-all lint bench bench-quick clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[pretrained,web,dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m imgret demo --out demo-out

test: install
	$(PY) -m pytest

test-all: install
	$(PY) -m pytest -m ""

lint: install
	$(VENV)/bin/ruff check imgret tests
	$(VENV)/bin/mypy imgret

# Benchmarks: each part writes bench/results/<part>.md; bench/assemble.py joins the parts
# into BENCHMARKS.md. `make bench-quick` runs smaller settings in a few minutes.
BENCH_PARTS ?= quality pretrained scale throughput web

bench: install
	for part in $(BENCH_PARTS); do $(PY) -m bench.$$part || exit 1; done
	$(PY) -m bench.assemble

bench-quick: install
	for part in $(BENCH_PARTS); do $(PY) -m bench.$$part --quick || exit 1; done
	$(PY) -m bench.assemble

clean:
	rm -rf demo-out bench-out .pytest_cache
