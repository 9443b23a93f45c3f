# Two commands on a fresh machine with Python 3.11+ and make:  make demo  and  make test.
# For developers between edits, make test-fast: the suite without the tests marked slow (pytest.ini).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo ui test test-fast lint clean chromium postgres rsyslog bench bench-stores bench-rate bench-subranges

# Reinstalled only when setup.py changes; the venv is reused otherwise.
$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## Pull the last few hourly windows from the bundled simulator into two sinks (the SIEM folder and the
## bundled Splunk HEC collector), and summarise.
demo: $(STAMP)
	$(PY) -m logpull_dagster.demo

## The Dagster UI (dagster dev on 127.0.0.1:3000) on the demo's state, with the simulator and HEC collector running.
ui: $(STAMP)
	$(PY) -m logpull_dagster.demo ui

## The whole test suite (starts its own simulators and servers: moto for DynamoDB and S3, a private
## PostgreSQL cluster, private rsyslogd daemons; the UI test needs Debian's chromium, the postgres tests
## Debian's postgresql, the syslog tests Debian's rsyslog). Four workers on two cores: many tests wait on
## CLI start-ups, leases and servers, so extra workers keep both cores busy (measured on 2 cores, one run
## each: 13 min 39 s with 3 workers, 11 min 14 s with 4; on 2026-12-08, 13:46 with 4, 14:57 with 6, 17:22 with 4 and the
## longest files first). --dist worksteal: an idle worker takes tests queued for a busy one, so the run does not
## end waiting on one worker's queue of minute-long CLI tests.
test: $(STAMP) chromium postgres rsyslog
	$(PY) -m pytest -n 4 --dist worksteal --durations=40

## The fast tier, for developers between edits (CI runs make test): every test not marked slow in pytest.ini,
## i.e. none that starts the real dagster, dg or logpull CLI, the daemon, the webserver, moto or PostgreSQL,
## or takes more than about 2 s. Needs neither Chromium nor PostgreSQL. Under two minutes on 2 cores (make test: ~11 min).
test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -m "not slow"

## Headless Chromium for the UI test, from Debian's packages (Playwright drives it; it downloads nothing).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	  else echo "The UI test needs Chromium: run 'sudo apt-get install chromium' (Debian/Ubuntu) and retry."; exit 1; fi; }

## rsyslog with its GnuTLS driver from Debian's packages; the syslog sink tests start their own daemon
## (rsyslogd -n -f <their config>): no system service is configured or started.
rsyslog:
	@{ command -v rsyslogd >/dev/null 2>&1 && ls /usr/lib/*/rsyslog/lmnsd_gtls.so >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rsyslog rsyslog-gnutls; \
	  else echo "The syslog sink tests need rsyslog: run 'sudo apt-get install rsyslog rsyslog-gnutls' (Debian/Ubuntu) and retry."; exit 1; fi; }

## PostgreSQL's server binaries from Debian's packages; the tests start their own cluster (initdb, pg_ctl).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; \
	  else echo "The postgres tests need PostgreSQL: run 'sudo apt-get install postgresql' (Debian/Ubuntu) and retry."; exit 1; fi; }

## Benchmarks against the read limit (not part of make test); rewrites BENCHMARKS.md. 6 to 13 minutes.
bench: $(STAMP)
	$(PY) benchmarks/bench.py

lint: $(STAMP)
	$(VENV)/bin/ruff check logpull_dagster logpull_dagster_tests benchmarks

clean:
	rm -rf .logpull

## What each state backend costs per page (SQLite, PostgreSQL, DynamoDB + S3 on moto); writes benchmarks/stores.md.
bench-stores: $(STAMP) postgres
	$(PY) benchmarks/bench_stores.py

## Four concurrent runs on one rate budget (rate_limit 120/min, about 2 minutes); writes benchmarks/rate_budget.md.
bench-rate: $(STAMP)
	$(PY) benchmarks/bench_rate.py

## Issue 23: one busy window read as sub-ranges, and 8 windows at once, at 150 ms a page (ratios, printed).
bench-subranges: $(STAMP)
	$(PY) benchmarks/bench_subranges.py
