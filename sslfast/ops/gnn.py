"""Fused GNN message passing: SpMM (sum / mean / max / min, edge weights), GCN aggregation,
SDDMM (per-edge dot products) and fused GAT attention.

Each public function takes a ``sslfast.graph.Graph`` (or a PyG ``edge_index``, turned into one
Graph per call: build the Graph once and reuse it in training loops), checks its arguments, asks
the op table for the backend and makes one call of the registered op with the Graph's CSR
tensors (autograd in csrc/autograd/gnn.cpp). No E x F message tensor, forward or backward;
backward runs over the cached transpose (deterministic, no float atomics). Semantics:
``sslfast.reference.gnn``.
"""

from __future__ import annotations

import torch

from .. import _dispatch
from ..graph import Graph
from ..reference import gnn as reference
from . import _validate as check

__all__ = ["spmm", "gcn_aggregate", "sddmm", "gat_aggregate"]

REDUCES = ("sum", "mean", "max", "min")


def as_graph(graph, num_nodes=None) -> Graph:
    """A ``Graph`` as is; an edge_index (or sparse adjacency) is built into one."""
    if isinstance(graph, Graph):
        return graph
    if isinstance(graph, torch.Tensor):
        return Graph.from_edge_index(graph, num_nodes=num_nodes)
    raise TypeError(f"graph must be a sslfast.graph.Graph or an edge_index tensor, got {type(graph).__name__}")


def _check_x(x, graph: Graph, name="x"):
    check.tensor(name, x, ndim=2)
    if x.shape[0] != graph.num_nodes:
        raise ValueError(f"{name} must have num_nodes = {graph.num_nodes} rows, got shape {tuple(x.shape)}")
    check.same_device(name, x, "the graph", graph.col)


def _kernel_input(t):
    """The C++ CPU kernels compute in float32 / float64: half inputs are widened for them (the
    CUDA kernels read half types directly and accumulate in float32)."""
    dtype = t.dtype
    if (dtype is torch.float16 or dtype is torch.bfloat16) and not t.is_cuda:
        t = t.float()
    return t.contiguous()


def _same_dtype(out, like):
    return out if out.dtype == like.dtype else out.to(like.dtype)


def spmm(graph, x, reduce="sum", edge_weight=None):
    """out[i] = reduce over the in-edges j -> i of w_ji * x[j] (sum, mean, max or min).

    ``edge_weight`` [E] is in the order of the edge_index the graph was built from (default: the
    Graph's own weights, if any). Rows without in-edges are 0 for every reduce (PyG). Gradients
    flow to ``x`` and ``edge_weight`` (max / min: to the chosen edge, first on ties).
    """
    graph = as_graph(graph, num_nodes=x.shape[0] if isinstance(x, torch.Tensor) and x.dim() == 2 else None)
    _check_x(x, graph)
    if reduce not in REDUCES:
        raise ValueError(f"reduce must be one of {REDUCES}, got {reduce!r}")
    weight = graph.edge_weight if edge_weight is None else graph.csr_edge_weight(edge_weight)
    ops = _dispatch.ops_for("spmm", x)
    if ops is None:
        return reference.spmm(graph, x, reduce, edge_weight)
    xin = _kernel_input(x)
    if weight is not None and weight.dtype != xin.dtype:
        weight = weight.to(xin.dtype)
    out = ops.spmm(graph.rowptr, graph.col, graph.colptr, graph.row, graph.csc_perm, graph.hub_rows,
                   graph.hub_cols, weight, xin, reduce)
    return _same_dtype(out, x)


def gcn_aggregate(graph, x, add_self_loops=True, normalize=True, edge_weight=None):
    """D^-1/2 (A + I) D^-1/2 x with the normalization fused (PyG ``gcn_norm`` + propagate):
    D = in-degree (+ 1 with self loops), cached with the graph. ``add_self_loops`` adds I even
    where the graph already has a self loop (``sslfast.nn.GCNConv`` replaces existing loops
    instead, as PyG does); ``normalize=False`` gives (A + I) x.

    ``edge_weight`` [E] (order of the graph's input edge_index; default: unweighted, the Graph's
    own weights are not used here) makes A[i, j] = w_ji and D the weighted in-degree (+ 1): then
    the op is ``spmm`` with the weights on D^-1/2-scaled rows, and gradients reach the weights too.
    """
    graph = as_graph(graph, num_nodes=x.shape[0] if isinstance(x, torch.Tensor) and x.dim() == 2 else None)
    _check_x(x, graph)
    if edge_weight is not None:
        Graph._check_weight(edge_weight, graph.num_edges, graph.col.device)  # shape [E], float, device
        return _weighted_gcn_aggregate(graph, x, bool(add_self_loops), bool(normalize), edge_weight)
    ops = _dispatch.ops_for("gcn_aggregate", x)
    if ops is None:
        return reference.gcn_aggregate(graph, x, add_self_loops=bool(add_self_loops), normalize=bool(normalize))
    xin = _kernel_input(x)
    acc = torch.float64 if xin.dtype == torch.float64 else torch.float32
    dinv = graph.gcn_norm(bool(add_self_loops), acc) if normalize else graph.gcn_norm_ones(acc)
    out = ops.gcn_aggregate(graph.rowptr, graph.col, graph.colptr, graph.row, graph.hub_rows, graph.hub_cols,
                            dinv, xin, bool(add_self_loops))
    return _same_dtype(out, x)


