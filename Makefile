# Conveyor — every target prepares .venv on its own, so a fresh clone needs nothing else.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# Three pytest-xdist workers, each with its own Prefect server (much of the suite waits on
# child processes rather than the CPU); PYTEST_XDIST= runs in one process.
PYTEST_XDIST ?= -n 3 --dist loadgroup

.DEFAULT_GOAL := help

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock requirements-dev.lock
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "Installing Conveyor and its pinned dependencies into $(VENV) ..."
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -r requirements-dev.lock
	@$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

venv: $(STAMP) ## Create or update .venv

up: $(STAMP) ## Run the whole platform on embedded defaults (SQLite, Prefect, worker, DuckDB)
	$(VENV)/bin/conveyor up

test: $(STAMP) ## Run the test suite (PostgreSQL tests too when CONVEYOR_TEST_POSTGRES_URL is set)
	$(PY) -m pytest $(PYTEST_XDIST) $(PYTEST_ARGS)

lint: $(STAMP) ## Ruff lint + format check, mypy on src/
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy src

load: $(STAMP) ## API load: 50 clients for 2 minutes on PostgreSQL; fails on any error
	$(PY) bench/load.py --clients 50 --seconds 120 --floor-seconds 30

load-ci: $(STAMP) ## The load test's short profile (CI): 50 clients for 20 seconds
	$(PY) bench/load.py --clients 50 --seconds 20 --floor-seconds 6

soak: $(STAMP) ## Chaos soak (tests/system): whole platform on PostgreSQL, 10 minutes of kills
	$(PY) -m tests.system.soak --profile full $(SOAK_ARGS)

soak-ci: $(STAMP) ## The chaos soak's CI profile: 2 minutes of kills, ~4.5 minutes in all
	$(PY) -m tests.system.soak --profile ci $(SOAK_ARGS)

fuzz: $(STAMP) ## schemathesis, every check, on PostgreSQL as viewer, editor, admin: >= 50,000 cases
	$(PY) -m tests.fuzz.run --profile full $(FUZZ_ARGS)

fuzz-ci: $(STAMP) ## The fuzz's CI profile: a few thousand cases per role, seeded, under 3 minutes
	$(PY) -m tests.fuzz.run --profile ci $(FUZZ_ARGS)

bench: $(STAMP) ## Run the benchmarks (not tests); results go to docs/benchmarks.md by hand
	$(PY) bench/run_all.py

bench-topology: $(STAMP) ## Prefect scaled out as processes (2 API servers, services, PostgreSQL, Redis on 127.0.0.1:6379)
	$(PY) bench/prefect_topology.py --n 300 --live 4 --minutes 3

lock: ## Re-pin requirements*.lock from pyproject.toml (needs the network)
	rm -rf /tmp/conveyor-lock && python3 -m venv /tmp/conveyor-lock
	/tmp/conveyor-lock/bin/pip install -q . && /tmp/conveyor-lock/bin/pip freeze --exclude-editable | grep -v '^conveyor' > requirements.lock
	/tmp/conveyor-lock/bin/pip install -q '.[dev]' && /tmp/conveyor-lock/bin/pip freeze --exclude-editable | grep -v '^conveyor' > requirements-dev.lock

.PHONY: help venv up test lint bench bench-topology lock load load-ci soak soak-ci fuzz fuzz-ci
