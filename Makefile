# Every target sets itself up from nothing: venv, pinned deps, build. See README.md.
#   make test       lint + build + nvcc-compile kernels/*.cu (when nvcc exists) + pytest
#   make lint       ruff (Python) and clang-format --dry-run (C++ / CUDA): style only, no build
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
               ninja==1.13.2 setuptools==84.2.1 wheel scipy==1.17.1 scikit-learn==1.9.1 mlxtend==0.25.0
LINT_PINS   := ruff==0.17.5 clang-format==23.1.3
# The libraries sslfast drops into (parity tests). open_clip and lightly go in without their
# dependencies: both pull torchvision, whose PyPI build does not import beside the CPU torch file;
# the tests load only their loss modules, which need torch alone.
COMPAT_PINS := torch_geometric==2.8.1 diffusers==0.42.1 pytorch-metric-learning==2.9.0
COMPAT_NODEPS_PINS := open_clip_torch==3.3.0 lightly==1.6.0

INSTALLED := $(VENV)/.installed
DEPS      := $(VENV)/.deps
CU_SRCS   := $(wildcard kernels/*.cu)
CXX_SRCS  := $(wildcard csrc/*.cpp csrc/*.h csrc/*/*.cpp csrc/*/*.h kernels/*.cu kernels/*.h)

.PHONY: all venv deps build lint test test-quick bench bench-quick nvcc-check gpu-check clean

all: test

# --system-site-packages: a machine that already has torch (the GPU image: CUDA torch, triton,
# no internet) keeps it; elsewhere the pinned CPU wheel is installed (a bare `torch` would pull
# GBs of CUDA wheels). When $(PYTHON) is itself a venv (the GPU image's python3 lives in
# /opt/torch/.venv), --system-site-packages reaches only the base interpreter's packages, so a
# .pth file adds the parent venv's site-packages too.
$(PY):
	$(PYTHON) -m venv --system-site-packages $(VENV)

$(DEPS): $(PY) Makefile
	@$(PYTHON) -c "import site, sys; sys.prefix != sys.base_prefix and print(*site.getsitepackages(), sep='\n')" \
		> "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_parent_env.pth"
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q $(TORCH_PIN)
	@$(PY) -c "import triton" 2>/dev/null || $(PIP) install -q $(TRITON_PIN) || echo "triton unavailable: Triton backend disabled"
	@$(PY) -c "import numpy, pytest, pytest_benchmark, tqdm, matplotlib, ninja, setuptools, wheel, scipy, sklearn, mlxtend" 2>/dev/null \
		|| $(PIP) install -q $(TOOLS_PINS)
	@$(PY) -c "import torch_geometric, diffusers, pytorch_metric_learning" 2>/dev/null || $(PIP) install -q $(COMPAT_PINS) \
		|| echo "compat libraries unavailable: their parity tests skip"
	@$(PY) -c "import importlib.util as u; assert u.find_spec('open_clip') and u.find_spec('lightly')" 2>/dev/null \
		|| $(PIP) install -q --no-deps $(COMPAT_NODEPS_PINS) || echo "open_clip / lightly unavailable: their parity tests skip"
	@[ -x $(VENV)/bin/ruff ] && [ -x $(VENV)/bin/clang-format ] || $(PIP) install -q $(LINT_PINS) \
		|| echo "ruff / clang-format unavailable: make lint cannot run here"
	@$(PY) -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
	@touch $@

venv deps: $(DEPS)

# One compile: `setup.py build_ext --inplace` (ninja; objects kept in build/, so every later
# `make build` is incremental and never misses a source added or touched while a build ran). The
# editable install adds only the metadata (the `sslfast` command, `import sslfast` from anywhere):
# SSLFAST_SKIP_EXTENSION=1 keeps pip's own build (in a temporary folder) from compiling it again.
$(INSTALLED): $(DEPS) pyproject.toml
	SSLFAST_SKIP_EXTENSION=1 $(PIP) install -q --no-build-isolation --no-deps -e .
	@touch $@

build: $(INSTALLED)
	@MAX_JOBS=$${MAX_JOBS:-$$(nproc)} $(PY) setup.py -q build_ext --inplace
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

# Style only (no build): ruff for Python, clang-format (.clang-format) in check mode for C++ / CUDA.
lint: $(DEPS)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/clang-format --dry-run --Werror $(CXX_SRCS)

test: lint build nvcc-check
	$(PY) -m pytest -q tests

test-quick: build
	$(PY) -m pytest -q -x --ff tests

bench: build
	$(PY) -m sslfast.bench $(BENCH_ARGS)

bench-quick: build
	$(PY) -m sslfast.bench --quick $(BENCH_ARGS)

# On a GPU machine (see README "GPU"): everything on CUDA, then sanitizers and benchmarks.
# Logs and results land in benchmarks/results/<gpu>-<date>*; a failing step fails the target
# (after the later steps still ran). Each step prints its wall time.
#  GPU_STEPS: the steps to run, in order (default: all). One call of the lent GPU machine may run
#    10 minutes, and the whole target takes about that long, so a session can split it:
#    `make gpu-check GPU_STEPS="tests-cuda tests-cpu"`, then `... GPU_STEPS="memcheck racecheck bench"`.
#  GPU_QUICK=1: a small check: of the test suites, only the sanitize and sync-free tests (CUDA)
#    and the bad-input ones (CPU); of the benchmarks, the contrastive family only (its quick CUDA
#    set: N = 8192 and 32768, D = 128 and 512, bf16, beside the kernel-time model and the
#    device's measured ceilings).
#  - tests-cuda: one Triton tile config per kernel (autotuning eight configs per kernel and shape
#    in every xdist worker took 6 minutes on an H100 for the contrastive tests alone) and xdist
#    workers when pytest-xdist is there; the benchmarks autotune every config.
#  - tests-cpu: the C++ CPU kernels here come from this machine's compiler and torch, not CI's (on
#    the first H100 image a CPU op's TORCH_CHECK segfaulted; benchmarks/NOTES.md).
#  - memcheck / racecheck on the sanitize subset. Triton's reductions store replicated partials
#    from one PC to one shared address, which racecheck reports as races;
#    benchmarks/racecheck_triage.py passes exactly those and fails on anything else.
#  - bench: the quick size set; `make bench` on the same machine runs the full set.
GPU_STEPS ?= tests-cuda tests-cpu memcheck racecheck bench
GPU_NAME = $(shell nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '-' | tr -cd 'A-Za-z0-9-')
GPU_TAG  = $(or $(GPU_NAME),gpu)-$(shell date -u +%Y-%m-%d)
GPU_RES  = benchmarks/results/$(GPU_TAG)
XDIST    = $(shell $(PY) -c "import xdist" 2>/dev/null && echo "-n $$(( $$(nproc) < 12 ? $$(nproc) : 12 ))") \
           $(shell $(PY) -c "import pytest_timeout" 2>/dev/null && echo "--timeout 300")
# memcheck needs PyTorch's caching allocator off: inside a pooled 2 MiB segment an out-of-bounds
# access hits valid memory and goes unreported.
SANITIZER ?= $(or $(shell command -v compute-sanitizer 2>/dev/null),$(if $(NVCC),$(dir $(NVCC))compute-sanitizer,compute-sanitizer))
SANITIZE  = PYTORCH_NO_CUDA_MEMORY_CACHING=1 SSLFAST_TRITON_ONE_CONFIG=1 $(SANITIZER) --error-exitcode 1 --target-processes all
gpu-check: build nvcc-check
	@$(PY) -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-check: no CUDA device')"
	@mkdir -p benchmarks/results; status=0; \
	 for step in $(GPU_STEPS); do start=$$(date +%s); case $$step in \
	 tests-cuda) echo "== tests on CUDA -> $(GPU_RES)-tests.txt"; \
	   SSLFAST_TEST_DEVICE=cuda SSLFAST_TRITON_ONE_CONFIG=1 $(PY) -m pytest -q tests $(XDIST) --durations=15 \
	     $(if $(GPU_QUICK),-k "sanitize or sync") > $(GPU_RES)-tests.txt 2>&1 || status=1; \
	   tail -5 $(GPU_RES)-tests.txt;; \
	 tests-cpu) echo "== tests on CPU with this machine's build -> $(GPU_RES)-tests-cpu.txt"; \
	   SSLFAST_TEST_DEVICE=cpu $(PY) -m pytest -q tests $(XDIST) $(if $(GPU_QUICK),-k "bad_input or reject or csr_by_key") \
	     > $(GPU_RES)-tests-cpu.txt 2>&1 || status=1; \
	   tail -3 $(GPU_RES)-tests-cpu.txt;; \
	 memcheck) echo "== compute-sanitizer memcheck on the sanitize subset -> $(GPU_RES)-memcheck.txt"; \
	   SSLFAST_TEST_DEVICE=cuda $(SANITIZE) --tool memcheck $(PY) -m pytest -q tests -k sanitize \
	     > $(GPU_RES)-memcheck.txt 2>&1 || status=1; \
	   tail -3 $(GPU_RES)-memcheck.txt;; \
	 racecheck) echo "== compute-sanitizer racecheck on the sanitize subset -> $(GPU_RES)-racecheck.txt"; \
	   SSLFAST_TEST_DEVICE=cuda $(SANITIZE) --tool racecheck --print-limit 0 $(PY) -m pytest -q tests -k sanitize \
	     > $(GPU_RES)-racecheck.txt 2>&1; \
	   $(PY) benchmarks/racecheck_triage.py $(GPU_RES)-racecheck.txt || status=1;; \
	 bench) echo "== benchmarks (quick sizes) -> $(GPU_RES)/"; \
	   $(PY) -m sslfast.bench --device cuda --quick --no-progress --out $(GPU_RES) $(if $(GPU_QUICK),--only contrastive) \
	     $(BENCH_ARGS) || status=1; \
	   cp $(GPU_RES)/results.json $(GPU_RES).json 2>/dev/null; \
	   $(PY) benchmarks/summarize.py benchmarks/results/*/results.json -o benchmarks/RESULTS.md || status=1;; \
	 *) echo "gpu-check: unknown step '$$step' (steps: tests-cuda tests-cpu memcheck racecheck bench)"; status=1;; \
	 esac; echo "   ($$step: $$(( $$(date +%s) - start )) s)"; done; \
	 exit $$status

clean:
	rm -rf build $(INSTALLED) sslfast/*.so *.egg-info bench-results