def _weighted_gcn_aggregate(graph, x, add_self_loops, normalize, edge_weight):
    """dinv * spmm(A_w, dinv * x) + dinv^2 * x: the weighted spmm kernel (deterministic, no E x F
    tensor) between two row scalings; the weighted degree is a segment sum over the CSR rows."""
    if _dispatch.ops_for("spmm", x) is None:
        return reference.gcn_aggregate(graph, x, add_self_loops, normalize, edge_weight)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    xs = x.to(acc)
    loops = 1.0 if add_self_loops else 0.0
    if normalize:
        weight = graph.csr_edge_weight(edge_weight).to(acc)
        if graph.num_edges:
            deg = torch.segment_reduce(weight, "sum", lengths=graph.in_degree, unsafe=True) + loops
        else:
            deg = torch.full((graph.num_nodes,), loops, dtype=acc, device=x.device)
        dinv = deg.pow(-0.5)
        dinv = dinv.masked_fill(dinv == float("inf"), 0).unsqueeze(1)
        out = dinv * spmm(graph, dinv * xs, "sum", edge_weight.to(acc))
        if add_self_loops:
            out = out + dinv * dinv * xs
    else:
        out = spmm(graph, xs, "sum", edge_weight.to(acc))
        if add_self_loops:
            out = out + xs
    return out.to(x.dtype)


def sddmm(graph, a, b):
    """Per-edge dot products: out[e] = <a[j], b[i]> for edge e = (j -> i), in the order of the
    edge_index the graph was built from. Gradients to a and b, over CSR / its transpose."""
    graph = as_graph(graph, num_nodes=a.shape[0] if isinstance(a, torch.Tensor) and a.dim() == 2 else None)
    _check_x(a, graph, "a")
    _check_x(b, graph, "b")
    check.same_device_and_dtype("b", b, "a", a)
    check.same_shape("b", b, "a", a)
    ops = _dispatch.ops_for("sddmm", a)
    if ops is None:
        return reference.sddmm(graph, a, b)
    out = ops.sddmm(graph.rowptr, graph.col, graph.colptr, graph.row, graph.csc_perm, graph.hub_rows,
                    graph.hub_cols, graph.perm, graph.inv_perm, _kernel_input(a), _kernel_input(b))
    return _same_dtype(out, a)


def gat_aggregate(graph, h, alpha_src, alpha_dst, negative_slope=0.2, *, dropout=0.0, seed=None, generator=None):
    """Fused GAT aggregation (PyG ``GATConv`` propagate): for h [N, H, F], out[i, k] = sum over
    in-edges j -> i of softmax_i(leaky_relu(alpha_src[j, k] + alpha_dst[i, k], negative_slope))
    * h[j, k]. h is read once per edge (CUDA: an online softmax; CPU: the row's scores and their
    maximum first); extra memory O(N * H); backward recomputes the edge probabilities. Rows without
    in-edges are 0 (add self loops to the graph for PyG's default).

    ``dropout``: attention dropout, as PyG's ``F.dropout`` of the attention coefficients (kept ones
    scaled by 1 / (1 - dropout)); the mask is a hash of (``seed``, edge, head), regenerated in the
    backward, never stored (no E x H tensor). ``seed`` defaults to a draw from ``generator`` (a CPU
    generator, or torch's default one: a host draw, no device sync)."""
    graph = as_graph(graph, num_nodes=h.shape[0] if isinstance(h, torch.Tensor) and h.dim() == 3 else None)
    check.tensor("h", h, ndim=3)
    if h.shape[0] != graph.num_nodes:
        raise ValueError(f"h must have num_nodes = {graph.num_nodes} rows, got shape {tuple(h.shape)}")
    check.same_device("h", h, "the graph", graph.col)
    for name, alpha in (("alpha_src", alpha_src), ("alpha_dst", alpha_dst)):
        check.tensor(name, alpha, ndim=2)
        check.same_device_and_dtype(name, alpha, "h", h)
        if alpha.shape != h.shape[:2]:
            raise ValueError(f"{name} must have shape [num_nodes, heads] = {tuple(h.shape[:2])}, "
                             f"got {tuple(alpha.shape)}")
    negative_slope = check.real("negative_slope", negative_slope)
    dropout = check.fraction("dropout", dropout)
    seed = _dropout_seed(dropout, seed, generator)
    ops = _dispatch.ops_for("gat_aggregate", h)
    if ops is None:
        return reference.gat_aggregate(graph, h, alpha_src, alpha_dst, negative_slope, dropout, seed)
    hin = _kernel_input(h)
    if hin is not h:  # half inputs on CPU: the alphas follow h to float32
        alpha_src, alpha_dst = alpha_src.to(hin.dtype), alpha_dst.to(hin.dtype)
    out = ops.gat_aggregate(graph.rowptr, graph.col, graph.colptr, graph.row, graph.csc_perm, graph.hub_rows,
                            graph.hub_cols, hin, alpha_src.contiguous(), alpha_dst.contiguous(), negative_slope,
                            dropout, seed)
    return _same_dtype(out, h)


def _dropout_seed(p, seed, generator):
    """The dropout mask's key: ``seed``, or a host draw from a CPU generator (0 without dropout)."""
    if seed is not None:
        return check.integer("seed", seed, 0)
    if p == 0:
        return 0
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != "cpu":
            raise ValueError(f"generator must be a CPU generator (the mask key is drawn on the host), "
                             f"got one on {generator.device}")
    return int(torch.randint(0, 2 ** 62, (), generator=generator))
