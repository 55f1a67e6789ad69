# `make demo` and `make test` each set up their own virtual environment first; `make docs` builds the site into site/.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint docs docs-serve clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,demo,docs]'
	touch $(STAMP)

# DEMO_ARGS: options of `ttm-distill demo`, e.g. DEMO_ARGS='--seeds 0 --epochs 6' (the tests' short demo)
demo: $(STAMP)
	$(VENV)/bin/ttm-distill demo $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check --no-cache ttm_torchdistill tests benchmarks docs/hooks
	$(VENV)/bin/lint-imports --no-cache

# the documentation site (mkdocs.yml, docs/): strict, so a broken link, anchor or reference fails the build
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

# one pytest worker more than the cores: several tests wait on signals, timers and the SLURM queue; the files start
# in tests/conftest.py's order (SLOW_FIRST), longest first
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))

test: $(STAMP) lint docs
	$(PY) -m pytest -ra --durations=15 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

clean:
	rm -rf $(VENV) build site *.egg-info .ruff_cache .pytest_cache
