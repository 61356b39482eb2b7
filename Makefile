# Two commands for a newcomer: `make reproduce` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= default
export PYTHONUNBUFFERED := 1

.PHONY: install test reproduce figures lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

reproduce: $(STAMP)  ## regenerate every figure (about 40 min on 2 cores; resumes if interrupted)
	$(PY) -m datagen corr-curve --preset kdd18 --figure figures
	$(PY) -m benchmark run all --profile $(PROFILE) --figures figures
	$(PY) -m benchmark report --results results/$(PROFILE) > results/$(PROFILE)/report.md
	@echo "report: results/$(PROFILE)/report.md"

figures: $(STAMP)  ## redraw every figure from stored numbers, without training
	$(PY) -m datagen figure --figures figures
	$(PY) -m benchmark figures --results results/$(PROFILE) --out figures

BENCH_JSON ?= figures/bench_batch128.json
bench: $(STAMP)  ## engine against a naive loop and the machine's peak (~35 min; writes $(BENCH_JSON))
	$(PY) -m benchmark bench --memory --groups 2 5 10 25 all --json > $(BENCH_JSON).part
	mv $(BENCH_JSON).part $(BENCH_JSON)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
