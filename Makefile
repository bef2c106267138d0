# The set-up commands of the README: `make run`, `make test` and `make chaos`. Everything they need is
# installed from here (the venv and the package, plus the third-party NATS clients and Debian's
# nats-server that the interop suite compares against).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 4222
HTTP_PORT ?= 8222
DATA_DIR ?= ./data
MINUTES ?= 30

.PHONY: install run test test-deps chaos chaos-deps soak bench bench-mailbox bench-cluster bench-fetch fuzz clean

$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing mq9cluster with its test extras"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,bench,chaos]'
	@touch $@

install: $(STAMP)

run: install
	$(VENV)/bin/mq9cluster start -a $(HOST) -p $(PORT) -m $(HTTP_PORT) --data-dir $(DATA_DIR)

test-deps:
	@bash scripts/install-test-deps.sh

test: install test-deps
	$(PY) -m pytest

chaos-deps:
	@bash scripts/install-chaos-deps.sh

# The gating chaos subset (fixed seeds, a few minutes; needs root): see docs/reliability.md.
chaos: install chaos-deps
	$(PY) -m chaos --table .chaos-runs/ci-table.md ci

# Random scenarios and seeds for MINUTES; failing runs keep their history and data dirs.
soak: install chaos-deps
	$(PY) -m chaos --table .chaos-runs/soak-table.md soak --minutes $(MINUTES)

bench: install test-deps
	$(PY) bench/core_pubsub.py

bench-mailbox: install test-deps
	$(PY) bench/mailbox.py

bench-cluster: install test-deps
	$(PY) bench/cluster.py

bench-fetch: install test-deps
	$(PY) bench/fetch.py

# The long fuzz run (CI runs tests/fuzz/test_fuzz.py, a short bounded budget, with `make test`).
FUZZ_RUNS ?= 1000000
fuzz: install
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[fuzz]'
	$(PY) -m tests.fuzz.run parser --runs $(FUZZ_RUNS)
	$(PY) -m tests.fuzz.run mq9 --runs $(FUZZ_RUNS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
