# The two commands of the README. Everything else is detail.
PYTHON ?= python3
VENV := .venv
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: serve test lint venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

## Install and start the gateway on its embedded defaults (SQLite in ~/.local/share/jetty).
serve: venv
	$(VENV)/bin/jetty serve

## Install what the tests need (system parts included) and run the whole suite.
test: venv
	./scripts/install-test-deps.sh
	$(VENV)/bin/jetty sandbox build-image
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -n 2

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
