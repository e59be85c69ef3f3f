# `make run` starts the app, `make test` runs the whole suite, `make bench` writes docs/benchmarks.md.
# Each creates/updates .venv at the repo root first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP := $(VENV)/.dev-installed
ARGS ?=

.PHONY: run test lint docs bench system-deps tiny-model clean

$(RUNTIME_STAMP): requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $@

$(DEV_STAMP): $(RUNTIME_STAMP) requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

system-deps:
	bash scripts/apt-deps.sh

run: $(RUNTIME_STAMP)
	$(PY) app.py $(ARGS)

# llama-server is built once into the user cache (7-10 minutes on 2 cores) before the tests,
# which use it, so that no test's own time limit pays for the build.
test: lint system-deps
	$(PY) -m tools.llama_cpp build >/dev/null
	$(PY) -m pytest $(PYTEST_ARGS)

# Lint, format and types; part of `make test`, so CI fails on any of them.
lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# README's table of flags, generated from the declarations in assistant/settings.py.
docs: $(RUNTIME_STAMP)
	$(PY) -m tools.flag_table README.md

bench: $(DEV_STAMP) system-deps
	$(PY) -m bench $(ARGS)

# A tiny random SmolVLM-architecture model to try the app with on machines without real weights.
tiny-model: $(RUNTIME_STAMP)
	$(PY) -m tools.random_models idefics3 .cache/tiny-smolvlm

clean:
	rm -rf $(VENV) .cache .pytest_cache
