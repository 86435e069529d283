# `make demo` and `make test` work on a fresh clone with only python3 installed:
# they create .venv and install what they need from the package registries.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export JAX_PLATFORMS ?= cpu

.PHONY: demo test test-slow bench lint docs docs-check docs-index docs-serve notebooks clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,data,docs]"
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[bench]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/ndes demo

test: $(VENV)/.installed docs-check notebooks
	$(BIN)/python -m pytest -q -m "not slow" -n 2 --durations=15

# The site: `mkdocs build --strict` fails on any warning (a broken link or anchor, an API
# entry that does not resolve). Notebooks are rendered from their stored outputs.
docs-check: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -q

docs: docs-check
	@echo "site in build/site/ (make docs-serve to browse it)"

docs-serve: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

# docs/index.md is README.md with its docs/ links made relative (tests/test_docs.py checks).
docs-index:
	sed 's#(docs/#(#g' README.md > docs/index.md

# Every notebook in examples/ top to bottom, in quick mode (NDES_QUICK=1: small sizes).
# -O0: the notebooks' quick mode is compile-bound, as the test suite is (tests/conftest.py).
notebooks: $(VENV)/.installed
	NDES_QUICK=1 XLA_FLAGS="$${XLA_FLAGS:---xla_backend_optimization_level=0}" $(BIN)/python -m pytest -q -p no:cacheprovider --nbmake --nbmake-timeout=600 -n 2 examples/

test-slow: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m slow

bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/overhead.py

lint: $(VENV)/.installed
	$(BIN)/ruff check ndes tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
