# One command to run the gateway on the local store, one to run every test, one fast tier.
# Every install comes from the hashed locks; `make lock` regenerates them from pyproject.toml.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --quiet --require-hashes
# The tests that need no etcd, Consul, browser, wrk or root, and not the schema fuzzer
# (markers: tests/conftest.py).
FAST   := not (etcd or consul or browser or wrk or root or fuzz)
# `make audit` fails when the vulnerability database is unreachable; `make test` only
# says so loudly (CI machines may reach no more than the package index).
AUDIT_UNREACHABLE ?= fail

.PHONY: run test check install install-test lock lint audit minimums stores deps bench clean

run: install .env ## install, then run the gateway on the local store (config.yaml)
	$(BIN)/space-cloud run

test: AUDIT_UNREACHABLE = warn
test: install-test deps lint audit minimums ## install everything (etcd, Consul included), run it all
	$(BIN)/pytest

# Three workers, a file each at a time: a file's module fixtures (a shared gateway, the
# failing starts of tests/test_cli.py) then run once, not once per worker, and a third
# worker runs while the others wait on the gateway processes they start. On 2 cores,
# three measured 51 s wall, 76 s CPU; two 59 s and 74 s; four 55 s and 81 s.
check: lint ## the fast tier: lint, then every test that needs no server, browser, wrk or root (nor the fuzzer)
	$(BIN)/pytest -n 3 --dist loadfile -m "$(FAST)"

install: $(BIN)/space-cloud

install-test: install $(BIN)/pytest

$(BIN)/space-cloud: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

$(BIN)/pytest: requirements-test.lock $(BIN)/space-cloud
	$(PIP) -r requirements-test.lock
	@touch $@

LOCK_COMPILE := $(BIN)/uv pip compile pyproject.toml --quiet --generate-hashes --universal \
	--python-version 3.11 --no-emit-index-url --no-emit-find-links \
	--custom-compile-command "make lock"

lock: install-test ## regenerate the locks from pyproject.toml (pins kept; UPGRADE=--upgrade)
	$(LOCK_COMPILE) $(UPGRADE) -o requirements.lock
	$(LOCK_COMPILE) $(UPGRADE) --extra test -c requirements.lock -o requirements-test.lock
	$(LOCK_COMPILE) $(UPGRADE) --extra test --extra bench -c requirements-test.lock \
		-o requirements-bench.lock
	@! grep -nE '://|index-url|find-links' requirements*.lock  # no registry address committed

lint: install-test ## ruff (lint and format) and mypy, all clean
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

audit: install-test ## known vulnerabilities in the locked dependencies (needs the network)
	PATH="$(CURDIR)/$(BIN):$$PATH" AUDIT_UNREACHABLE=$(AUDIT_UNREACHABLE) \
		bash scripts/audit.sh requirements-test.lock

minimums: install-test ## the lowest versions pyproject.toml allows start and serve
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/check-minimums.sh

stores: ## install etcd and Consul when they are not on PATH
	bash scripts/install-stores.sh

deps: stores ## and Chromium (dashboard test) and wrk (benchmark smoke test)
	bash scripts/install-browser.sh
	bash scripts/install-wrk.sh

.env: ## first run: a .env with a random admin password and token secret
	bash scripts/make-env.sh

bench: install-test deps ## every benchmark at full size (several minutes), then the plot
	$(PIP) -r requirements-bench.lock
	$(BIN)/python -m bench.propagation
	$(BIN)/python -m bench.fanout
	$(BIN)/python -m bench.reads
	$(BIN)/python -m bench.scale
	$(BIN)/python -m bench.store_scale
	$(BIN)/python -m bench.store_writes
	$(BIN)/python -m bench.resume
	$(BIN)/python -m bench.plot

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info
