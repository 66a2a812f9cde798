"""pytest-benchmark suite of the diffusion family: sslfast vs eager.

    pytest benchmarks/bench_diffusion.py --benchmark-only

Small sizes; ``python -m sslfast.bench --only diffusion`` is the full comparison (with
torch.compile and the byte model). Inputs come from the same case builders.
"""

import pytest

pytest.importorskip("pytest_benchmark", reason="pytest-benchmark is not installed")

import torch  # noqa: E402

import sslfast  # noqa: E402
from sslfast.bench import diffusion as cases  # noqa: E402
from sslfast.bench.harness import call_once, clear_grads  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
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
    backward = "fwd+bwd" in case.modes
    inputs = case.make_inputs(DEVICE, DTYPE, backward)
    fn = case.sslfast_fn if impl == "sslfast" else case.reference_fn

    def run():
        clear_grads(inputs)
        call_once(fn, inputs, backward)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    benchmark.group = f"{op} {case.label} {'fwd+bwd' if backward else 'fwd'}"
    benchmark.extra_info.update(
        device=str(DEVICE), dtype=str(DTYPE).replace("torch.", ""),
        backend=case.backend(DEVICE) if impl == "sslfast" else "eager",
        backend_requested=sslfast.get_backend(), bytes_model=case.bytes("fwd+bwd" if backward else "fwd"))
    benchmark.pedantic(run, rounds=10, warmup_rounds=2, iterations=1)
