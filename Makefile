# Quick start: `make demo` and `make test` each create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first: a bare `torch` requirement would pull a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,examples]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vitorch demo --out vitorch-demo

test: $(STAMP)
	$(PY) -m ruff check vitorch tests benchmarks examples
	$(PY) -m pytest -q -n 2 --dist loadfile tests

lint: $(STAMP)
	$(PY) -m ruff check vitorch tests benchmarks examples
	$(PY) -m ruff format --check vitorch tests benchmarks examples

bench: $(STAMP)
	$(PY) -m pip install -q pyro-ppl
	$(PY) benchmarks/step_overhead.py
	$(PY) benchmarks/autoguides.py
	$(PY) benchmarks/mvn_estimators.py
	$(PY) benchmarks/vae.py
	$(PY) benchmarks/data_parallel.py

clean:
	rm -rf $(VENV) vitorch-demo
