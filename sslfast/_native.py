"""Loads the C++/CUDA extension ``sslfast._C`` and says what it can run."""

from __future__ import annotations

import torch

try:
    from . import _C  # noqa: F401  (registers the sslfast:: and sslfast_triton:: schemas on import)

    AVAILABLE = True
    IMPORT_ERROR = None
except ImportError as error:  # not built: the reference (and nothing else) runs
    AVAILABLE = False
    IMPORT_ERROR = error


def built_with_cuda() -> bool:
    return AVAILABLE and bool(torch.ops.sslfast.built_with_cuda())


def cpu_isa() -> str | None:
    """The instruction set the CPU kernels run: "avx2" (AVX2 + FMA) or "baseline", chosen when
    the extension loads (``SSLFAST_CPU_ISA=baseline`` forces the baseline); None if not built."""
    return str(torch.ops.sslfast.cpu_isa()) if AVAILABLE else None
