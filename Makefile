# ctsynth: install, demo, test, lint, bench.
# Every target creates/refreshes the local virtual environment (.venv) itself.
#
# TORCH_SPEC is what gets installed before anything that depends on torch. The default is the CPU
# build that lies on the build machines' disk; on a GPU machine, install your CUDA build of torch into
# .venv first (or run `make install TORCH_SPEC="torch>=2.4"` to keep whatever satisfies the range).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.ctsynth-installed
DEMO_DIR ?= demo_output
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: install demo test test-fast lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) common/pyproject.toml
	@if ! $(PY) -c "import torch" 2>/dev/null; then $(PIP) install -q "$(TORCH_SPEC)"; fi
	$(PIP) install -q -e "common[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m ctsynth.demo --out $(DEMO_DIR)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check common bundles tests bench
	$(PY) -m ruff format --check common bundles tests bench

bench: $(STAMP)
	$(PY) bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
