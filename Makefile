# Quick start: `make demo` (set up + run the demo), `make test` (set up + run the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# torch's build: cpu (constraints.txt) or cuda (constraints-cuda.txt and PyTorch's CUDA index,
# docs/gpu.md), e.g. `make gpu-check TORCH=cuda` on a machine with an NVIDIA GPU.
TORCH ?= cpu
CUDA_INDEX ?= https://download.pytorch.org/whl/cu126
CONSTRAINTS := $(if $(filter cuda,$(TORCH)),constraints-cuda.txt,constraints.txt)
TORCH_INDEX := $(if $(filter cuda,$(TORCH)),--extra-index-url $(CUDA_INDEX),)

.PHONY: demo test test-slow lint format bench bench-deploy bench-train gpu-check clean

$(STAMP): pyproject.toml setup.py src/atrous/crf/_native.c $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(CONSTRAINTS) $(TORCH_INDEX) -e '.[test,export,serve,video]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/atrous demo --out demo_out

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q -m "not slow and not crfref" -p no:cacheprovider

test-slow: $(STAMP)
	$(PY) -m pytest -q -m "slow" -p no:cacheprovider

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Deployment and training benchmarks (issues 12, 15): torchvision's pure-Python models, for the baseline rows only.
.bench/torchvision: $(STAMP)
	$(PY) -m pip install -q --no-deps --target .bench/torchvision torchvision==0.28.0

bench-deploy: .bench/torchvision
	$(PY) benchmarks/bench_deploy.py --large --out benchmarks/results/deploy

# Training steps against torchvision's reference (issue 15), ~12 minutes.
bench-train: .bench/torchvision
	$(PY) benchmarks/bench_train_compare.py --steps 2 --out benchmarks/results/train_compare

# The CUDA checks (docs/gpu.md): the tests marked cuda, AMP fp16/bf16 training, SyncBN under
# torchrun (2 GPUs), the CRF on CUDA vs CPU, benchmark rows; writes benchmarks/results/gpu_check.md.
# Without CUDA it runs the CPU-safe parts and skips the rest, saying why.
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) demo_out build *.egg-info src/*.egg-info
