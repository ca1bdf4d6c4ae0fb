# Two commands do all the set-up:  `make demo` (a real experiment)  and  `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
export MLFLOW_DISABLE_TELEMETRY := true
export WANDB_MODE := disabled
# `mlflow run --env-manager local` runs `python` from PATH: make it the project's venv.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: install test test-all demo bench ui clean

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n 2 -q --durations=15

test-all: $(STAMP)
	$(PY) -m pytest -n 2 -q -m ''

demo: $(STAMP)
	@bash scripts/demo.sh

bench: $(STAMP)
	$(PY) bench/tracking_overhead.py
	$(PY) bench/checkpoint.py

ui: $(STAMP)
	$(VENV)/bin/labrun ui

clean:
	rm -rf $(VENV) mlflow.db mlruns optuna.db
