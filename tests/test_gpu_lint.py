"""GPU lint without a GPU (sslfast/triton/lint.py): every Triton kernel of every family compiled
for sm_90 with Triton's bundled ptxas; dot kernels must use wgmma and nothing may spill; the
recorded table benchmarks/gpu_lint.json must match (regenerate: python -m sslfast.triton.lint
--write benchmarks/gpu_lint.json)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _backend_missing():
    try:
        from triton.backends.compiler import GPUTarget
        from triton.backends.nvidia.compiler import get_ptxas
        path = get_ptxas(GPUTarget("cuda", 90, 32).arch).path
    except Exception as error:  # no triton, or a build without the CUDA backend
        return f"triton's CUDA backend is unavailable: {error!r}"
    if not os.path.exists(path):
        return f"no bundled ptxas at {path}"
    return None


pytestmark = pytest.mark.skipif(_backend_missing() is not None, reason=str(_backend_missing()))


@pytest.fixture(scope="module")
def lint_result():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the compiler, not the interpreter
    proc = subprocess.run([sys.executable, "-m", "sslfast.triton.lint", "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode in (0, 1), proc.stderr[-4000:]
    return json.loads(proc.stdout)


def test_every_kernel_compiles_for_sm90_with_wgmma_and_no_spills(lint_result):
    assert lint_result["violations"] == []
    dot_rows = [r for r in lint_result["table"] if r["dot"] and r["tensor_core_dtype"]]
    assert dot_rows and all(r["wgmma"] and not r["mma_sync"] for r in dot_rows)


def test_recorded_table_is_current(lint_result):
    recorded = json.loads((ROOT / "benchmarks" / "gpu_lint.json").read_text())
    assert recorded["triton"] == lint_result["triton"]
    assert recorded["table"] == lint_result["table"], (
        "benchmarks/gpu_lint.json is stale: python -m sslfast.triton.lint --write benchmarks/gpu_lint.json")


def test_violations_catch_each_failure_kind():
    """The rule itself, on rows shaped like the lint's: spills, mma.sync, no wgmma, oversize shared
    memory fail; an fp32 (IEEE FMA by design) dot kernel without wgmma does not."""
    code = ("import json, sys; from sslfast.triton import lint; rows = json.loads(sys.stdin.read()); "
            "print(json.dumps([bool(lint.violations([r], check_coverage=False)) for r in rows]))")
    base = {"family": "contrastive", "kernel": "_pair_fwd_kernel", "constexprs": {}, "num_warps": 8,
            "num_stages": 3, "registers": 200, "spill_store_bytes": 0, "spill_load_bytes": 0,
            "stack_bytes": 0, "shared_bytes": 98304, "dot": True, "wgmma": True, "mma_sync": False,
            "tensor_core_dtype": True, "pointer_dtypes": ["bf16"]}
    rows = [base, {**base, "spill_store_bytes": 8}, {**base, "wgmma": False, "mma_sync": True},
            {**base, "wgmma": False}, {**base, "shared_bytes": 300000},
            {**base, "wgmma": False, "tensor_core_dtype": False}]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(rows), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [False, True, True, True, True, False]
