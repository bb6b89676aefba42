# The two commands of the README:
#   make demo   runs the demo site on SQLite (http://127.0.0.1:5000)
#   make test   runs every test: ruff, mypy, the snippet's node tests, and pytest (incl. Chromium)
#               twice: on the lowest declared versions with Python 3.10 and on the newest with 3.13
# Each installs what it needs first. PostgreSQL and Redis tests run when
# UTM_TRACKER_TEST_POSTGRES / UTM_TRACKER_TEST_REDIS are set (see .ci/run), else they skip loudly.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint build bench docs clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

demo: $(BIN)/.installed
	$(BIN)/flask --app demo run

build: node_modules/.installed
	npm run build

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check collector tests demo.py
	$(BIN)/mypy

test: $(BIN)/.installed node_modules/.installed
	scripts/ensure-chromium
	$(MAKE) lint
	npm test
	scripts/test-matrix lowest
	scripts/test-matrix newest

docs: $(BIN)/.installed
	$(BIN)/sphinx-build -W --keep-going -b html docs build/docs/html
	@echo "Open build/docs/html/index.html"

bench: $(BIN)/.installed
	scripts/ensure-chromium
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .venv-lowest .venv-newest node_modules build dist *.egg-info collector/*.egg-info instance
