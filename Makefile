# `make demo` and `make test` set up everything on a fresh machine: the virtual environment
# in .venv is created and filled when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of PyTorch (a looser pin may download a several-GB CUDA build).
TORCH ?= torch==2.13.0

.PHONY: install demo test test-all lint bench clean

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

clean:
	rm -rf demo-out bench-out .pytest_cache
