"""Eager-PyTorch definitions of the GNN ops: the executable spec (PyG conventions).

``edge_index`` [2, E]: row 0 source j, row 1 target i; messages x[j] (times the edge weight)
aggregate at i with index_add / scatter_reduce, as PyG's ``MessagePassing`` does. These build
the E x F message tensor; the fused ops never do.
"""

from __future__ import annotations

import torch

__all__ = ["spmm", "gcn_aggregate", "sddmm", "edge_softmax", "gat_aggregate", "inner_product_edge_loss",
           "csr", "csr_and_transpose"]

REDUCES = ("sum", "mean", "max", "min")


def spmm(graph, x, reduce="sum", edge_weight=None):
    """out[i] = reduce over edges j -> i of w_ji * x[j]; rows without in-edges are 0.

    ``graph``: a ``Graph`` (its CSR-order weights are used when ``edge_weight`` is None) or an
    edge_index; ``edge_weight`` is in the edge order of ``edge_index`` / of the Graph's input."""
    from ..graph import Graph

    if isinstance(graph, Graph):
        edge_index = graph.edge_index()
        weight = graph.edge_weight if edge_weight is None else edge_weight[graph.perm]
    else:
        edge_index, weight = graph, edge_weight
    src, dst = edge_index[0], edge_index[1]
    n = x.shape[0]
    message = x[src]
    if weight is not None:
        message = message * weight.to(x.dtype).unsqueeze(1)
    if reduce in ("sum", "mean"):
        out = torch.zeros_like(x).index_add_(0, dst, message)
        if reduce == "mean":
            count = torch.bincount(dst, minlength=n).clamp(min=1).to(x.dtype)
            out = out / count.unsqueeze(1)
        return out
    if reduce not in REDUCES:
        raise ValueError(f"reduce must be one of {REDUCES}, got {reduce!r}")
    index = dst.unsqueeze(1).expand_as(message)
    best = torch.zeros_like(x).scatter_reduce(0, index, message, reduce="amax" if reduce == "max" else "amin",
                                              include_self=False)
    # The value and its gradient come from one edge per (row, feature): the first (CSR order) that
    # attains it, as the kernels do; scatter_reduce's backward would split a tie evenly.
    with torch.no_grad():
        edge = torch.arange(message.shape[0], device=x.device).unsqueeze(1).expand_as(message)
        candidate = torch.where(message == best[dst], edge, message.shape[0])
        first = torch.full(x.shape, message.shape[0], dtype=edge.dtype, device=x.device)
        first = first.scatter_reduce(0, index, candidate, reduce="amin")
        chosen = edge == first[dst]
    picked = torch.zeros_like(x).index_add_(0, dst, torch.where(chosen, message, torch.zeros_like(message)))
    return torch.where(torch.isnan(best), best, picked)  # NaN in gives NaN out


def gcn_aggregate(graph, x, add_self_loops=True, normalize=True, edge_weight=None):
    """D^-1/2 (A + I) D^-1/2 x (PyG ``gcn_norm`` + propagate): A[i, j] = w_ji (1 without
    ``edge_weight``, which is in the edge order of ``graph``'s input), D = weighted in-degree
    (+1 with self loops), edge weight of j -> i = d_j^-1/2 w_ji d_i^-1/2, zero where a degree is
    zero. I is added for every node, also where the graph already has a self loop."""
    from ..graph import Graph

    if isinstance(graph, Graph):
        edge_index, n = graph.edge_index(), graph.num_nodes
        weight = None if edge_weight is None else edge_weight[graph.perm]
    else:
        edge_index, n, weight = graph, x.shape[0], edge_weight
    src, dst = edge_index[0], edge_index[1]
    weight = torch.ones(src.shape[0], dtype=x.dtype, device=x.device) if weight is None else weight.to(x.dtype)
    if add_self_loops:
        loop = torch.arange(n, device=x.device)
        src, dst = torch.cat([src, loop]), torch.cat([dst, loop])
        weight = torch.cat([weight, torch.ones(n, dtype=x.dtype, device=x.device)])
    if normalize:
        deg = torch.zeros(n, dtype=x.dtype, device=x.device).index_add_(0, dst, weight)
        dinv = deg.pow(-0.5)
        dinv = dinv.masked_fill(dinv == float("inf"), 0)
        weight = dinv[src] * weight * dinv[dst]
    return torch.zeros_like(x).index_add_(0, dst, x[src] * weight.unsqueeze(1))


