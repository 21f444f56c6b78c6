# Set-up is part of every target: a fresh machine needs only python3 (3.11+) and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
QUIX_VENV ?= .venv-quix
BENCH ?=
# test processes: most of the suite waits on brokers, Ray and subprocesses, not on a core
TEST_WORKERS ?= 2

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[local,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m goka_ray.tools.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check goka_ray actors tests bench
	$(VENV)/bin/ruff format --check goka_ray actors tests bench
	$(VENV)/bin/mypy goka_ray
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# what the benchmarks need beyond goka-ray; Quix Streams (a baseline) in a venv of its own,
# since it pins another confluent-kafka: never a runtime or test dependency of goka-ray
$(VENV)/.bench-installed: $(STAMP) bench/requirements.txt
	$(PY) -m pip install --quiet -r bench/requirements.txt
	touch $@

$(QUIX_VENV)/.installed: bench/requirements-quix.txt
	$(PYTHON) -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(QUIX_VENV)/bin/python -m pip install --quiet -r bench/requirements-quix.txt
	touch $@

# every benchmark (python -m bench --list); one or some: make bench BENCH="latency view_latency"
bench: $(VENV)/.bench-installed $(QUIX_VENV)/.installed
	$(PY) -m bench $(BENCH)

clean:
	rm -rf $(VENV) $(QUIX_VENV) .pytest_cache .mypy_cache .ruff_cache
