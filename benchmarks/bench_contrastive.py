"""pytest-benchmark suite of the contrastive family: sslfast vs eager, forward+backward.

    pytest benchmarks/bench_contrastive.py --benchmark-only

Small sizes (seconds on 2 CPU cores); ``python -m sslfast.bench`` is the full comparison
(with torch.compile, memory, several sizes). The eager baseline is ``sslfast.reference``, and
the inputs come from the same case builders as ``python -m sslfast.bench``.
"""

import pytest

pytest.importorskip("pytest_benchmark", reason="pytest-benchmark is not installed")

import torch  # noqa: E402

from sslfast.bench import contrastive as cases  # noqa: E402
from suite import DEVICE, time_case  # noqa: E402

DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32

CASES = {
    "nt_xent": lambda: cases.nt_xent_case(1024, 128),
    "info_nce": lambda: cases.info_nce_case(256, 128, queue=4096),
    "clip_loss": lambda: cases.clip_case(512, 256),
    "siglip_loss": lambda: cases.siglip_case(512, 256),
}


@pytest.mark.parametrize("impl", ["sslfast", "eager"])
@pytest.mark.parametrize("op", list(CASES))
def test_fwd_bwd(benchmark, op, impl):
    inputs = time_case(benchmark, op, CASES[op](), impl, dtype=DTYPE, rounds=15)
    assert all(t.grad is not None for t in inputs.leaves[:2])
