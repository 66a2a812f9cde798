"""GNN layers on the fused ops, with PyG-compatible ``forward(x, edge_index)``.

``edge_index`` may be a PyG edge_index [2, E] (the Graph built from it is cached while the same
tensor object comes back, as in full-batch training) or a prebuilt ``sslfast.graph.Graph``.
Parameters and formulas follow PyG's ``GCNConv``, ``SAGEConv`` (mean), ``GATConv`` and ``GINConv``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..graph import Graph
from ..ops import _validate as check
from ..ops.gnn import gat_aggregate, gcn_aggregate, spmm

__all__ = ["GCNConv", "SAGEConv", "GATConv", "GINConv"]


class _GraphCache(nn.Module):
    """Caches the Graph built from an edge_index. ``reset_parameters()`` (called by ``__init__``)
    applies PyG's initializers, so code that calls ``torch_geometric.nn.inits.reset`` on a model
    (PyG's ``GAE.__init__`` does) gets the same initial weights as with PyG's layers."""

    def __init__(self, cached=False):
        super().__init__()
        self.cached = cached
        self._edge_index = None
        self._graph = None

    def graph_of(self, edge_index, num_nodes) -> Graph:
        if isinstance(edge_index, Graph):
            return edge_index
        if self.cached and self._graph is not None:  # PyG's cached=True: the first graph, kept
            return self._graph
        if self._edge_index is not edge_index or self._graph.num_nodes != num_nodes:
            self._graph = Graph.from_edge_index(edge_index, num_nodes=num_nodes)
            self._edge_index = edge_index
        return self._graph


def _check_x(x, in_channels):
    """x [N, in_channels]: named here rather than as a shape mismatch inside a matmul."""
    check.tensor("x", x, ndim=2)
    if in_channels is not None and x.shape[1] != in_channels:
        raise ValueError(f"x must have in_channels = {in_channels} columns, got shape {tuple(x.shape)}")
    return x


def _reset(module):
    """PyG's ``inits.reset``: the module's own ``reset_parameters`` if it has one, else its children's."""
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()
    else:
        for child in module.children():
            _reset(child)


def _glorot_(weight):
    bound = math.sqrt(6.0 / (weight.shape[0] + weight.shape[1]))
    with torch.no_grad():
        weight.uniform_(-bound, bound)


class GCNConv(_GraphCache):
    """PyG ``GCNConv``: out = D^-1/2 A_hat D^-1/2 (x W^T) + b with PyG's ``gcn_norm``: A_hat = the
    graph with its self loops replaced by one loop per node (``add_remaining_self_loops``: weight 1,
    2 when ``improved``, or the weight of the loop the node already had), D = weighted in-degree
    of A_hat. The arguments are PyG's, in PyG's order.
    ``normalize=False`` propagates A x W^T (edge weights as given, no self loops), as PyG does.
    ``edge_weight`` [E] is in the order of ``edge_index`` (or of the Graph's input).
    ``cached=True`` (transductive training, as PyG): the graph of the first call is reused for
    every later call, whatever edge_index is passed."""

    def __init__(self, in_channels, out_channels, improved=False, cached=False, add_self_loops=True, normalize=True,
                 bias=True):
        super().__init__(check.boolean("cached", cached))
        self.improved = check.boolean("improved", improved)
        self.in_channels = check.integer("in_channels", in_channels, 1)
        self.add_self_loops, self.normalize = add_self_loops, normalize
        self.lin = nn.Linear(in_channels, check.integer("out_channels", out_channels, 1), bias=False)
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        _glorot_(self.lin.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _propagate(self, graph: Graph, h, edge_weight):
        if not self.normalize:
            return spmm(graph, h, "sum", edge_weight)  # None: the Graph's own weights, if any
        if not self.add_self_loops:
            return gcn_aggregate(graph, h, add_self_loops=False, edge_weight=edge_weight)
        loop_pos, keep_pos, no_loops = graph.self_loop_split()
        if edge_weight is None and not self.improved:  # unit loops: the fused kernel's + I on the loop-free graph
            return gcn_aggregate(graph if no_loops is None else no_loops, h)
        if edge_weight is None:
            edge_weight = torch.ones(graph.num_edges, dtype=h.dtype, device=h.device)
        weight = graph.csr_edge_weight(edge_weight)
        loop_weight = torch.full((graph.num_nodes,), 2.0 if self.improved else 1.0, dtype=weight.dtype,
                                 device=weight.device)
        if no_loops is not None:
            loop_weight = loop_weight.index_put((graph.col[loop_pos],), weight[loop_pos])
        weight = torch.cat([weight[keep_pos], loop_weight])
        return gcn_aggregate(graph.with_one_loop_per_node(), h, add_self_loops=False, edge_weight=weight)

    def forward(self, x, edge_index, edge_weight=None):
        graph = self.graph_of(edge_index, _check_x(x, self.in_channels).shape[0])
        out = self._propagate(graph, self.lin(x), edge_weight)
        return out if self.bias is None else out + self.bias


class SAGEConv(_GraphCache):
    """PyG ``SAGEConv`` (aggr='mean', root_weight=True): out = lin_l(mean_j x_j) + lin_r(x)."""

    def __init__(self, in_channels, out_channels, aggr="mean", root_weight=True, bias=True):
        super().__init__()
        self.in_channels = check.integer("in_channels", in_channels, 1)
        self.aggr, self.root_weight = aggr, root_weight
        self.lin_l = nn.Linear(in_channels, check.integer("out_channels", out_channels, 1), bias=bias)
        self.lin_r = nn.Linear(in_channels, out_channels, bias=False) if root_weight else None

    def reset_parameters(self):  # PyG's Linear default: torch's nn.Linear init
        self.lin_l.reset_parameters()
        if self.lin_r is not None:
            self.lin_r.reset_parameters()

    def forward(self, x, edge_index):
        graph = self.graph_of(edge_index, _check_x(x, self.in_channels).shape[0])
        out = self.lin_l(spmm(graph, x, self.aggr))
        return out + self.lin_r(x) if self.root_weight else out


class GINConv(_GraphCache):
    """PyG ``GINConv``: out = nn((1 + eps) * x + sum_j x_j)."""

    def __init__(self, nn_module, eps=0.0, train_eps=False):
        super().__init__()
        self.nn = nn_module
        self.initial_eps = eps
        if train_eps:
            self.eps = nn.Parameter(torch.tensor([float(eps)]))
        else:
            self.register_buffer("eps", torch.tensor([float(eps)]))

    def reset_parameters(self):
        _reset(self.nn)
        with torch.no_grad():
            self.eps.fill_(self.initial_eps)

    def forward(self, x, edge_index):
        graph = self.graph_of(edge_index, _check_x(x, None).shape[0])
        return self.nn((1 + self.eps) * x + spmm(graph, x, "sum"))


class GATConv(_GraphCache):
    """PyG ``GATConv``: x' = lin(x) as [N, H, C]; alpha_src / alpha_dst = <x', att>; softmax over
    each target's in-edges (self loops replaced by one per node, as PyG's default) of
    leaky_relu(alpha_src[j] + alpha_dst[i]), attention dropout ``dropout`` in training mode; heads
    concatenated (or averaged) + bias. Uses the fused ``gat_aggregate`` (the dropout mask is never
    stored: a fresh seed per call, regenerated in the backward)."""

    def __init__(self, in_channels, out_channels, heads=1, concat=True, negative_slope=0.2, dropout=0.0,
                 add_self_loops=True, bias=True):
        super().__init__()
        self.dropout = check.fraction("dropout", dropout)
        self.in_channels = check.integer("in_channels", in_channels, 1)
        self.heads, self.out_channels, self.concat = check.integer("heads", heads, 1), out_channels, concat
        check.integer("out_channels", out_channels, 1)
        self.negative_slope, self.add_self_loops = negative_slope, add_self_loops
        self.lin = nn.Linear(in_channels, heads * out_channels, bias=False)
        self.att_src = nn.Parameter(torch.empty(1, heads, out_channels))
        self.att_dst = nn.Parameter(torch.empty(1, heads, out_channels))
        self.bias = nn.Parameter(torch.empty(heads * out_channels if concat else out_channels)) if bias else None
        self._loop_source = None
        self.reset_parameters()

    def reset_parameters(self):
        _glorot_(self.lin.weight)
        for att in (self.att_src, self.att_dst):
            _glorot_(att.view(self.heads, self.out_channels))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _with_self_loops(self, graph: Graph) -> Graph:
        if not self.add_self_loops:
            return graph
        if self._loop_source is not graph:
            edge_index = graph.edge_index()
            edge_index = edge_index[:, edge_index[0] != edge_index[1]]
            loops = torch.arange(graph.num_nodes, device=edge_index.device).expand(2, -1)
            self._loop_graph = Graph.from_edge_index(torch.cat([edge_index, loops], dim=1), graph.num_nodes)
            self._loop_source = graph
        return self._loop_graph

    def forward(self, x, edge_index):
        graph = self._with_self_loops(self.graph_of(edge_index, _check_x(x, self.in_channels).shape[0]))
        h = self.lin(x).view(-1, self.heads, self.out_channels)
        alpha_src = (h * self.att_src).sum(-1)
        alpha_dst = (h * self.att_dst).sum(-1)
        out = gat_aggregate(graph, h, alpha_src, alpha_dst, self.negative_slope,
                            dropout=self.dropout if self.training else 0.0)
        out = out.reshape(-1, self.heads * self.out_channels) if self.concat else out.mean(dim=1)
        return out if self.bias is None else out + self.bias
