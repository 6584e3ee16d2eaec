# Two commands set everything up on a fresh machine:
#   make demo   creates .venv, installs kreg, runs the end-to-end demo
#   make test   creates .venv, installs kreg with its test extras, runs the whole suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test bench mutants schema kernels clean help

help:
	@echo "make demo    - install and run the end-to-end demo"
	@echo "make test    - install with test extras and run the test suite"
	@echo "make bench   - run the benchmarks (prints ratios against anchors)"
	@echo "make mutants - break ~20 behaviours one line at a time; the tests must fail on each"
	@echo "make schema  - regenerate schema/v1 from the pydantic models"
	@echo "make kernels - rebuild kernels_db/builtin.h5 from kernels_db/kernels.toml"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# The demo trains a tiny CNN, emits Keras layers and draws PNGs: tensorflow and plot extras.
$(VENV)/.demo: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[tensorflow,plot]'
	@touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[test,tensorflow,plot]'
	@touch $@ $(VENV)/.demo

demo: $(VENV)/.demo
	$(BIN)/python -m registry._demo

test: $(VENV)/.test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.test
	$(BIN)/python benchmarks/bench_store.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/bench_tf.py

# Each mutant patches a temporary copy of the repository; the list is in tests/mutants.py.
mutants: $(VENV)/.test
	$(BIN)/python tests/mutants.py $(MUTANTS_ARGS)

schema: $(VENV)/.demo
	$(BIN)/python -m registry._spec schema

kernels: $(VENV)/.demo
	$(BIN)/python -m registry._kernels_db kernels_db/kernels.toml kernels_db/builtin.h5

clean:
	rm -rf $(VENV) dist build .pytest_cache .hypothesis demo-out
