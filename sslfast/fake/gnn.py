"""Fakes of the GNN ops (kernels: csrc/cpu/spmm.cpp, csrc/cuda/spmm.cpp -> kernels/spmm.cu).

``gat_aggregate_fwd`` also returns the per-(row, head) log-sum-exp in the accumulation dtype,
which the backward recomputes the edge weights from; ``spmm_fwd``'s second output is the int64
[N, F] CSR position chosen by max / min (an empty tensor for sum / mean).
"""

from __future__ import annotations

import torch

from .common import acc_dtype, empty

EXTREME = ("max", "min")


def fakes(widen: bool) -> dict:
    def spmm_fwd(rowptr, col, colptr, row, csc_perm, hub_rows, hub_cols, weight, x, reduce):
        arg_shape = x.shape if reduce in EXTREME else (0,)
        return empty(x), x.new_empty(arg_shape, dtype=torch.int64)

    def spmm_bwd(grad_out, rowptr, col, colptr, row, csc_perm, hub_rows, hub_cols, weight, x, arg, reduce,
                 weight_requires_grad):
        grad_w = empty(weight) if weight is not None and weight_requires_grad else x.new_empty((0,))
        return empty(x), grad_w

    def csr_by_key(keys, n, values=None, inverse=False):
        return (keys.new_empty((n + 1,)), keys.new_empty(keys.shape),
                keys.new_empty((keys.numel() if values is not None else 0,)),
                keys.new_empty((keys.numel() if inverse else 0,)))

    return {
        "spmm": lambda rowptr, col, colptr, row, csc_perm, hr, hc, weight, x, reduce: empty(x),
        "gcn_aggregate": lambda rowptr, col, colptr, row, hr, hc, dinv, x, loops: empty(x),
        "sddmm": lambda rowptr, col, colptr, row, csc_perm, hr, hc, perm, inv_perm, a, b: a.new_empty(col.shape),
        "gat_aggregate": lambda rowptr, col, colptr, row, csc_perm, hr, hc, x, a_src, a_dst, slope, p, seed: empty(x),
        "csr_by_key": csr_by_key,
        "spmm_fwd": spmm_fwd,
        "spmm_bwd": spmm_bwd,
        "gcn_aggregate_fwd": lambda rowptr, col, colptr, row, hr, hc, dinv, x, loops: empty(x),
        "gcn_aggregate_bwd": lambda g, colptr, row, hc, dinv, loops: empty(g),
        "sddmm_fwd": lambda rowptr, col, colptr, row, csc_perm, hr, hc, a, b: a.new_empty(col.shape),
        "sddmm_bwd": lambda g, rowptr, col, colptr, row, csc_perm, hr, hc, a, b: (
            empty(a), empty(b)),
        "gat_aggregate_fwd": lambda rowptr, col, colptr, row, csc_perm, hr, hc, x, a_src, a_dst, slope, p, seed: (
            empty(x), a_src.new_empty(a_src.shape, dtype=acc_dtype(x))),
        "gat_aggregate_bwd": lambda g, rowptr, col, colptr, row, csc_perm, hr, hc, x, a_src, a_dst, out, lse, slope,
        p, seed: (empty(x), empty(a_src), empty(a_dst)),
    }
