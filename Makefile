# The two set-up commands of the README: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-all perf clean

$(BIN)/hashbench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[test,report,ray]'
	@touch $@

install: $(BIN)/hashbench

demo: install  ## run the embedded default benchmark and print its attack x defense table
	$(BIN)/hashbench run benchmarks/quick.toml

test: install  ## the default (fast) test suite, as CI runs it
	$(BIN)/python -m pytest -q

test-all: install  ## every test, slow ones included
	$(BIN)/python -m pytest -q -m ''

perf: install  ## the performance scripts of benchmarks/perf
	for script in benchmarks/perf/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf results/quick results/smoke .pytest_cache
