"""pytest-benchmark suite of the diffusion family: sslfast vs eager.

    pytest benchmarks/bench_diffusion.py --benchmark-only

Small sizes; ``python -m sslfast.bench --only diffusion`` is the full comparison (with
torch.compile and the byte model). Inputs come from the same case builders.
"""

import pytest

pytest.importorskip("pytest_benchmark", reason="pytest-benchmark is not installed")

import torch  # noqa: E402

from sslfast.bench import diffusion as cases  # noqa: E402
from suite import DEVICE, time_case  # noqa: E402

DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32
SHAPE = (16, 4, 64, 64)

CASES = {
    "q_sample+loss": lambda: cases.train_case(SHAPE),
    **{f"{kind}_step": (lambda kind=kind: cases.step_case(kind, SHAPE)) for kind in cases.STEPS},
}


@pytest.mark.parametrize("impl", ["sslfast", "eager"])
@pytest.mark.parametrize("op", list(CASES))
def test_diffusion(benchmark, op, impl):
    case = CASES[op]()
    time_case(benchmark, op, case, impl, dtype=DTYPE, backward="fwd+bwd" in case.modes)
