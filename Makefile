# accel: the two commands a new user needs are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
EXAMPLE_TREE := examples/gpu-server

.PHONY: install run test lint typecheck system-packages unit bench clean

install: $(STAMP)

# Reinstall only when the project's dependencies change.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

run: install
	./scripts/ensure-pci-ids
	$(BIN)/accel up --state-dir .state --fallback-sysfs-root $(EXAMPLE_TREE)

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

# Coverage of src/accel by the tests' own processes (and their xdist workers); a run
# below the floor fails: raise it as tests are added. The components tests/integration
# starts as processes are not traced: it would slow the very processes whose timing
# those tests exercise, and those tests are most of make test's time.
COVERAGE_FLOOR := 83

# worksteal: a worker that runs dry takes half of another's queue, so the run does not
# end with one worker alone on a queue of long tests (tests/conftest.py puts the
# modules that start processes first).
unit: install
	$(BIN)/python -m pytest -n auto --maxprocesses=4 --dist worksteal \
		--cov --cov-report=term --cov-fail-under=$(COVERAGE_FLOOR)

# What the tests need besides .venv: a PostgreSQL server (the tests start a throwaway
# one), the PCI id database (names for discovery), Prometheus (promtool checks
# deploy/prometheus/'s alert rules and the dashboard's queries; the server scrapes a
# test stack and runs the dashboard's queries), Chromium (the fleet
# page's browser tests, driven by Playwright), and OpenStack Placement, Keystone and
# Nova 34's code in venvs of their own under ~/.cache/accel. Installed where missing.
system-packages:
	./scripts/ensure-postgres
	./scripts/ensure-pci-ids
	./scripts/ensure-prometheus
	./scripts/ensure-chromium
	./scripts/ensure-placement
	./scripts/ensure-keystone
	./scripts/ensure-nova-client

test: lint typecheck system-packages unit

bench: install
	$(BIN)/python -m bench.run --append docs/benchmarks

clean:
	rm -rf $(VENV) .state .mypy_cache .ruff_cache .pytest_cache
