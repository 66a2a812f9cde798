"""Test setup: Triton runs in its CPU interpreter when no CUDA device is present.

TRITON_INTERPRET must be set before anything imports triton, hence here, at collection.
SSLFAST_TEST_DEVICE=cuda (make gpu-check) runs the device-parametrized tests on the GPU.
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

DEVICE = os.environ.get("SSLFAST_TEST_DEVICE", "cpu")


def runnable_backends(device_type, op):
    """Backends that can run ``op`` on this machine for this device type (reference always can)."""
    return [b for b in ("reference", "native", "triton") if _dispatch.why_not(b, op, device_type) is None]


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
