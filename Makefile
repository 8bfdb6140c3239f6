# Every target runs inside .venv, which `make setup` creates on first use (and refreshes when
# pyproject.toml changes). Variables: DEVICE (auto|cpu|cuda|cuda:N|mps), MODELS (all or a,b,...),
# ARTIFACTS (directory), QUICK=1 for a short benchmark, PORT for the demo and triton-serve.
# The real Triton server has its own environment, .venv-triton, which `make setup` (or `make triton-env`) makes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TRITON_VENV := .venv-triton
TRITON_STAMP := $(TRITON_VENV)/.installed
DEVICE ?= auto
MODELS ?= all
ARTIFACTS ?= artifacts
PYTEST_ARGS ?=
# The pure core that `make mutate` mutates, as mutmut mutant-name globs ([tool.mutmut] in pyproject.toml
# names the files and the fast tests run against them), and the kill rate it must reach.
MUTATE ?= 'pipeline.inputs.*' 'pipeline.fileio.*' 'pipeline.manifest.*' \
	'pipeline.parity.x_compare*' 'pipeline.parity.x_merge*' \
	'pipeline.oip.x__read_body*' 'pipeline.oip.x__decode*' 'pipeline.oip.x__split*' 'pipeline.oip.x__parse_json*' \
	'pipeline.oip.x__reject_constant*' 'pipeline.oip.x__format*' 'pipeline.oip.x__flat_numbers*' \
	'pipeline.oip.x__input*' 'pipeline.oip.x__outputs*' 'pipeline.oip.x__reply*'
MUTATE_MIN ?= 90

.PHONY: setup triton-env train export verify demo test lint format bench triton triton-serve clean mutate

setup: $(STAMP) $(TRITON_STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

triton-env: $(TRITON_STAMP)

$(TRITON_STAMP): requirements-triton.txt
	test -x $(TRITON_VENV)/bin/python || $(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TRITON_VENV)/bin/python -m pip install --quiet -r requirements-triton.txt
	touch $(TRITON_STAMP)

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

triton-serve: setup
	@test -f $(ARTIFACTS)/manifest.json || $(MAKE) train export
	$(PY) -m pipeline triton-serve --artifacts $(ARTIFACTS) --triton-env $(TRITON_VENV) $(if $(PORT),--port $(PORT))

# Mutation testing: each mutant of the core against its fast unit tests; a fresh run every time, its
# copy of the project and its log in mutants/ (ignored by git). Not part of `make test`: see its timing.
mutate: setup
	rm -rf mutants && mkdir mutants
	$(VENV)/bin/mutmut run $(MUTATE) > mutants/run.log 2>&1 || { tail -40 mutants/run.log; exit 1; }
	@grep -a "mutations/second" mutants/run.log
	$(PY) -m tests.mutation_score --min $(MUTATE_MIN) $(MUTATE)

clean:
	rm -rf $(ARTIFACTS)/*/ $(ARTIFACTS)/*.json
