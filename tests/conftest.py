"""Test setup and fixtures: Triton runs in its CPU interpreter when no CUDA device is present.

TRITON_INTERPRET must be set before anything imports triton, hence here, at collection.
SSLFAST_TEST_DEVICE=cuda (make gpu-check) runs the device-parametrized tests on the GPU.
Shared helpers (inputs, tolerances, backends): tests/helpers.py; the op contract: tests/contract.py.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Inductor's on-disk caches key a graph by its ops, not by the fake kernels registered for them:
# a cache entry made before a fake changed would be reused. Tests always compile afresh.
os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] = "0"
os.environ["TORCHINDUCTOR_AUTOGRAD_CACHE"] = "0"

import pytest  # noqa: E402

import sslfast  # noqa: E402
from sslfast import _dispatch  # noqa: E402

# The shared helpers (tests/helpers.py) import sslfast: only after TRITON_INTERPRET is set, above.
from helpers import DEVICE, runnable_backends  # noqa: E402, F401


@pytest.fixture
def device():
    return torch.device(DEVICE)


@pytest.fixture(autouse=True)
def _restore_backend():
    previous = sslfast.get_backend()
    yield
    sslfast.set_backend(previous)
    if _dispatch._state["per_op"]:  # a test chose per-op backends
        for op in _dispatch.OP_TABLE:
            sslfast.set_op_backend(op, "auto")
