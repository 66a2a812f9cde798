"""Schemas and fake kernels of the GNN core ops (``sslfast::spmm_*``, ``gcn_aggregate_*``,
``sddmm_*``, ``gat_aggregate_*``); the strings are identical to csrc/sslfast.cpp. Their autograd
is C++ (csrc/gnn_autograd.cpp: each forward op's backward is its ``*_bwd`` op), registered for
the Autograd key: torch.library's Python autograd wrapper cost more than a small graph's kernel.
``gat_aggregate_fwd`` also returns the per-(row, head) log-sum-exp in the accumulation dtype
(float64 for float64, float32 otherwise), which the backward recomputes the edge weights from
(with ``out``, O(N * H) saved besides the inputs). ``arg`` and ``lse`` carry no gradient.

Core-op contract: the graph arrives as tensors (destination-sorted CSR ``rowptr``/``col``, its
transpose ``colptr``/``row`` with ``csc_perm`` = CSR position of each CSC entry, and the hub lists
of both), so ``torch.compile`` sees plain tensors. ``weight`` is in CSR order. ``spmm_fwd``
returns ``(out, arg)``; ``arg`` is the int64 [N, F] CSR position chosen by max / min (-1 where a
row has no in-edge) and an empty tensor for sum / mean. Backward w.r.t. x runs over the
transpose: deterministic, no atomics. ``csr_by_key(keys, n, values=None, inverse=False)`` is the
Graph builder's stable counting sort: (offsets [n + 1], perm [E], values[perm], the inverse of
perm) with keys[perm] sorted, ties in input order; the last two are empty unless asked for.
"""

from __future__ import annotations

import torch

from . import _registry

SCHEMAS = {
    "csr_by_key": "(Tensor keys, int num_nodes, Tensor? values=None, bool inverse=False) "
                  "-> (Tensor, Tensor, Tensor, Tensor)",
    "spmm_fwd": "(Tensor rowptr, Tensor col, Tensor colptr, Tensor row, Tensor csc_perm, "
                "Tensor hub_rows, Tensor hub_cols, Tensor? weight, Tensor x, str reduce) "
                "-> (Tensor, Tensor)",
    "spmm_bwd": "(Tensor grad_out, Tensor rowptr, Tensor col, Tensor colptr, Tensor row, "
                "Tensor csc_perm, Tensor hub_rows, Tensor hub_cols, Tensor? weight, Tensor x, "
                "Tensor arg, str reduce, bool weight_requires_grad) -> (Tensor, Tensor)",
    "gcn_aggregate_fwd": "(Tensor rowptr, Tensor col, Tensor colptr, Tensor row, Tensor hub_rows, "
                         "Tensor hub_cols, Tensor deg_inv_sqrt, Tensor x, bool add_self_loops) "
                         "-> Tensor",
    "gcn_aggregate_bwd": "(Tensor grad_out, Tensor colptr, Tensor row, Tensor hub_cols, "
                         "Tensor deg_inv_sqrt, bool add_self_loops) -> Tensor",
    "sddmm_fwd": "(Tensor rowptr, Tensor col, Tensor colptr, Tensor row, Tensor csc_perm, "
                 "Tensor hub_rows, Tensor hub_cols, Tensor a, Tensor b) -> Tensor",
    "sddmm_bwd": "(Tensor grad_out, Tensor rowptr, Tensor col, Tensor colptr, Tensor row, "
                 "Tensor csc_perm, Tensor hub_rows, Tensor hub_cols, Tensor a, Tensor b) "
                 "-> (Tensor, Tensor)",
    "gat_aggregate_fwd": "(Tensor rowptr, Tensor col, Tensor colptr, Tensor row, Tensor csc_perm, "
                         "Tensor hub_rows, Tensor hub_cols, Tensor x, Tensor alpha_src, "
                         "Tensor alpha_dst, float negative_slope) -> (Tensor, Tensor)",
    "gat_aggregate_bwd": "(Tensor grad_out, Tensor rowptr, Tensor col, Tensor colptr, Tensor row, "
                         "Tensor csc_perm, Tensor hub_rows, Tensor hub_cols, Tensor x, "
                         "Tensor alpha_src, Tensor alpha_dst, Tensor out, Tensor lse, "
                         "float negative_slope) -> (Tensor, Tensor, Tensor)",
}

EXTREME = ("max", "min")


def _fakes():
    def spmm_fwd(rowptr, col, colptr, row, csc_perm, hub_rows, hub_cols, weight, x, reduce):
        arg_shape = x.shape if reduce in EXTREME else (0,)
        return torch.empty_like(x), x.new_empty(arg_shape, dtype=torch.int64)

    def spmm_bwd(grad_out, rowptr, col, colptr, row, csc_perm, hub_rows, hub_cols, weight, x, arg,
                 reduce, weight_requires_grad):
        grad_w = (torch.empty_like(weight) if weight is not None and weight_requires_grad
                  else x.new_empty((0,)))
        return torch.empty_like(x), grad_w

    return {
        "csr_by_key": lambda keys, n, values=None, inverse=False: (
            keys.new_empty((n + 1,)), keys.new_empty(keys.shape),
            keys.new_empty((keys.numel() if values is not None else 0,)),
            keys.new_empty((keys.numel() if inverse else 0,))),
        "spmm_fwd": spmm_fwd,
        "spmm_bwd": spmm_bwd,
        "gcn_aggregate_fwd": lambda rowptr, col, colptr, row, hr, hc, dinv, x, loops: torch.empty_like(x),
        "gcn_aggregate_bwd": lambda g, colptr, row, hc, dinv, loops: torch.empty_like(g),
        "sddmm_fwd": lambda rowptr, col, colptr, row, csc_perm, hr, hc, a, b: a.new_empty(col.shape),
        "sddmm_bwd": lambda g, rowptr, col, colptr, row, csc_perm, hr, hc, a, b: (
            torch.empty_like(a), torch.empty_like(b)),
        "gat_aggregate_fwd": lambda rowptr, col, colptr, row, csc_perm, hr, hc, x, a_src, a_dst, slope: (
            torch.empty_like(x),
            a_src.new_empty(a_src.shape, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)),
        "gat_aggregate_bwd": lambda g, rowptr, col, colptr, row, csc_perm, hr, hc, x, a_src, a_dst, out, lse,
        slope: (torch.empty_like(x), torch.empty_like(a_src), torch.empty_like(a_dst)),
    }


def register_fakes_and_autograd(namespace: str) -> None:
    """Register fake kernels for every op of ``namespace``. The GNN ops exist only in the native
    build, whose autograd is C++ (csrc/gnn_autograd.cpp), so no Python autograd is registered."""
    _registry.register_fakes_and_autograd(namespace, _fakes(), lambda ops: {})
