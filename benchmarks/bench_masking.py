"""pytest-benchmark suite of the masking family: sslfast vs eager, forward+backward.

    pytest benchmarks/bench_masking.py --benchmark-only

Small sizes (seconds on 2 CPU cores); ``python -m sslfast.bench --only masking`` is the full
comparison (with torch.compile, memory, ViT-B/16 and VideoMAE sizes). The eager baseline is
``sslfast.reference``, and the inputs come from the same case builders.
"""

import pytest

pytest.importorskip("pytest_benchmark", reason="pytest-benchmark is not installed")

import torch  # noqa: E402

import sslfast  # noqa: E402
from sslfast.bench import masking as cases  # noqa: E402
from sslfast.bench.harness import call_once, clear_grads  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32

CASES = {
    "random_masking": lambda: cases.random_masking_case(16, 196, 768),
    "unshuffle": lambda: cases.unshuffle_case(16, 196, 512),
    "masked_patch_loss": lambda: cases.loss_case(16, 224, 16),
}


@pytest.mark.parametrize("impl", ["sslfast", "eager"])
@pytest.mark.parametrize("op", list(CASES))
def test_fwd_bwd(benchmark, op, impl):
    case = CASES[op]()
    inputs = case.make_inputs(DEVICE, DTYPE, True)
    fn = case.sslfast_fn if impl == "sslfast" else case.reference_fn

    def run():
        clear_grads(inputs)
        call_once(fn, inputs, True)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    benchmark.group = f"{op} {case.label} fwd+bwd"
    benchmark.extra_info.update(
        device=str(DEVICE), dtype=str(DTYPE).replace("torch.", ""),
        backend=case.backend(DEVICE) if impl == "sslfast" else "eager",
        backend_requested=sslfast.get_backend(), native_available=sslfast._native.AVAILABLE,
        bytes_model=case.bytes("fwd+bwd"))
    benchmark.pedantic(run, rounds=10, warmup_rounds=2, iterations=1)
    assert inputs.leaves[0].grad is not None
