"""The one timed body every pytest-benchmark suite (benchmarks/bench_<family>.py) shares.

Each suite keeps its own small cases (built by the same case builders as
``python -m sslfast.bench``) and calls :func:`time_case` for one op and implementation.
"""

import torch

import sslfast
from sslfast.bench.harness import call_once, clear_grads

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def time_case(benchmark, op, case, impl, *, dtype, backward=True, rounds=10):
    """Time ``case`` (sslfast or its eager reference) with pytest-benchmark; returns its inputs."""
    inputs = case.make_inputs(DEVICE, dtype, backward)
    fn = case.sslfast_fn if impl == "sslfast" else case.reference_fn
    mode = "fwd+bwd" if backward else "fwd"

    def run():
        clear_grads(inputs)
        call_once(fn, inputs, backward)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    benchmark.group = f"{op} {case.label} {mode}"
    benchmark.extra_info.update(
        device=str(DEVICE), dtype=str(dtype).replace("torch.", ""),
        backend=case.backend(DEVICE) if impl == "sslfast" else "eager",
        backend_requested=sslfast.get_backend(), native_available=sslfast._native.AVAILABLE,
        flops_model=case.flops(mode) if case.flops else None,
        bytes_model=case.bytes(mode) if case.bytes else None)
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=2, iterations=1)
    return inputs
