"""Fake (meta) kernels of every op, for ``torch.compile`` and ``torch.library.opcheck``.

Both namespaces (``sslfast::`` native, ``sslfast_triton::`` Triton; csrc/schema.cpp) get the
same fakes, except for the one place their contracts differ: the native CPU kernels compute in
float32 / float64, so their intermediate tensors (``prepare_rows``) are float32 for half inputs.
One module per family; each ``fakes(widen)`` returns {op name: fake function}.
"""

from __future__ import annotations

import torch

from . import augment, contrastive, diffusion, gnn, masking

FAMILIES = (contrastive, masking, diffusion, gnn, augment)


def register(namespace: str) -> None:
    """Register every family's fakes for ``namespace`` ("sslfast" or "sslfast_triton")."""
    widen = namespace == "sslfast"
    for family in FAMILIES:
        for name, fake in family.fakes(widen).items():
            torch.library.register_fake(f"{namespace}::{name}", fake)
