# The README's two commands: `make serve` and `make test`. Both build .venv themselves, from
# the committed lock (uv.lock), with this machine's Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
UV := .uv/bin/uv

# uv puts exactly what uv.lock says into .venv, with $(PYTHON); it never downloads a Python.
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never

.PHONY: serve test lint format bench lock upgrade fresh-test clean

# uv itself, in a virtualenv of its own (a sync of .venv would remove it from there), pinned
# with its hashes: the one install that does not come from uv.lock.
$(UV): requirements-uv.txt
	$(PYTHON) -m venv .uv
	.uv/bin/python -m pip install --quiet --require-hashes -r requirements-uv.txt
	touch $@

# Stamp files: sync again only when pyproject.toml or uv.lock change. --locked refuses a
# uv.lock that no longer matches pyproject.toml (run `make lock`). The dev set includes the
# runtime set; a runtime-only sync removes the test tools, so it forgets the dev stamp.
$(VENV)/.runtime: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --no-dev --quiet
	rm -f $(VENV)/.dev
	touch $@

$(VENV)/.dev: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --quiet
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

# uv.lock again from pyproject.toml, keeping every pin that still fits; `upgrade` moves every
# pin to the newest release its range allows. One package: .uv/bin/uv lock --upgrade-package NAME
lock: | $(UV)
	$(UV) lock

upgrade: | $(UV)
	$(UV) lock --upgrade

# What CI does: a clone of the committed tree (not the work tree) in a temporary folder, with
# ../shared beside it as CI has it, and .ci/run there. Uncommitted changes are not in it.
fresh-test:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	git clone --quiet --no-hardlinks . "$$tmp/main" && \
	if [ -d ../shared ]; then cp -r ../shared "$$tmp/shared"; fi && \
	echo "make fresh-test: $$(git rev-parse --short HEAD) in $$tmp/main" && \
	start=$$(date +%s) && \
	(cd "$$tmp/main" && CI=true bash .ci/run </dev/null); rc=$$?; \
	echo "make fresh-test: exit $$rc after $$(( $$(date +%s) - start )) s"; exit $$rc

bench: $(VENV)/.dev
	$(BIN)/python bench/signature.py
	$(BIN)/python bench/search.py
	$(BIN)/python bench/quality.py
	$(BIN)/python bench/http.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/embeddings.py
	$(BIN)/python bench/embeddings_index.py

clean:
	rm -rf $(VENV) .uv .mypy_cache .pytest_cache .ruff_cache
