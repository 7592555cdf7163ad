# sgtool developer commands. `make install` builds .venv/; everything else uses it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo bench cuda-check gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/python -m sgtool.demo demo_out

bench: install
	$(BIN)/python bench/run_all.py

# Compiles the CUDA kernels with nvcc (no GPU needed) to catch syntax and type errors.
cuda-check: install
	$(BIN)/python -m sgtool.kernels.cuda_check

# On a machine with an NVIDIA GPU: build, parity and speed of every CUDA path (writes gpu_check.json).
gpu-check: install
	$(BIN)/python bench/gpu_check.py --out gpu_check.json

clean:
	rm -rf demo_out bench/results .pytest_cache
