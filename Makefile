# bcd — two entry points: `make run` (serve the bundled model) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip

.PHONY: run test test-slow lint format bench clean vendor

# OpenSeadragon (the web app's deep-zoom viewer), vendored from npm at build time and
# served by `bcd serve` itself, so the app works offline; without it the app says so and
# falls back to its thumbnail viewer.
OSD_VERSION := 6.1.1
OSD_DIR     := bcd/serving/web/vendor/openseadragon
OSD_STAMP   := $(OSD_DIR)/.openseadragon-$(OSD_VERSION)

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

vendor: $(OSD_STAMP)

$(OSD_STAMP):
	@if command -v npm >/dev/null 2>&1; then \
	  tmp=$$(mktemp -d) && \
	  npm pack --silent --pack-destination "$$tmp" openseadragon@$(OSD_VERSION) >/dev/null && \
	  tar -xzf "$$tmp/openseadragon-$(OSD_VERSION).tgz" -C "$$tmp" && \
	  rm -rf $(OSD_DIR) && mkdir -p $(OSD_DIR) && \
	  cp -R "$$tmp/package/build/openseadragon/." "$$tmp/package/LICENSE.txt" $(OSD_DIR)/ && \
	  rm -f $(OSD_DIR)/*.map $(OSD_DIR)/openseadragon.js && touch $@ \
	  || echo "could not vendor openseadragon@$(OSD_VERSION) from npm: the web app falls back to its thumbnail viewer"; \
	  rm -rf "$$tmp"; \
	else \
	  echo "npm not found: the web app falls back to its thumbnail viewer (install npm, then make vendor)"; \
	fi

run: vendor $(VENV)/.serve
	$(BIN)/bcd serve --bundled

test: vendor $(VENV)/.dev
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
