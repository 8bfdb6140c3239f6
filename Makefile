# Every target runs inside .venv, which `make setup` creates on first use (and refreshes when
# pyproject.toml changes). Variables: DEVICE (auto|cpu|cuda|cuda:N|mps), MODELS (all or a,b,...),
# ARTIFACTS (directory), QUICK=1 for a short benchmark, PORT for the demo.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEVICE ?= auto
MODELS ?= all
ARTIFACTS ?= artifacts
PYTEST_ARGS ?=

.PHONY: setup train export verify demo test lint format bench triton clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

train: setup
	$(PY) -m pipeline train --models $(MODELS) --device $(DEVICE) --artifacts $(ARTIFACTS)

export: setup
	$(PY) -m pipeline export --models $(MODELS) --device $(DEVICE) --artifacts $(ARTIFACTS)

verify: setup
	$(PY) -m pipeline verify --models $(MODELS) --device $(DEVICE) --artifacts $(ARTIFACTS)

demo: setup
	@test -f $(ARTIFACTS)/manifest.json || $(MAKE) train export
	$(PY) demo/app.py --artifacts $(ARTIFACTS) $(if $(PORT),--port $(PORT))

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check pipeline demo tests
	$(VENV)/bin/ruff format --check pipeline demo tests

format: setup
	$(VENV)/bin/ruff format pipeline demo tests
	$(VENV)/bin/ruff check --fix pipeline demo tests

bench: setup
	$(PY) -m pipeline bench --artifacts $(ARTIFACTS) $(if $(QUICK),--quick)

triton: setup
	$(PY) -m pipeline triton $(ARTIFACTS)/triton --artifacts $(ARTIFACTS)

clean:
	rm -rf $(ARTIFACTS)/*/ $(ARTIFACTS)/*.json
