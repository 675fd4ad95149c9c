# One command to run the gateway on the local store, one to run every test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test install install-test stores deps lint bench clean

run: install .env ## install, then run the gateway on the local store (config.yaml)
	$(BIN)/space-cloud run

test: install-test deps lint ## install everything the tests need (etcd, Consul included), run them all
	$(BIN)/pytest

install: $(BIN)/space-cloud

install-test: install $(BIN)/pytest

$(BIN)/space-cloud: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	@touch $@

$(BIN)/pytest: pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

stores: ## install etcd and Consul when they are not on PATH
	bash scripts/install-stores.sh

deps: stores ## and Chromium (dashboard test) and wrk (benchmark smoke test)
	bash scripts/install-browser.sh
	bash scripts/install-wrk.sh

lint:
	$(BIN)/ruff check .

.env: ## first run: a .env with a random admin password and token secret
	bash scripts/make-env.sh

bench: install-test deps ## every benchmark at full size (several minutes), then the plot
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m bench.propagation
	$(BIN)/python -m bench.fanout
	$(BIN)/python -m bench.reads
	$(BIN)/python -m bench.scale
	$(BIN)/python -m bench.plot

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
