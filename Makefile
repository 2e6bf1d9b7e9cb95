# mfray: every target sets up its own environment (.venv) from the pinned lock file first.
#   make demo   run the demo study on the bundled AID 1445 data (local Ray) and print its table
#   make test   run the test suite
#   make bench  run the benchmarks (they read ../shared/data)
#   make gpu-check  on a GPU machine: CPU/GPU loss parity and NCCL DDP LF pretraining (benchmarks/gpu_check.py);
#               the lock pins a CPU torch, so point GPU_PYTHON at an environment with a CUDA torch and mfray
#   make lock   re-resolve requirements.lock from pyproject.toml

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The lock pins torch 2.13.0+cpu. Where a CPU wheel lies on disk (/opt/wheels) it is used; elsewhere
# the PyTorch CPU index serves it (a plain PyPI torch would pull a multi-GB CUDA build).
TORCH_SOURCE ?= $(if $(wildcard /opt/wheels/torch-2.13.0*),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
export MFRAY_CACHE ?= $(CURDIR)/.mfray
export OMP_NUM_THREADS ?= 1
export OMP_WAIT_POLICY ?= PASSIVE

GPU_PYTHON ?= $(BIN)/python

.PHONY: demo test faults bench gpu-check lint lock clean

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv

$(VENV)/.installed: requirements.lock pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip sync --python $(BIN)/python --compile-bytecode $(TORCH_SOURCE) requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --compile-bytecode --no-deps -e .
	touch $@

demo: $(VENV)/.installed
	$(BIN)/mfray study run studies/demo.toml --storage mfray_results

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

faults: $(VENV)/.installed   # the fault suite alone (it is part of `make test` too)
	$(BIN)/python -m pytest -q -s -m faults

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/featurize_benchmark.py

gpu-check:
	$(GPU_PYTHON) benchmarks/gpu_check.py

lint: $(VENV)/.installed
	$(BIN)/lint-imports

lock: | $(BIN)/uv
	$(BIN)/uv pip compile pyproject.toml --extra test --python-version 3.11 $(TORCH_SOURCE) -o requirements.lock

clean:
	rm -rf $(VENV) .mfray .pytest_cache
