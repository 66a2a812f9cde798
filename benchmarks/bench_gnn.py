"""pytest-benchmark suite of the GNN family: sslfast vs eager, forward+backward.

    pytest benchmarks/bench_gnn.py --benchmark-only

Small sizes (seconds on 2 CPU cores); ``python -m sslfast.bench --only gnn`` is the full
comparison (torch.compile, torch.sparse.mm, memory, N = 10k..1M, graph construction). Inputs
come from the same case builders.
"""

import pytest

pytest.importorskip("pytest_benchmark", reason="pytest-benchmark is not installed")

import torch  # noqa: E402

from sslfast.bench import gnn as cases  # noqa: E402
from suite import time_case  # noqa: E402

DTYPE = torch.float32

CASES = {
    "spmm_sum": lambda: cases.spmm_case(20_000, 200_000, 64),
    "spmm_sum_power_law": lambda: cases.spmm_case(20_000, 200_000, 64, "power_law"),
    "gcn_aggregate": lambda: cases.gcn_case(20_000, 200_000, 64),
    "gat_aggregate": lambda: cases.gat_case(10_000, 100_000, 4, 16),
}
if cases.planetoid_root("cora") is not None:  # the real graph, when ../shared/data/planetoid is there
    CASES["gcn_aggregate_cora"] = lambda: cases.gcn_case(2708, 10556, 16, kind="cora")


@pytest.mark.parametrize("impl", ["sslfast", "eager"])
@pytest.mark.parametrize("op", list(CASES))
def test_fwd_bwd(benchmark, op, impl):
    inputs = time_case(benchmark, op, CASES[op](), impl, dtype=DTYPE, rounds=5)
    assert all(t.grad is not None for t in inputs.leaves)
