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

reproduce: $(STAMP)
	$(PY) -m datagen corr-curve --preset kdd18 --figure figures

figures: $(STAMP)
	$(PY) -m datagen figure --figures figures

bench: $(STAMP)
	@echo "make bench: not yet available"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
