# Everything a developer or CI runs, in one place. `make test` is what .ci/run calls.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CI runs the property-based tests with at least 10k examples; the fast lane with a few hundred.
IYS_HYPOTHESIS_EXAMPLES ?= 10000
FAST_HYPOTHESIS_EXAMPLES ?= 300
PYTEST := $(BIN)/python -m pytest
# The tests' lanes (markers in pytest.ini), together the whole suite: the fast lane is unit/,
# simulator/, dags/ and the compose file's checks; the integration lane the flows of integration/ and
# chaos/; the stack lane whatever starts Airflow processes, waits on the wall clock or paces traffic.
FAST_TESTS := tests/unit tests/simulator tests/dags tests/ui/test_compose.py tests/ui/test_compose_iys_page.py
QUICK_MARKERS := not stack and not real_time and not timing

.PHONY: install demo test test-fast test-integration test-stack lint simulator clean

# The development set: requirements-dev.txt = the runtime requirements.txt + the İYS simulator + test tools,
# every transitive dependency pinned by constraints.txt (so CI and every developer resolve the same set).
$(BIN)/activate: requirements.txt requirements-dev.txt constraints.txt include/iys_provider/pyproject.toml include/iys_simulator/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -r requirements-dev.txt
	touch $(BIN)/activate

install: $(BIN)/activate

# Re-resolve constraints.txt after changing a pin in requirements*.txt: requirements-dev.txt alone (no
# constraints) in a fresh virtualenv, frozen without this project's editable packages.
CONSTRAINTS_VENV := .venv-constraints
.PHONY: constraints
constraints:
	rm -rf $(CONSTRAINTS_VENV)
	$(PYTHON) -m venv $(CONSTRAINTS_VENV)
	$(CONSTRAINTS_VENV)/bin/pip install --quiet --upgrade pip
	$(CONSTRAINTS_VENV)/bin/pip install --quiet -r requirements-dev.txt
	{ echo "# Every package of requirements-dev.txt, transitive ones included, as resolved for Python 3.11 on Linux."; \
	  echo "# Used as pip constraints by make install; regenerate with make constraints (do not edit by hand)."; \
	  $(CONSTRAINTS_VENV)/bin/pip freeze --exclude-editable; } > constraints.txt
	rm -rf $(CONSTRAINTS_VENV)

# The whole product once: simulator, Postgres, initial + incremental sync, summary; leaves nothing running.
demo: install
	$(BIN)/python scripts/demo.py

# The whole suite (what .ci/run and the README run), with the 25 slowest tests at the end.
test: install
	IYS_HYPOTHESIS_EXAMPLES=$(IYS_HYPOTHESIS_EXAMPLES) $(PYTEST) -q --durations=25

# Minutes, not a quarter of an hour: lint, the rules, the simulator, DAG parsing (see pytest.ini's markers).
test-fast: lint
	IYS_HYPOTHESIS_EXAMPLES=$(FAST_HYPOTHESIS_EXAMPLES) $(PYTEST) -q --durations=10 -m "$(QUICK_MARKERS)" $(FAST_TESTS)

# The flows against the simulator and PostgreSQL (integration/, chaos/), the DAGs run with dag.test(), in
# INTEGRATION_WORKERS pytest-xdist processes (each with its own database, simulator and Airflow home; the
# tests mostly wait on HTTP and PostgreSQL, so 2 workers pay off even on 2 cores). 0: one process.
INTEGRATION_WORKERS ?= 2
test-integration: install
	IYS_HYPOTHESIS_EXAMPLES=$(IYS_HYPOTHESIS_EXAMPLES) $(PYTEST) -q --durations=25 -n $(INTEGRATION_WORKERS) \
		-m "$(QUICK_MARKERS)" tests/integration tests/chaos

# What starts Airflow (standalone, Celery fleet, Chromium), waits on the wall clock or paces traffic.
test-stack: install
	IYS_HYPOTHESIS_EXAMPLES=$(IYS_HYPOTHESIS_EXAMPLES) $(PYTEST) -q --durations=25 -m "stack or real_time or timing"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

simulator: install
	$(BIN)/python -m iys_simulator --port 8099

clean:
	rm -rf $(VENV) .pytest_cache

# Local dev stack without Docker: İYS simulator + PostgreSQL + airflow standalone (Ctrl-C stops all).
.PHONY: airflow bench
airflow: install
	scripts/airflow_local.sh

# Every benchmark prints its tables and writes its raw figures as JSON to bench/results/<name>.json
# (another path: the script's --results); the files kept in the repository are the runs the docs quote.
# Initial-sync benchmark through Airflow against the simulator: `make bench USERS=100000`. The defaults are
# the headline setup of docs/benchmarks.md (İYS's 10 req/s, 20 + 0–40 ms per request, the default batch_size).
USERS ?= 100000,1000000
BENCH_RATE_LIMIT ?= 10
BENCH_LATENCY_MS ?= 20
BENCH_JITTER_MS ?= 40
bench: install
	$(BIN)/python bench/bench_initial_sync.py --users $(USERS) --rate-limit $(BENCH_RATE_LIMIT) \
		--latency-ms $(BENCH_LATENCY_MS) --jitter-ms $(BENCH_JITTER_MS)

