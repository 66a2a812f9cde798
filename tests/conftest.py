"""Test setup: Triton runs in its CPU interpreter when no CUDA device is present.

TRITON_INTERPRET must be set before anything imports triton, hence here, at collection.
SSLFAST_TEST_DEVICE=cuda (make gpu-check) runs the device-parametrized tests on the GPU.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import sslfast  # noqa: E402
from sslfast import _backend  # noqa: E402

DEVICE = os.environ.get("SSLFAST_TEST_DEVICE", "cpu")


def runnable_backends(device_type, native_devices):
    """Backends that can run one op family on this machine for this device type (reference
    always can). ``native_devices``: the family's ``_NATIVE_DEVICES`` (the C++ extension has CUDA
    kernels for some families only)."""
    names = ["reference"]
    if device_type in native_devices:
        names.append("native")
    if sslfast.triton.AVAILABLE and _backend.triton_can_run(device_type):
        names.append("triton")
    return names


@pytest.fixture
def device():
    return torch.device(DEVICE)


@pytest.fixture(autouse=True)
def _restore_backend():
    previous = sslfast.get_backend()
    yield
    sslfast.set_backend(previous)
