"""Triton kernels: the implementations of the ``sslfast_triton::`` kernel ops (csrc/schema.cpp).

On CPU tensors they run only under ``TRITON_INTERPRET=1`` (set before triton is imported). The op
table (``sslfast._dispatch``) sees every kernel registered here.
"""

import torch

from .._dispatch import _TRITON_IMPORTABLE
from .. import _native


def register(impls: dict) -> None:
    """Register Triton launchers as the kernels of ``sslfast_triton::<name>`` (every device key;
    the op table sends only CUDA tensors, or CPU tensors under the interpreter)."""
    for name, impl in impls.items():
        torch.library.impl(f"sslfast_triton::{name}", "default", impl)


AVAILABLE = False
if _TRITON_IMPORTABLE and _native.AVAILABLE:  # the schemas come from the C++ extension
    from . import augment, contrastive, diffusion, masking  # noqa: F401

    AVAILABLE = True
