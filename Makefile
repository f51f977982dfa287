# rewardmiles — every task a developer or CI runs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000

.DEFAULT_GOAL := help
.PHONY: help install run test test-sqlite lint format typecheck openapi lock verify bench bench-quick reliability mutation mutation-sample vendor console-screenshots clean

help: ## List the tasks
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-19s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements-dev.lock pyproject.toml client/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "rewardmiles needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e . -e ./client
	@touch $@

install: $(BIN)/.installed ## Create .venv with the locked dependencies and the package

run: install ## Serve on SQLite (./rewardmiles.db) with demo data (PORT=8000)
	$(BIN)/rewardmiles serve --demo --port $(PORT)

# The coverage gate (docs/testing.md): lines and branches of the money packages, each >= 95 %,
# over the whole suite on both dialects, server and CLI processes included ([tool.coverage]).
COVERAGE_MIN ?= 95
COVERAGE_INCLUDE := src/rewardmiles/ledger/*,src/rewardmiles/issuance/*,src/rewardmiles/idempotency/*

test: install ## The whole suite on SQLite and PostgreSQL under coverage, the coverage gate, lint, type-check
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest
	$(BIN)/coverage combine --quiet
	$(BIN)/coverage report --include='$(COVERAGE_INCLUDE)' --fail-under=$(COVERAGE_MIN)
	$(BIN)/python -m tests.coverage_gate --fail-under $(COVERAGE_MIN)
	$(MAKE) --no-print-directory lint typecheck

test-sqlite: install ## Run the suite on SQLite only (no PostgreSQL needed; no coverage)
	REWARDMILES_TEST_DATABASES=sqlite $(BIN)/python -m pytest

lint: install ## ruff lint and format check
	$(BIN)/ruff check src tests bench client examples tools
	$(BIN)/ruff format --check src tests bench client examples tools

format: install ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix src tests bench client examples tools
	$(BIN)/ruff format src tests bench client examples tools

typecheck: install ## mypy --strict on the service, its tests and benchmarks, and the partner SDK
	$(BIN)/mypy
	$(BIN)/mypy --strict client/src/rewardmiles_client

openapi: install ## Regenerate the committed openapi.json from the app
	$(BIN)/rewardmiles openapi -o openapi.json

LOCK := uv pip compile pyproject.toml --python-version 3.11 --generate-hashes --custom-compile-command "make lock"

lock: ## Re-resolve requirements*.lock with hashes, keeping their pins (needs uv; UPGRADE=1 upgrades)
	$(LOCK) $(if $(UPGRADE),--upgrade) -o requirements.lock
	$(LOCK) $(if $(UPGRADE),--upgrade) --extra dev -o requirements-dev.lock

bench: install ## Benchmark: pgbench and HTTP ceilings vs rewardmiles (bench/results/latest.md)
	$(BIN)/python -m bench.run

bench-quick: install ## A one-minute smoke run of the benchmark
	$(BIN)/python -m bench.run --quick

reliability: install ## Long crash profile (25+ SIGKILLs) and a real PostgreSQL restart under traffic
	REWARDMILES_TEST_DATABASES=postgresql REWARDMILES_CRASH_PROFILE=long REWARDMILES_TEST_PG_RESTART=1 \
	  REWARDMILES_CRASH_REPORT=$${REWARDMILES_CRASH_REPORT:-crash-report.json} \
	  $(BIN)/python -m pytest -s -p no:cacheprovider tests/e2e/test_crash.py tests/e2e/test_database_faults.py

mutation: install ## Mutation testing of the money modules (MODULES="ledger clock", DATABASES, E2E=1); docs/testing.md
	$(BIN)/python -m tests.mutation $(MODULES) --databases $(or $(DATABASES),sqlite) $(if $(E2E),--e2e)

mutation-sample: install ## CI's bounded sample: mutants of the money functions changed in the last 24 h of commits
	$(BIN)/python -m tests.mutation --changed-within-hours 24 --gated-only --max-seconds 420

# The console's vendored front-end assets (docs/operations.md): fetched with npm pack at the
# versions console/static/vendor/VENDORED.json records, or UPDATE="htmx.org@X.Y.Z uplot@X.Y.Z".
vendor: install ## Re-fetch the console's vendored htmx and uPlot (npm pack; UPDATE=name@version) and rewrite VENDORED.json
	$(BIN)/python -m tools.vendor_assets $(UPDATE)

console-screenshots: install ## Browser tests on SQLite, saving a full-page PNG of each console page to docs/console
	REWARDMILES_TEST_DATABASES=sqlite REWARDMILES_CONSOLE_SCREENSHOTS=docs/console $(BIN)/python -m pytest tests/browser

verify: install ## Check the ledger invariants (REWARDMILES_DATABASE_URL)
	$(BIN)/rewardmiles ledger verify

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache mutants .coverage .coverage.* htmlcov
