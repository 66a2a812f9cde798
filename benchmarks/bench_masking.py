"""pytest-benchmark suite of the masking family: sslfast vs eager, forward+backward.

    pytest benchmarks/bench_masking.py --benchmark-only

Small sizes (seconds on 2 CPU cores); ``python -m sslfast.bench --only masking`` is the full
comparison (with torch.compile, memory, ViT-B/16 and VideoMAE sizes). The eager baseline is
``sslfast.reference``, and the inputs come from the same case builders.
"""

import pytest

pytest.importorskip("pytest_benchmark", reason="pytest-benchmark is not installed")

import torch  # noqa: E402

from sslfast.bench import masking as cases  # noqa: E402
from suite import DEVICE, time_case  # noqa: E402

DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32

CASES = {
    "random_masking": lambda: cases.random_masking_case(16, 196, 768),
    "unshuffle": lambda: cases.unshuffle_case(16, 196, 512),
    "masked_patch_loss": lambda: cases.loss_case(16, 224, 16),
}


@pytest.mark.parametrize("impl", ["sslfast", "eager"])
@pytest.mark.parametrize("op", list(CASES))
def test_fwd_bwd(benchmark, op, impl):
    inputs = time_case(benchmark, op, CASES[op](), impl, dtype=DTYPE)
    assert inputs.leaves[0].grad is not None
