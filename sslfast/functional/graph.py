"""Graph compositions that are not fused kernels: the GAE / VGAE edge loss (over the fused
``sddmm``), negative sampling and the per-target edge softmax.

Torch ops with static shapes where the op allows it; the fused message-passing ops (spmm, GCN,
SDDMM, GAT) are ``sslfast.ops.gnn``.
"""

from __future__ import annotations

import torch
from torch.utils.weak import WeakTensorKeyDictionary

from ..graph import Graph
from ..ops import _validate as check
from ..ops.gnn import as_graph, sddmm

__all__ = ["inner_product_edge_loss", "negative_sampling", "edge_softmax"]


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


# Sorted unique keys (source * n + target) of an edge_index, kept while the tensor lives and is
# unchanged: GAE / VGAE draw negatives against the same graph every step, and the keys cost a
# graph build and a sort (benchmarks/NOTES.md, "Methods (issue 15)").
_EDGE_KEYS = WeakTensorKeyDictionary()


def _edge_keys(edge_index, num_nodes):
    """(num_nodes, num_edges, sorted unique keys) of ``edge_index``."""
    cacheable = isinstance(edge_index, torch.Tensor) and not torch.compiler.is_compiling()
    if cacheable:
        hit = _EDGE_KEYS.get(edge_index)
        if hit is not None and hit[0] == (edge_index._version, num_nodes):
            return hit[1]
    graph = Graph.from_edge_index(edge_index, num_nodes)  # validates edge_index and num_nodes
    ei = graph.edge_index()
    out = (graph.num_nodes, graph.num_edges, torch.unique(ei[0] * graph.num_nodes + ei[1]))
    if cacheable:
        _EDGE_KEYS[edge_index] = ((edge_index._version, num_nodes), out)
    return out


def negative_sampling(edge_index, num_nodes=None, num_neg=None, generator=None):
    """``num_neg`` uniform random (source, target) pairs that are not edges of ``edge_index``
    and not self loops, sampled on the device of ``edge_index`` (PyG ``negative_sampling``,
    'sparse' method). ``num_nodes`` defaults to the largest id + 1 and ``num_neg`` to the number of
    edges, as in PyG. Returns [2, num_neg] int64 (fewer only if the graph is nearly complete)."""
    n, num_edges, existing = _edge_keys(edge_index, num_nodes)
    num_neg = num_edges if num_neg is None else check.integer("num_neg", num_neg, 0)
    check.generator("generator", generator, existing, same_device=True)
    device = existing.device
    found = torch.empty(0, dtype=torch.int64, device=device)
    for _ in range(8):
        need = num_neg - found.numel()
        if need <= 0 or n < 2:
            break
        # An eighth more draws than needed covers the rejects (edges, self loops, repeats) of a
        # sparse graph in one round; unique sorts them, so the search walks `existing` in order.
        draw = torch.unique(torch.randint(0, n * n, (need + need // 8 + 16,), device=device, generator=generator))
        pos = torch.searchsorted(existing, draw).clamp_(max=max(existing.numel() - 1, 0))
        is_edge = existing[pos] == draw if existing.numel() else torch.zeros_like(draw, dtype=torch.bool)
        keep = draw[~is_edge & (draw // n != draw % n)]
        found = keep if found.numel() == 0 else torch.unique(torch.cat([found, keep]))  # no repeated pair
    found = found[torch.randperm(found.numel(), device=device, generator=generator)[:num_neg]]
    return torch.stack([found // n, found % n])


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
