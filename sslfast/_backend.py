"""Backend choice: ``auto`` | ``native`` | ``triton`` | ``reference``.

The choice is a module global (not a contextvar) so that ``torch.compile`` can trace the
public functions: dynamo guards on the global and re-traces if it changes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os

BACKENDS = ("auto", "native", "triton", "reference")

_state = {"backend": "auto"}


def _check_name(name):
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


_state["backend"] = _check_name(os.environ.get("SSLFAST_BACKEND", "auto").strip().lower() or "auto")


def get_backend() -> str:
    """The backend currently requested (``auto`` unless forced)."""
    return _state["backend"]


def set_backend(name: str) -> None:
    _state["backend"] = _check_name(name)


@contextlib.contextmanager
def use_backend(name: str):
    """Force a backend inside a ``with`` block; a forced backend that cannot run raises."""
    previous = _state["backend"]
    _state["backend"] = _check_name(name)
    try:
        yield
    finally:
        _state["backend"] = previous


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


_TRITON_IMPORTABLE = importlib.util.find_spec("triton") is not None


def triton_can_run(device_type: str) -> bool:
    """Triton runs on CUDA tensors, and on CPU tensors only under ``TRITON_INTERPRET=1``."""
    if not _TRITON_IMPORTABLE:
        return False
    return device_type == "cuda" or (device_type == "cpu" and triton_interpreted())


def resolve(op_name: str, device_type: str, native_devices, triton_devices=("cuda", "cpu")) -> str:
    """Pick the backend for one call of ``op_name`` on ``device_type``.

    ``native_devices``: the device types the C++/CUDA extension has kernels for, for this op;
    ``triton_devices``: those its Triton kernels serve. ``auto`` prefers native on CPU and
    Triton on GPUs, and the reference when neither runs; a family whose GPU backend is CUDA
    C++ (DESIGN.md "GPU backend per family", e.g. GNN) passes ``triton_devices=()``.
    """
    requested = _state["backend"]
    native_ok = device_type in native_devices
    triton_ok = device_type in triton_devices and triton_can_run(device_type)
    if requested == "auto":
        if device_type == "cpu":
            return "native" if native_ok else "reference"
        if triton_ok:
            return "triton"
        return "native" if native_ok else "reference"
    if requested == "native" and not native_ok:
        raise RuntimeError(
            f"sslfast: backend 'native' cannot run {op_name} on {device_type}: "
            + ("the C++ extension sslfast._C is not built" if not native_devices
               else f"native kernels exist for {sorted(native_devices)} only")
        )
    if requested == "triton" and not triton_ok:
        why = ("triton is not installed" if not _TRITON_IMPORTABLE
               else "Triton needs a CUDA tensor, or TRITON_INTERPRET=1 for CPU tensors")
        raise RuntimeError(f"sslfast: backend 'triton' cannot run {op_name} on {device_type}: {why}")
    return requested
