# flowfields: every target bootstraps .venv by itself on a fresh machine.
# TORCH_SPEC picks the torch build installed when .venv has none. The default is the CPU
# build this machine keeps on disk; for CUDA use e.g.
#   make test TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
# or create .venv yourself with the torch you want: an existing torch is never replaced.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
export OMP_NUM_THREADS ?= 1

.PHONY: venv demo test bench reproduce lint format clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/flowfields reproduce --quick

test: venv
	$(PY) -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS)

bench: venv
	$(PY) -m benchmarks.run_all

reproduce: venv
	$(VENV)/bin/flowfields reproduce

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

format: venv
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
