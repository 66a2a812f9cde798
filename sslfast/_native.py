"""Loads the C++/CUDA extension ``sslfast._C`` and says what it can run."""

from __future__ import annotations

import torch

try:
    from . import _C  # noqa: F401  (registers the sslfast:: ops on import)

    AVAILABLE = True
    IMPORT_ERROR = None
except ImportError as error:  # not built: the reference (and Triton) backends still work
    AVAILABLE = False
    IMPORT_ERROR = error


def built_with_cuda() -> bool:
    return AVAILABLE and bool(torch.ops.sslfast.built_with_cuda())


def devices(has_cuda_kernel: bool = False) -> tuple[str, ...]:
    """Device types the native backend has kernels for, for an op with or without a CUDA kernel."""
    if not AVAILABLE:
        return ()
    return ("cpu", "cuda") if has_cuda_kernel and built_with_cuda() else ("cpu",)
