PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo serve test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install the package with dev tools

demo: $(STAMP)  ## run one full emulated call on loopback, no credentials needed
	$(BIN)/caller-engine simulate

serve: $(STAMP)  ## run the server with the environment / .env configuration
	$(BIN)/caller-engine serve

test: lint typecheck unit  ## lint, typecheck and run the test suite

lint: $(STAMP)
	$(BIN)/ruff check caller_engine tests
	$(BIN)/ruff format --check caller_engine tests

typecheck: $(STAMP)
	$(BIN)/mypy caller_engine

unit: $(STAMP)
	$(BIN)/pytest -q

bench: $(STAMP)  ## latency / CPU benchmark through the real server
	$(BIN)/caller-engine bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
