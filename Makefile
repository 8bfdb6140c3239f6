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
# Three processes on two cores: most tests wait on a server, a browser or a subprocess. A file stays in one
# process (its module fixtures start one demo); PYTEST_WORKERS= runs the suite in one.
PYTEST_WORKERS ?= -n 3 --dist loadfile
# The pure core that `make mutate` mutates, as mutmut mutant-name globs ([tool.mutmut] in pyproject.toml
# names the files and the fast tests run against them), and the kill rate it must reach.
MUTATE ?= 'pipeline.runtime.inputs.*' 'pipeline.artifacts.fileio.*' 'pipeline.artifacts.manifest.*' \
	'pipeline.runtime.comparison.x_compare*' 'pipeline.runtime.comparison.x__compare_batches*' \
	'pipeline.runtime.comparison.x__checked*' 'pipeline.runtime.comparison.x__beyond*' \
	'pipeline.runtime.comparison.x_error_stats*' 'pipeline.runtime.comparison.x_input_text*' 'pipeline.serving.oip_protocol.*'
MUTATE_MIN ?= 90

.PHONY: setup triton-env train export verify demo test lint format bench triton triton-serve clean mutate

setup: $(STAMP) $(TRITON_STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,openvino,executorch]'
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
	$(PY) -m pytest $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: setup
	$(PY) -m pytest -q -p no:cacheprovider -o addopts= tests/test_layers.py
	$(VENV)/bin/ruff check pipeline demo tests examples
	$(VENV)/bin/ruff format --check pipeline demo tests examples

format: setup
	$(VENV)/bin/ruff format pipeline demo tests examples
	$(VENV)/bin/ruff check --fix pipeline demo tests examples

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
	@# mutmut maps tests to functions with pytest -x: one failing unit test leaves every later mutant
	@# "no tests", so the unit tests must pass first (the session-fixture tests are deselected here too).
	MUTANT_UNDER_TEST=unit-tests-first $(PY) -m pytest -q -p no:cacheprovider -o addopts= \
		$$($(PY) -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['tool']['mutmut']['pytest_add_cli_args_test_selection']))")
	rm -rf mutants && mkdir mutants
	$(VENV)/bin/mutmut run $(MUTATE) > mutants/run.log 2>&1 || { tail -40 mutants/run.log; exit 1; }
	@grep -a "mutations/second" mutants/run.log
	$(PY) -m tests.mutation_score --min $(MUTATE_MIN) $(MUTATE)

clean:
	rm -rf $(ARTIFACTS)/*/ $(ARTIFACTS)/*.json
