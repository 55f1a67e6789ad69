# `make demo` and `make test` each set up their own virtual environment first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,demo]'
	touch $(STAMP)

# DEMO_ARGS: options of `ttm-distill demo`, e.g. DEMO_ARGS='--seeds 0 --epochs 6' (the tests' short demo)
demo: $(STAMP)
	$(VENV)/bin/ttm-distill demo $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check --no-cache ttm_torchdistill tests benchmarks
	$(VENV)/bin/lint-imports --no-cache

# one pytest worker more than the cores: several tests wait on signals, timers and the SLURM queue
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))

test: $(STAMP) lint
	$(PY) -m pytest -ra --durations=15 -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf $(VENV) build *.egg-info .ruff_cache .pytest_cache