def sddmm(graph, a, b):
    """out[e] = <a[j], b[i]> for edge e = (j -> i), in the edge order of ``graph``'s input."""
    from ..graph import Graph

    if isinstance(graph, Graph):
        src, dst = graph.col[graph.inv_perm], graph.target[graph.inv_perm]
    else:
        src, dst = graph[0], graph[1]
    return (a[src] * b[dst]).sum(-1)


def inner_product_edge_loss(z, pos_edge_index, neg_edge_index):
    """-mean(log sigmoid(<z_j, z_i>)) over positives - mean(log(1 - sigmoid(.))) over negatives."""
    import torch.nn.functional as F

    pos = sddmm(pos_edge_index, z, z).float()
    neg = sddmm(neg_edge_index, z, z).float()
    return -F.logsigmoid(pos).mean() - F.logsigmoid(-neg).mean()


def gat_aggregate(graph, h, alpha_src, alpha_dst, negative_slope=0.2, dropout=0.0, seed=0):
    """PyG GATConv's propagate: e = leaky_relu(alpha_src[j] + alpha_dst[i]) per edge and head,
    softmax over each target's in-edges, out[i] = sum_j a_ji h[j] (E x H x F messages). With
    ``dropout``, attention dropout on a (PyG: F.dropout(alpha)) with the kernels' mask: edge e (CSR
    position) at head k kept, scaled by 1 / (1 - dropout), where uniform(seed, e * H + k) >= dropout
    (sslfast/reference/random.py); a Graph gives the CSR order, an edge_index is taken as CSR order."""
    import torch.nn.functional as F
    from ..graph import Graph

    src, dst = (graph.col, graph.target) if isinstance(graph, Graph) else (graph[0], graph[1])
    n, heads = h.shape[0], h.shape[1]
    e = F.leaky_relu(alpha_src[src] + alpha_dst[dst], negative_slope)  # [E, H]
    index = dst.unsqueeze(1).expand_as(e)
    row_max = torch.full((n, heads), float("-inf"), dtype=e.dtype, device=e.device).scatter_reduce(
        0, index, e.detach(), reduce="amax", include_self=True)
    p = torch.exp(e - row_max[dst])
    denom = torch.zeros(n, heads, dtype=e.dtype, device=e.device).index_add_(0, dst, p)
    attention = p / denom[dst]
    if dropout > 0:
        from .random import keep_mask

        p32 = float(torch.tensor(dropout, dtype=torch.float32))  # the kernels compare in float32
        keep = keep_mask(seed, attention.numel(), p32, device=attention.device).reshape(attention.shape)
        attention = attention * keep.to(attention.dtype) * (1.0 / (1.0 - p32))
    return torch.zeros_like(h).index_add_(0, dst, attention.unsqueeze(-1) * h[src])


def edge_softmax(graph, scores):
    """PyG ``softmax(scores, index=target)``: per target, exp(s - max) / sum exp(s - max)."""
    from ..graph import Graph

    dst = graph.target[graph.inv_perm] if isinstance(graph, Graph) else graph[1]
    n = graph.num_nodes if isinstance(graph, Graph) else int(dst.max()) + 1 if dst.numel() else 0
    shape = (n,) + tuple(scores.shape[1:])
    index = dst.view(-1, *([1] * (scores.dim() - 1))).expand_as(scores)
    row_max = torch.full(shape, float("-inf"), dtype=scores.dtype, device=scores.device).scatter_reduce(
        0, index, scores.detach(), reduce="amax", include_self=True)
    p = torch.exp(scores - row_max[dst])
    denom = torch.zeros(shape, dtype=scores.dtype, device=scores.device).index_add_(0, dst, p)
    return p / denom[dst]


def csr(edge_index, num_nodes):
    """The destination-sorted CSR in plain torch (stable argsort by target, offsets from
    bincount + cumsum): (rowptr, col, perm)."""
    from ..graph import _offsets  # bincount + cumsum, plain torch

    src, dst = edge_index[0], edge_index[1]
    perm = torch.argsort(dst, stable=True)
    return _offsets(dst, num_nodes), src[perm], perm


def csr_and_transpose(edge_index, num_nodes):
    """What ``Graph.from_edge_index`` builds, in plain torch: ``csr`` and its transpose (stable
    argsort of the CSR sources). Returns (rowptr, col, perm, colptr, row, csc_perm)."""
    from ..graph import _offsets

    rowptr, col, perm = csr(edge_index, num_nodes)
    csc_perm = torch.argsort(col, stable=True)
    return rowptr, col, perm, _offsets(edge_index[0], num_nodes), edge_index[1][perm][csc_perm], csc_perm
