# `make demo` and `make test` work on a fresh clone with only python3 installed:
# they create .venv and install what they need from the package registries.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export JAX_PLATFORMS ?= cpu

.PHONY: demo test test-slow bench lint docs clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,data]"
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[bench]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/ndes demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m "not slow" -n 2

test-slow: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m slow

bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/overhead.py

lint: $(VENV)/.installed
	$(BIN)/ruff check ndes tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