# Local work alone (read + normalise + write, no İYS, no Airflow), with client and server CPU.
LOCAL_USERS ?= 1000000
.PHONY: bench-local
bench-local: install
	$(BIN)/python bench/bench_local_work.py --users $(LOCAL_USERS)

# The initial sync's planning alone: plan seconds and users/s at each size, a first plan and
# one with known users and leavers, and the multi-status calls the plan's batches imply against the floor.
PLAN_USERS ?= 100000,1000000
.PHONY: bench-plan
bench-plan: install
	$(BIN)/python bench/bench_plan.py --users $(PLAN_USERS)

# A night's outbox of RETs: half ONAY in İYS, half not; requests by endpoint, client errors, wall time.
OUTBOX_RETS ?= 10000
.PHONY: bench-outbox
bench-outbox: install
	$(BIN)/python bench/bench_outbox_rets.py --rets $(OUTBOX_RETS)

# Reading iys.sendable at SENDABLE_USERS users with SENDABLE_OPEN_RETS opt-outs not yet in İYS, before and
# after the view held them out (count per channel, audience export, one user); the ratio against 1.2×.
SENDABLE_USERS ?= 1000000
SENDABLE_OPEN_RETS ?= 10000
.PHONY: bench-sendable
bench-sendable: install
	$(BIN)/python bench/bench_sendable.py --users $(SENDABLE_USERS) --open-rets $(SENDABLE_OPEN_RETS)

# The shared learned request rate: N processes at rate 10 against İYS's strict 10/s window
# with 20–60 ms latency; requests, accepted req/s, 429 share, the learned rate over time, per process.
LIMITER_PROCESSES ?= 4
LIMITER_SECONDS ?= 300
.PHONY: bench-limiter
bench-limiter: install
	$(BIN)/python bench/bench_rate_limiter.py --processes $(LIMITER_PROCESSES) --seconds $(LIMITER_SECONDS)

# An incremental night: pull MOVEMENTS feed movements (IYS + HS streams), push OUTBOX outbox
# rows, collect the batch results; requests, req/s and wall time per phase against İYS's 10 req/s ceiling.
MOVEMENTS ?= 100000
OUTBOX ?= 10000
.PHONY: bench-incremental
bench-incremental: install
	$(BIN)/python bench/bench_incremental.py --movements $(MOVEMENTS) --outbox $(OUTBOX)

# The İYS page's panel queries: a throw-away database filled for DASHBOARD_USERS users,
# each panel's query timed in the page's read-only transaction against the 300 ms target.
DASHBOARD_USERS ?= 1000000
.PHONY: bench-dashboard
bench-dashboard: install
	$(BIN)/python bench/bench_dashboard.py --users $(DASHBOARD_USERS)

# Push end to end under airflow standalone: PUSH_MOVEMENTS citizen RETs over PUSH_SECONDS, each until the
# user is out of iys.sendable.
PUSH_MOVEMENTS ?= 1000
PUSH_SECONDS ?= 60
.PHONY: bench-push
bench-push: install
	$(BIN)/python bench/bench_push.py --movements $(PUSH_MOVEMENTS) --seconds $(PUSH_SECONDS)

# Fault matrix (tests/chaos): one line per scenario — faults, requests, retries, success ratio, result.
JUNK_ROWS ?= 1000000
.PHONY: chaos
chaos: install
	$(BIN)/python bench/chaos.py --junk-rows $(JUNK_ROWS)

# The `make airflow` stack in headless Chromium (Debian's chromium, driven by Playwright), and
# docker-compose.yaml resolved by `docker compose config`; both are part of `make test` too.
.PHONY: ui-check screenshots
ui-check: install
	$(PYTEST) -q tests/ui

# Refresh docs/*.png (shown in README.md and docs/) from the UI tests' browser session (the İYS page's too).
screenshots: install
	IYS_SCREENSHOT_DIR=docs $(BIN)/python -m pytest -q tests/ui/test_airflow_ui.py tests/ui/test_iys_page.py

# The daily reconciliation's hash: one day of movements streamed from Postgres in İYS's file
# format into SHA-384, at each day size; seconds and peak RSS (memory must not grow with the day).
RECONCILIATION_DAYS ?= 100000,1000000
.PHONY: bench-reconciliation
bench-reconciliation: install
	$(BIN)/python bench/bench_reconciliation.py --days $(RECONCILIATION_DAYS)

# The reconciliation's repair path: İYS's file of one day downloaded over local HTTP, read and diffed
# in Postgres, the REPAIR_MISSING share stored through the feed's rules, re-hashed; seconds per step and
# peak RSS at each day size (memory must not grow with the day). REPAIR_READING: İYS's file's reading.
REPAIR_DAYS ?= 100000,1000000
REPAIR_MISSING ?= 0.1
REPAIR_READING ?= literal
.PHONY: bench-reconciliation-repair
bench-reconciliation-repair: install
	$(BIN)/python bench/bench_reconciliation_repair.py --days $(REPAIR_DAYS) --missing $(REPAIR_MISSING) --reading $(REPAIR_READING)
