# The README's two commands: `make serve` and `make test`. Both build .venv themselves.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve test lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"

# Stamp files: reinstall only when pyproject.toml changes.
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e . --group dev
	touch $@ $(VENV)/.runtime

serve: $(VENV)/.runtime
	$(BIN)/lookalike serve

lint: $(VENV)/.dev
	$(BIN)/ruff check lookalike tests bench
	$(BIN)/ruff format --check lookalike tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(VENV)/.dev
	$(BIN)/ruff format lookalike tests bench
	$(BIN)/ruff check --fix lookalike tests bench

# pytest exits 5 when it collects nothing: say so loudly instead of passing or failing quietly.
test: lint
	@$(BIN)/pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected NO TESTS" >&2; exit 0; fi; \
	exit $$rc

bench: $(VENV)/.dev
	$(BIN)/python bench/signature.py
	$(BIN)/python bench/search.py
	$(BIN)/python bench/quality.py
	$(BIN)/python bench/http.py
	$(BIN)/python bench/embeddings.py
	$(BIN)/python bench/embeddings_index.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
