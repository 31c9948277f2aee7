# after: the commands a newcomer needs. Everything installs itself from nothing.
#   make run    what running needs: the package and its dependencies, pouchdb-server
#   make test   that, and the test tools: pytest, hypothesis, ruff, playwright, Chromium, faketime
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
AFTER  := $(BIN)/after
PORT   ?= 5984
export AFTER_HOME ?= $(CURDIR)/var

.PHONY: install install-run bytecode browser faketime test unit integration acceptance cluster chaos sim server server-stop run stop lint bench bench-cluster clean

# everything: what running needs, and the test tools
install: install-run $(VENV)/.installed browser faketime

# what running needs, and nothing more (no apt-get: macOS too)
install-run: $(VENV)/.run-installed node_modules/.installed bytecode

# the bytecode of our own modules, written ahead (only what changed is compiled again): where
# PYTHONDONTWRITEBYTECODE is set, as on CI machines, every `after` process would otherwise
# compile them all again from source, 0.13 s of CPU before it does anything (pip writes the
# bytecode of what it installs, the dependencies, itself)
bytecode: $(VENV)/.run-installed
	@$(BIN)/python -m compileall -q after jobs bench tests scripts

# Debian's chromium, for the dashboard's browser tests (installed only where missing)
browser:
	@sh scripts/install-browser.sh

# Debian's faketime, for the clock-skew tests (installed only where missing)
faketime:
	@sh scripts/install-faketime.sh

$(VENV)/.run-installed: setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed: $(VENV)/.run-installed setup.cfg setup.py
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: install
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

integration: install
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

acceptance: install
	$(BIN)/python -m pytest tests/acceptance $(PYTEST_ARGS)

# a 3-node CouchDB 3 cluster from ../shared/couchdb (AFTER_TEST_COUCHDB_HOME), started and stopped by the tests
cluster: install
	$(BIN)/python -m pytest tests/cluster $(PYTEST_ARGS)

# chaos on a 3-node CouchDB cluster of its own (tests/chaos): random seeds for CHAOS_SECONDS,
# each checked; AFTER_CHAOS_SEED=N (or N,M,...) replays seeds, CHAOS_SCENARIO=NAME plays a
# hand-made scenario. Histories and reports in $(AFTER_HOME)/chaos/SEED/.
CHAOS_SECONDS ?= 600
CHAOS_WINDOW  ?= 30
chaos: install
	$(BIN)/python -m tests.chaos --seconds $(CHAOS_SECONDS) --window $(CHAOS_WINDOW) \
		$(if $(CHAOS_SCENARIO),--scenario $(CHAOS_SCENARIO)) $(CHAOS_ARGS)

# the deterministic simulation of the worker's core (tests/sim): SIM_SEEDS seeds from SIM_FIRST
SIM_SEEDS ?= 2000
SIM_FIRST ?= 0
sim: install
	AFTER_SIM_SEEDS=$(SIM_SEEDS) AFTER_SIM_FIRST=$(SIM_FIRST) $(BIN)/python -m pytest tests/sim -q $(PYTEST_ARGS)

server: install-run
	$(AFTER) server start --port $(PORT) --data $(AFTER_HOME)/data

server-stop:
	-$(AFTER) server stop

run: install-run
	@bash scripts/run-demo.sh

stop:
	-$(AFTER) stop demo
	-$(AFTER) server stop

lint: install
	$(BIN)/ruff check after tests bench jobs

# APScheduler 3 (and SQLAlchemy for its sqlite job store): the bench's comparison only
$(VENV)/.bench-installed: $(VENV)/.installed setup.cfg
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

bench: install $(VENV)/.bench-installed
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-cluster: install
	$(BIN)/python -m bench.cluster

clean:
	-$(AFTER) server stop 2>/dev/null
	rm -rf $(VENV) node_modules var build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
