# The two commands of the README, each doing its own set-up on a fresh machine:
#   make run    runs task.py on this machine and prints the aggregate
#   make cloud  rehearses the azure run on this machine (Azurite and the Batch emulator, --emulate)
#   make test   runs every test (Azurite and the Batch emulator start by themselves)
# and one for the figures of the README:
#   make bench

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run cloud test bench clean

run: $(VENV)/.installed
	$(PY) controller.py

cloud: $(VENV)/.installed node_modules/.installed
	$(PY) controller.py --backend azure --emulate $(if $(shell $(PY) -c "import docker; docker.from_env(timeout=5).ping()" 2>/dev/null && echo yes),--build $(if $(BASE_IMAGE),--base-image $(BASE_IMAGE)))

# Test files run in TEST_WORKERS processes, each file whole in one of them
# (its fixtures, servers and run names are its own).
TEST_WORKERS ?= 3

test: $(VENV)/.dev-installed node_modules/.installed
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

bench: $(VENV)/.dev-installed node_modules/.installed
	$(PY) -m bench

$(VENV)/.installed: requirements.txt requirements-worker.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements-dev.txt $(VENV)/.installed
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { echo "Azurite (the storage emulator) needs Node.js 18 or later with npm: install it, then run make again"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

clean:
	rm -rf $(VENV) node_modules runs
