# bcd — two entry points: `make run` (serve the bundled model) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip

.PHONY: run test test-slow lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Serving needs no torch: a fast install.
$(VENV)/.serve: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e '.[serve]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e '.[serve,train,slides,dev]'
	touch $@ $(VENV)/.serve

run: $(VENV)/.serve
	$(BIN)/bcd serve --bundled

test: $(VENV)/.dev
	$(BIN)/ruff check bcd tests bench examples
	$(BIN)/ruff format --check bcd tests bench examples
	$(BIN)/mypy bcd
	$(BIN)/python -m pytest -q

test-slow: $(VENV)/.dev
	$(BIN)/python -m pytest -q -m slow

lint: $(VENV)/.dev
	$(BIN)/ruff check bcd tests bench examples
	$(BIN)/ruff format --check bcd tests bench examples
	$(BIN)/mypy bcd

format: $(VENV)/.dev
	$(BIN)/ruff check --fix bcd tests bench examples
	$(BIN)/ruff format bcd tests bench examples

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
