# Two commands on a fresh machine with Python 3.11+ and make:  make demo  and  make test.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo ui test lint clean

# Reinstalled only when setup.py changes; the venv is reused otherwise.
$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## Pull the last few hourly windows from the bundled simulator into the SIEM folder, and summarise.
demo: $(STAMP)
	$(PY) -m logpull_dagster.demo

## The Dagster UI (dagster dev on 127.0.0.1:3000) on the demo's state, with the simulator running.
ui: $(STAMP)
	$(PY) -m logpull_dagster.demo ui

## The whole test suite (starts its own simulators; needs nothing else).
test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check logpull_dagster logpull_dagster_tests

clean:
	rm -rf .logpull
