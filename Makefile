# Every target sets itself up from nothing: venv, pinned deps, build. See README.md.
#   make test       build + nvcc-compile kernels/*.cu (when nvcc exists) + pytest
#   make bench      build + the benchmark suite on the best device present (python -m sslfast.bench)
#   make gpu-check  on a GPU machine: CUDA build, suite on CUDA, compute-sanitizer, benchmarks

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
NVCC   ?= $(shell command -v nvcc 2>/dev/null)

TORCH_PIN   := torch==2.13.0
TRITON_PIN  := triton==3.9.0
TOOLS_PINS  := numpy==2.4.6 pytest==9.2.0 pytest-benchmark==5.3.1 tqdm==4.70.1 matplotlib==3.11.2 \
               ninja==1.13.2 setuptools==84.2.1 wheel

BUILT   := $(VENV)/.built
DEPS    := $(VENV)/.deps
CU_SRCS := $(wildcard kernels/*.cu)

.PHONY: all venv deps build test test-quick bench bench-quick nvcc-check gpu-check clean

all: test

# --system-site-packages: a machine that already has torch (the GPU image: CUDA torch, triton,
# no internet) keeps it; elsewhere the pinned CPU wheel is installed (a bare `torch` would pull
# GBs of CUDA wheels).
$(PY):
	$(PYTHON) -m venv --system-site-packages $(VENV)

$(DEPS): $(PY) Makefile
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q $(TORCH_PIN)
	@$(PY) -c "import triton" 2>/dev/null || $(PIP) install -q $(TRITON_PIN) || echo "triton unavailable: Triton backend disabled"
	@$(PY) -c "import numpy, pytest, pytest_benchmark, tqdm, matplotlib, ninja, setuptools, wheel" 2>/dev/null \
		|| $(PIP) install -q $(TOOLS_PINS)
	@$(PY) -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
	@touch $@

venv deps: $(DEPS)

# Editable install once (metadata + first build); afterwards every `make build` runs the
# incremental in-place rebuild: ninja decides what changed, so sources added or touched while a
# build ran are never missed (a stamp-file rule would miss them).
$(BUILT): $(DEPS)
	MAX_JOBS=$${MAX_JOBS:-2} $(PIP) install -q --no-build-isolation --no-deps -e .
	@touch $@

build: $(BUILT)
	@MAX_JOBS=$${MAX_JOBS:-2} $(PY) setup.py -q build_ext --inplace
	@$(PY) -c "import sslfast, sslfast._native as n; print('sslfast._C built:', n.AVAILABLE, '| cuda:', n.built_with_cuda())"

# Compile every CUDA kernel for sm_80 and sm_90 (no GPU needed): a broken kernel fails here.
nvcc-check:
	@if [ -z "$(NVCC)" ]; then echo "nvcc-check: no nvcc, skipped"; \
	 elif [ -z "$(CU_SRCS)" ]; then echo "nvcc-check: no kernels/*.cu yet"; \
	 else mkdir -p build/nvcc-check && for f in $(CU_SRCS); do \
	   echo "nvcc $$f"; \
	   $(NVCC) -c -std=c++17 -O3 -Xptxas -v -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90,code=sm_90 \
	     $$f -o build/nvcc-check/$$(basename $$f .cu).o 2> build/nvcc-check/$$(basename $$f .cu).ptxas.txt \
	     || { cat build/nvcc-check/$$(basename $$f .cu).ptxas.txt; exit 1; }; \
	 done; fi

test: build nvcc-check
	$(PY) -m pytest -q tests

test-quick: build
	$(PY) -m pytest -q -x --ff tests

bench: build
	$(PY) -m sslfast.bench $(BENCH_ARGS)

bench-quick: build
	$(PY) -m sslfast.bench --quick $(BENCH_ARGS)

# On a GPU machine (see README "GPU"): everything on CUDA, then sanitizers and benchmarks.
# Logs and results land in benchmarks/results/<gpu>-<date>*; a failing step fails the target
# (after the later steps still ran). GPU_QUICK=1: a small check: the sanitize and sync-free
# tests only, and the quick bench.
GPU_NAME = $(shell nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '-' | tr -cd 'A-Za-z0-9-')
GPU_TAG  = $(or $(GPU_NAME),gpu)-$(shell date -u +%Y-%m-%d)
GPU_RES  = benchmarks/results/$(GPU_TAG)
# memcheck needs PyTorch's caching allocator off: inside a pooled 2 MiB segment an out-of-bounds
# access hits valid memory and goes unreported. One Triton config per kernel: autotuning eight
# configs per kernel under the sanitizer would eat the time budget.
SANITIZER ?= $(or $(shell command -v compute-sanitizer 2>/dev/null),$(if $(NVCC),$(dir $(NVCC))compute-sanitizer,compute-sanitizer))
SANITIZE  = PYTORCH_NO_CUDA_MEMORY_CACHING=1 SSLFAST_TRITON_ONE_CONFIG=1 $(SANITIZER) --error-exitcode 1 --target-processes all
gpu-check: build nvcc-check
	@$(PY) -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-check: no CUDA device')"
	@mkdir -p benchmarks/results; status=0; \
	 echo "== tests on CUDA -> $(GPU_RES)-tests.txt"; \
	 SSLFAST_TEST_DEVICE=cuda $(PY) -m pytest -q tests $(if $(GPU_QUICK),-k "sanitize or sync") > $(GPU_RES)-tests.txt 2>&1 || status=1; \
	 tail -5 $(GPU_RES)-tests.txt; \
	 for tool in memcheck racecheck; do \
	   echo "== compute-sanitizer $$tool on the sanitize subset -> $(GPU_RES)-$$tool.txt"; \
	   SSLFAST_TEST_DEVICE=cuda $(SANITIZE) --tool $$tool $(PY) -m pytest -q -x tests -k sanitize \
	     > $(GPU_RES)-$$tool.txt 2>&1 || status=1; \
	   tail -3 $(GPU_RES)-$$tool.txt; \
	 done; \
	 echo "== benchmarks -> $(GPU_RES)/"; \
	 $(PY) -m sslfast.bench --device cuda $(if $(GPU_QUICK),--quick) --out $(GPU_RES) $(BENCH_ARGS) || status=1; \
	 cp $(GPU_RES)/results.json $(GPU_RES).json 2>/dev/null; \
	 $(PY) benchmarks/summarize.py benchmarks/results/*/results.json -o benchmarks/RESULTS.md || status=1; \
	 exit $$status

clean:
	rm -rf build $(BUILT) sslfast/*.so *.egg-info bench-results
