# snapdeck — the two commands the README promises:
#   make run [DIR=path]   install, then open the TUI on DIR (default: here) over the embedded repository
#   make test             install, then run the whole test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DIR ?= .
PYTEST_ARGS ?=

.PHONY: install run test lint bench clean screenshots system-deps

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

run: install
	$(BIN)/snapdeck ui "$(DIR)"

# Reference tools the tests use as oracles (restic for retention). Installed when missing and
# we are root with apt-get; elsewhere those tests skip (or fail under CI=true).
system-deps:
	@if ! command -v restic >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing restic (test oracle) with apt-get"; \
		apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic >/dev/null; \
	fi

test: install system-deps
	$(BIN)/ruff check backend tui tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy backend
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check backend tui tests bench
	$(BIN)/ruff format --check backend tui tests bench

bench: install
	$(BIN)/python bench/run.py

screenshots: install
	$(BIN)/python screenshots/make_screenshots.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
