"""Fake + autograd registration shared by every op family.

Each family's ``_<family>_schema.py`` owns its schemas, fake kernels and autograd formulas;
this registers them for one namespace (``sslfast`` for the C++ ops, ``sslfast_triton`` for the
Triton ones), so both backends of a family get exactly the same fakes and autograd. The GNN
family has no Triton backend and its autograd is C++ (csrc/gnn_autograd.cpp): only its fakes
come through here.
"""

from __future__ import annotations

import torch


def register_fakes_and_autograd(namespace: str, fakes: dict, autograd_for) -> None:
    """``fakes``: op name -> fake kernel; ``autograd_for(ops)``: op name -> (setup_context,
    backward), built against ``torch.ops.<namespace>`` so each backward calls its own
    namespace's ``*_bwd`` op."""
    for name, fake in fakes.items():
        torch.library.register_fake(f"{namespace}::{name}", fake)
    ops = getattr(torch.ops, namespace)
    for name, (setup_context, backward) in autograd_for(ops).items():
        torch.library.register_autograd(f"{namespace}::{name}", backward, setup_context=setup_context)
