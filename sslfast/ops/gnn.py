"""Fused GNN message passing: SpMM (sum / mean / max / min, edge weights), GCN aggregation,
SDDMM (per-edge dot products) and the GAE inner-product edge loss.

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

__all__ = ["spmm", "gcn_aggregate", "sddmm", "edge_softmax", "gat_aggregate", "inner_product_edge_loss", "negative_sampling"]

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


def _check_x(x, graph: Graph, name="x"):
    check.tensor(name, x, ndim=2)
    if x.shape[0] != graph.num_nodes:
        raise ValueError(f"{name} must have num_nodes = {graph.num_nodes} rows, got shape {tuple(x.shape)}")
    if x.device != graph.col.device:
        raise ValueError(f"{name} is on {x.device} but the graph is on {graph.col.device}")


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


def _weighted_gcn_aggregate(graph, x, add_self_loops, normalize, edge_weight):
    """dinv * spmm(A_w, dinv * x) + dinv^2 * x: the weighted spmm kernel (deterministic, no E x F
    tensor) between two row scalings; the weighted degree is a segment sum over the CSR rows."""
    if _resolve("spmm", x.device) == "reference":
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


def _check_pair(a, b, graph):
    _check_x(a, graph, "a")
    _check_x(b, graph, "b")
    check.same_device_and_dtype([("a", a), ("b", b)])
    if b.shape != a.shape:
        raise ValueError(f"b must have the shape of a {tuple(a.shape)}, got {tuple(b.shape)}")


def sddmm(graph, a, b):
    """Per-edge dot products: out[e] = <a[j], b[i]> for edge e = (j -> i), in the order of the
    edge_index the graph was built from. Gradients to a and b, over CSR / its transpose."""
    graph = as_graph(graph, num_nodes=a.shape[0] if isinstance(a, torch.Tensor) and a.dim() == 2 else None)
    _check_pair(a, b, graph)
    backend = _resolve("sddmm", a.device)
    if backend == "reference":
        return reference.sddmm(graph, a, b)
    ain, bin_ = _kernel_input(backend, a.device, a), _kernel_input(backend, b.device, b)
    scores = torch.ops.sslfast.sddmm_fwd(graph.rowptr, graph.col, graph.colptr, graph.row, graph.csc_perm,
                                         graph.hub_rows, graph.hub_cols, ain, bin_)
    return scores[graph.inv_perm].to(a.dtype)


def inner_product_edge_loss(z, pos_edge_index, neg_edge_index):
    """GAE / VGAE reconstruction loss: BCE on the logits <z[j], z[i]> of positive and negative
    edges, mean(softplus(-pos)) + mean(softplus(neg)) (PyG ``GAE.recon_loss`` without its 1e-15
    epsilon: the exact, overflow-free form). Edge sets are edge_index tensors or Graphs; no
    E x F tensor forward or backward."""
    check.tensor("z", z, ndim=2)
    losses = []
    for name, edges in (("pos_edge_index", pos_edge_index), ("neg_edge_index", neg_edge_index)):
        if isinstance(edges, torch.Tensor) and edges.layout == torch.strided and edges.dim() == 2 \
                and edges.shape[0] == 2 and edges.shape[1] == 0:
            raise ValueError(f"{name} must have at least one edge")
        try:
            graph = as_graph(edges, num_nodes=z.shape[0])
        except (TypeError, ValueError) as error:
            raise type(error)(f"{name}: {error}") from None
        logits = sddmm(graph, z, z)
        sign = -1.0 if name == "pos_edge_index" else 1.0
        losses.append(torch.nn.functional.softplus(sign * logits.float()).mean())
    return losses[0] + losses[1]


def negative_sampling(edge_index, num_nodes, num_neg, generator=None):
    """``num_neg`` uniform random (source, target) pairs that are not edges of ``edge_index``
    and not self loops, sampled on the device of ``edge_index`` (PyG ``negative_sampling``,
    'sparse' method). Returns [2, num_neg] int64 (fewer only if the graph is nearly complete)."""
    edge_index = Graph.from_edge_index(edge_index, num_nodes).edge_index()
    if isinstance(num_neg, bool) or not isinstance(num_neg, int) or num_neg < 0:
        raise ValueError(f"num_neg must be an int >= 0, got {num_neg!r}")
    device = edge_index.device
    n = int(num_nodes)
    existing = torch.unique(edge_index[0] * n + edge_index[1])
    found = torch.empty(0, dtype=torch.int64, device=device)
    for _ in range(8):
        need = num_neg - found.numel()
        if need <= 0 or n < 2:
            break
        draw = torch.randint(0, n * n, (2 * need + 16,), device=device, generator=generator)
        pos = torch.searchsorted(existing, draw).clamp_(max=max(existing.numel() - 1, 0))
        is_edge = existing[pos] == draw if existing.numel() else torch.zeros_like(draw, dtype=torch.bool)
        keep = draw[~is_edge & (draw // n != draw % n)]
        found = torch.unique(torch.cat([found, keep]))  # no repeated pair
        if found.numel() > num_neg:
            found = found[torch.randperm(found.numel(), device=device, generator=generator)[:num_neg]]
    return torch.stack([found // n, found % n])


def gat_aggregate(graph, h, alpha_src, alpha_dst, negative_slope=0.2):
    """Fused GAT aggregation (PyG ``GATConv`` propagate without dropout): for h [N, H, F],
    out[i, k] = sum over in-edges j -> i of softmax_i(leaky_relu(alpha_src[j, k] + alpha_dst[i, k],
    negative_slope)) * h[j, k]. h is read once per edge (CUDA: an online softmax; CPU: the row's
    scores and their maximum first); extra memory O(N * H);
    backward recomputes the edge probabilities. Rows without in-edges are 0 (add self loops to
    the graph for PyG's default)."""
    graph = as_graph(graph, num_nodes=h.shape[0] if isinstance(h, torch.Tensor) and h.dim() == 3 else None)
    check.tensor("h", h, ndim=3)
    if h.shape[0] != graph.num_nodes:
        raise ValueError(f"h must have num_nodes = {graph.num_nodes} rows, got shape {tuple(h.shape)}")
    if h.device != graph.col.device:
        raise ValueError(f"h is on {h.device} but the graph is on {graph.col.device}")
    for name, alpha in (("alpha_src", alpha_src), ("alpha_dst", alpha_dst)):
        check.tensor(name, alpha, ndim=2)
        check.same_device_and_dtype([("h", h), (name, alpha)])
        if tuple(alpha.shape) != tuple(h.shape[:2]):
            raise ValueError(f"{name} must have shape [num_nodes, heads] = {tuple(h.shape[:2])}, "
                             f"got {tuple(alpha.shape)}")
    negative_slope = float(negative_slope)
    backend = _resolve("gat_aggregate", h.device)
    if backend == "reference":
        return reference.gat_aggregate(graph, h, alpha_src, alpha_dst, negative_slope)
    hin = _kernel_input(backend, h.device, h)
    a_src, a_dst = alpha_src.to(hin.dtype).contiguous(), alpha_dst.to(hin.dtype).contiguous()
    out, _ = torch.ops.sslfast.gat_aggregate_fwd(graph.rowptr, graph.col, graph.colptr, graph.row, graph.csc_perm,
                                                 graph.hub_rows, graph.hub_cols, hin, a_src, a_dst, negative_slope)
    return out.to(h.dtype)


def edge_softmax(graph, scores):
    """Softmax of per-edge ``scores`` [E] or [E, H] over each target's in-edges (PyG
    ``softmax(src, index=edge_index[1])``), in the edge order of the graph's input.

    A composite of ``torch.segment_reduce`` over the Graph's CSR segments (one max, one sum;
    deterministic, autograd and compile through PyTorch), not a custom kernel: its output is
    already E x H, so fusing buys less here than in ``gat_aggregate``, which never builds it."""
    graph = as_graph(graph)
    check.tensor("scores", scores)
    if scores.dim() not in (1, 2) or scores.shape[0] != graph.num_edges:
        raise ValueError(f"scores must have shape [E] or [E, H] with E = {graph.num_edges}, "
                         f"got {tuple(scores.shape)}")
    if scores.device != graph.col.device:
        raise ValueError(f"scores is on {scores.device} but the graph is on {graph.col.device}")
    if graph.num_edges == 0:
        return scores.clone()
    csr = scores[graph.perm]
    lengths = graph.in_degree
    row_max = torch.segment_reduce(csr.detach(), "max", lengths=lengths, unsafe=True)
    shifted = torch.exp(csr - torch.repeat_interleave(row_max, lengths, dim=0, output_size=graph.num_edges))
    denom = torch.segment_reduce(shifted, "sum", lengths=lengths, unsafe=True)
    out = shifted / torch.repeat_interleave(denom, lengths, dim=0, output_size=graph.num_edges)
    return out[graph.inv_perm]
