"""Fused GNN message passing: SpMM (sum / mean / max / min, edge weights) and GCN aggregation.

Each public function takes a ``sslfast.graph.Graph`` (or a PyG ``edge_index``, turned into one
Graph per call: build the Graph once and reuse it in training loops), validates, picks a backend
and calls the registered core op with the Graph's CSR tensors. No E x F message tensor, forward
or backward; backward runs over the cached transpose (deterministic, no float atomics).
Semantics: DESIGN.md "GNN" and ``sslfast.reference.gnn``.
"""

from __future__ import annotations

import torch

from .. import _backend, _native
from ..graph import Graph
from ..reference import gnn as reference
from . import _validate as check

__all__ = ["spmm", "gcn_aggregate"]

REDUCES = ("sum", "mean", "max", "min")

# The C++ extension has CPU and (when built with CUDA) CUDA kernels for this family; there is no
# Triton version, so ``auto`` runs native on both device types (DESIGN.md: GNN GPU = CUDA C++).
_NATIVE_DEVICES = _native.devices(has_cuda_kernel=True)
_TRITON_DEVICES = ()


def _resolve(op_name, device):
    return _backend.resolve(op_name, device.type, _NATIVE_DEVICES, triton_devices=_TRITON_DEVICES)


def as_graph(graph, num_nodes=None) -> Graph:
    """A ``Graph`` as is; an edge_index (or sparse adjacency) is built into one."""
    if isinstance(graph, Graph):
        return graph
    if isinstance(graph, torch.Tensor):
        return Graph.from_edge_index(graph, num_nodes=num_nodes)
    raise TypeError(f"graph must be a sslfast.graph.Graph or an edge_index tensor, got {type(graph).__name__}")


def _check_x(x, graph: Graph):
    check.tensor("x", x, ndim=2)
    if x.shape[0] != graph.num_nodes:
        raise ValueError(f"x must have num_nodes = {graph.num_nodes} rows, got shape {tuple(x.shape)}")
    if x.device != graph.col.device:
        raise ValueError(f"x is on {x.device} but the graph is on {graph.col.device}")


def _kernel_input(backend, device, t):
    """The C++ CPU kernels compute in float32 / float64: half inputs are widened for them (the
    CUDA kernels read half types directly and accumulate in float32)."""
    if backend == "native" and device.type == "cpu" and t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    return t.contiguous()


def spmm(graph, x, reduce="sum", edge_weight=None):
    """out[i] = reduce over the in-edges j -> i of w_ji * x[j] (sum, mean, max or min).

    ``edge_weight`` [E] is in the order of the edge_index the graph was built from (default: the
    Graph's own weights, if any). Rows without in-edges are 0 for every reduce (PyG). Gradients
    flow to ``x`` and ``edge_weight`` (max / min: to the chosen edge, first on ties).
    """
    graph = as_graph(graph, num_nodes=x.shape[0] if isinstance(x, torch.Tensor) and x.dim() == 2 else None)
    _check_x(x, graph)
    if not isinstance(reduce, str) or reduce not in REDUCES:
        raise ValueError(f"reduce must be one of {REDUCES}, got {reduce!r}")
    weight = graph.edge_weight if edge_weight is None else graph.csr_edge_weight(edge_weight)
    backend = _resolve("spmm", x.device)
    if backend == "reference":
        return reference.spmm(graph, x, reduce, edge_weight)
    xin = _kernel_input(backend, x.device, x)
    if weight is not None:
        weight = weight.to(xin.dtype).contiguous()
    out, _ = torch.ops.sslfast.spmm_fwd(graph.rowptr, graph.col, graph.colptr, graph.row, graph.csc_perm,
                                        graph.hub_rows, graph.hub_cols, weight, xin, reduce)
    return out.to(x.dtype)


def gcn_aggregate(graph, x, add_self_loops=True, normalize=True):
    """D^-1/2 (A + I) D^-1/2 x with the normalization fused (PyG ``gcn_norm`` + propagate):
    D = in-degree (+ 1 with self loops), cached with the graph. ``add_self_loops`` adds I even
    where the graph already has a self loop; ``normalize=False`` gives (A + I) x."""
    graph = as_graph(graph, num_nodes=x.shape[0] if isinstance(x, torch.Tensor) and x.dim() == 2 else None)
    _check_x(x, graph)
    backend = _resolve("gcn_aggregate", x.device)
    if backend == "reference":
        return reference.gcn_aggregate(graph, x, add_self_loops=bool(add_self_loops), normalize=bool(normalize))
    xin = _kernel_input(backend, x.device, x)
    acc = torch.float64 if xin.dtype == torch.float64 else torch.float32
    if normalize:
        dinv = graph.gcn_norm(bool(add_self_loops), acc)
    else:
        dinv = graph.gcn_norm_ones(acc)
    out = torch.ops.sslfast.gcn_aggregate_fwd(graph.rowptr, graph.col, graph.colptr, graph.row,
                                              graph.hub_rows, graph.hub_cols, dinv, xin, bool(add_self_loops))
    return out.to(x.dtype)
