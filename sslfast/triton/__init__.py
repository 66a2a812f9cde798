"""Triton kernels, registered as ``torch.ops.sslfast_triton.*`` when triton is importable.

On CPU tensors they run only under ``TRITON_INTERPRET=1`` (set before triton is imported).
"""

from .._backend import _TRITON_IMPORTABLE

AVAILABLE = False
if _TRITON_IMPORTABLE:
    from . import contrastive, diffusion, masking  # noqa: F401

    AVAILABLE = True
