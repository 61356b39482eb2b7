# Two commands for a newcomer: `make reproduce` and `make test`; `make help` lists the rest.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= default
# Each profile keeps its own figures: figures/ holds the default profile's only.
FIGDIR := $(if $(filter default,$(PROFILE)),figures,results/$(PROFILE)/figures)
# The README's numbers are the default profile's: its generated blocks follow those results.
README_FLAG := $(if $(filter default,$(PROFILE)),--readme README.md)
export PYTHONUNBUFFERED := 1

.PHONY: help install test test-time reproduce extend figures report dry-run list lint format bench gpu-check clean

install: $(STAMP)  ## create .venv and install the project with its dev tools into it

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

help:  ## list these targets; those that train or read results take PROFILE=... (default: default)
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' \
		$(firstword $(MAKEFILE_LIST))

# One pytest worker per core (pytest-xdist), each test file on one worker, so that a file's
# shared fixtures (the smoke results, the compiled engines) are built once.
PYTEST_FLAGS := -q -n auto --dist loadfile
test: $(STAMP)  ## run the test suite
	$(PY) -m pytest $(PYTEST_FLAGS)

test-time: $(STAMP)  ## run the test suite; record its count and time (docs/test_time.json, README.md)
	PYTEST_FLAGS="$(PYTEST_FLAGS)" $(PY) tools/time_tests.py docs/test_time.json
	$(PY) -m benchmark report --out results/default/report.md --readme README.md

lint: $(STAMP)  ## ruff: lint and check the formatting
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)  ## ruff: format and fix what it can
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# The run comes first: it rejects a bad PROFILE before anything is written.
reproduce: $(STAMP)  ## train what the stored results lack (resumes), then redraw figures and report
	$(PY) -m benchmark run all --profile $(PROFILE)
	$(PY) -m datagen corr-curve --preset kdd18 --figures $(FIGDIR)
	$(PY) -m benchmark report --profile $(PROFILE) --out results/$(PROFILE)/report.md $(README_FLAG)
	@echo "figures: $(FIGDIR)"

figures: $(STAMP)  ## redraw every figure from stored numbers, without training
	$(PY) -m benchmark figures --profile $(PROFILE)
	$(PY) -m datagen figure --figures $(FIGDIR)

# Silent: its output is the product (`make report > file` holds the report only).
report: $(STAMP)  ## print the claims' verdicts and every cell; rewrite README.md's generated numbers
	@$(PY) -m benchmark report --profile $(PROFILE) $(README_FLAG)

extend: $(STAMP)  ## the studies outside `make reproduce`: objectives, data_regime, stream_gap, fig3/fig4 on 10^5 points, many_tasks
	$(PY) -m benchmark run objectives data_regime stream_gap --profile $(PROFILE)
	$(PY) -m benchmark run fig3 fig4 --profile n1e5
	$(PY) -m benchmark run many_tasks --profile $(PROFILE)

dry-run: $(STAMP)  ## what `make reproduce` would train, without training
	@$(PY) -m benchmark run all --profile $(PROFILE) --dry-run

list: $(STAMP)  ## architectures, experiments, objectives and profiles
	@$(PY) -m benchmark list

BENCH_JSON ?= figures/bench_batch32.json
bench: $(STAMP)  ## engine against a naive loop and the machine's peak (~35 min; BENCH_JSON=...)
	$(PY) -m benchmark bench --memory --groups 2 5 10 25 all --tasks 2 4 8 16 --json > $(BENCH_JSON).part
	mv $(BENCH_JSON).part $(BENCH_JSON)

# No install: it runs with the packages a CUDA machine already has, offline.
GPU_OUT ?= gpu_check
gpu-check:  ## measure an accelerator in under 6 min (no install, no network); writes $(GPU_OUT)/gpu_check.json
	PYTHONPATH=. $(PYTHON) -m benchmark gpu-check --out $(GPU_OUT)

clean:  ## remove .venv and the tools' caches
	rm -rf $(VENV) .pytest_cache .ruff_cache
