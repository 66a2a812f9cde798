"""GNN layers on the fused ops, drop-in for PyG 2.8's ``GCNConv``, ``SAGEConv``, ``GATConv`` and
``GINConv``: the same constructor arguments (in PyG's order), forward signatures, parameter names
and shapes (``load_state_dict(pyg_model.state_dict())`` works) and outputs. What they do not
support (bipartite inputs, ``edge_dim``, lazy ``in_channels=-1``, sparse adjacencies, other
MessagePassing options) raises a ValueError / TypeError naming the argument; docs/compat-pyg.md
lists it all.

``edge_index`` is a PyG edge_index [2, E] (the Graph built from it is cached while the same,
unmodified tensor comes back, as in full-batch training) or a prebuilt ``sslfast.graph.Graph``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..graph import Graph
from ..ops import _validate as check
from ..ops.augment import drop_mask
from ..ops.gnn import _dropout_seed, gat_aggregate, gcn_aggregate, spmm

__all__ = ["GCNConv", "SAGEConv", "GATConv", "GINConv"]


def _pyg_options(cls_name, kwargs, defaults):
    """PyG's ``**kwargs`` (MessagePassing options): each may only be PyG's default for this layer,
    which is what the fused ops compute; anything else is named in the error."""
    defaults = {"flow": "source_to_target", "decomposed_layers": 1, **defaults}
    for name, value in kwargs.items():
        if name not in defaults:
            raise TypeError(f"{cls_name}: unsupported argument {name!r} (a PyG MessagePassing option or an "
                            f"unknown keyword; see docs/compat-pyg.md)")
        default = defaults[name]
        if type(value) is not type(default) or value != default:
            raise ValueError(f"{cls_name}: {name}={value!r} is not supported; only PyG's default "
                             f"{name}={default!r}")


def _unsupported(cls_name, name, value, default, why):
    if value is not default and not (type(value) is type(default) and value == default):
        raise ValueError(f"{cls_name}: {name}={value!r} is not supported ({why}); only {name}={default!r}")


def _in_channels(cls_name, in_channels):
    if isinstance(in_channels, (tuple, list)):
        raise ValueError(f"{cls_name}: in_channels={tuple(in_channels)!r} (bipartite source / target sizes) is "
                         f"not supported; pass one int")
    if isinstance(in_channels, int) and not isinstance(in_channels, bool) and in_channels <= 0:
        raise ValueError(f"{cls_name}: in_channels={in_channels} (PyG's lazy initialization) is not supported; "
                         f"pass the input size")
    return check.integer("in_channels", in_channels, 1)


def _single_x(cls_name, x):
    """PyG lets x be a pair (x_src, x_dst) for bipartite graphs; a pair of one tensor is the
    ordinary case, anything else is not supported."""
    if isinstance(x, (tuple, list)):
        if len(x) == 2 and x[0] is x[1]:
            return x[0]
        raise TypeError(f"{cls_name}: x as a (x_src, x_dst) pair (bipartite message passing) is not supported; "
                        f"pass one [N, F] tensor")
    return x


def _no_size(cls_name, size):
    if size is not None:
        raise ValueError(f"{cls_name}: size={size!r} (bipartite message passing) is not supported; "
                         f"the graph is square, num_nodes = x.shape[0]")


class _GraphCache(nn.Module):
    """Caches the Graph built from an edge_index. ``reset_parameters()`` (called by ``__init__``)
    applies PyG's initializers, so code that calls ``torch_geometric.nn.inits.reset`` on a model
    (PyG's ``GAE.__init__`` does) gets the same initial weights as with PyG's layers."""

    def __init__(self, keep_first=False):
        super().__init__()
        self._keep_first = keep_first
        self._key = None
        self._graph = None

    def _clear_cache(self):
        self._key = self._graph = None

    def graph_of(self, edge_index, num_nodes) -> Graph:
        if self._keep_first and self._graph is not None:  # GCNConv's cached=True: the first graph, kept
            return self._graph
        if isinstance(edge_index, Graph):
            if self._keep_first:  # a prebuilt Graph is "the first graph" too (its weights are kept with it)
                self._graph = edge_index
            return edge_index
        _check_adjacency(edge_index)
        if edge_index.is_inference() and not self._keep_first:
            # no version counter: an in-place edit could not be seen, so build every call
            return Graph.from_edge_index(edge_index, num_nodes=num_nodes)
        # an in-place edit of edge_index changes its version: rebuild
        key = (edge_index, None if edge_index.is_inference() else edge_index._version, num_nodes)
        if self._key is None or self._key[0] is not edge_index or self._key[1:] != key[1:]:
            self._graph = Graph.from_edge_index(edge_index, num_nodes=num_nodes)
            self._key = key
        return self._graph


def _check_adjacency(edge_index):
    """edge_index [2, E] or a Graph. PyG also takes a torch_sparse ``SparseTensor`` or a
    torch.sparse adjacency, with semantics of their own (GCN's loops are added, not replaced):
    refused rather than computed differently."""
    if not isinstance(edge_index, torch.Tensor):
        raise TypeError(f"edge_index must be an edge_index tensor [2, E] or a sslfast.graph.Graph, got "
                        f"{type(edge_index).__name__} (torch_sparse.SparseTensor is not supported: pass "
                        f"torch.stack([col, row]) of adj_t.coo())")
    if edge_index.layout != torch.strided:
        raise TypeError(f"edge_index must be an edge_index tensor [2, E] or a sslfast.graph.Graph; a "
                        f"{edge_index.layout} adjacency is not supported (pass its indices as edge_index, "
                        f"or sslfast.Graph.from_edge_index(adjacency))")


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
    """PyG ``GCNConv``: out = D^-1/2 A_hat D^-1/2 (x W^T) + b with PyG 2.8's ``gcn_norm``: A_hat =
    the graph with its self loops replaced by one loop per node (``add_remaining_self_loops``),
    D = weighted in-degree of A_hat. Loop weights as PyG computes them: with ``edge_weight``, 2 when
    ``improved`` else 1, or the weight of the loop the node already had; without ``edge_weight``
    always 1, ``improved`` or not (PyG's ``add_remaining_self_loops`` applies its fill value only
    to edge attributes; pass ``edge_weight=torch.ones(E)`` for A + 2I).
    ``add_self_loops`` defaults to ``normalize``; ``normalize=False`` propagates A x W^T (edge
    weights as given, no self loops) and cannot add loops (PyG raises the same).
    ``edge_weight`` [E] is in the order of ``edge_index`` (or of the Graph's input).
    ``cached=True`` (transductive training, as PyG): the graph and edge weights of the first call
    are reused for every later call, whatever is passed, until ``reset_parameters()``.
    ``x`` may be a sparse CSR tensor [N, in_channels] (bag-of-words features): x W^T is then a
    sparse x dense product, with the gradient to W."""

    def __init__(self, in_channels, out_channels, improved=False, cached=False, add_self_loops=None, normalize=True,
                 bias=True, **kwargs):
        _pyg_options("GCNConv", kwargs, {"aggr": "add", "node_dim": -2})
        normalize = check.boolean("normalize", normalize)
        # PyG caches the normalization only: without normalize every call reads its own graph
        super().__init__(keep_first=check.boolean("cached", cached) and normalize)
        self.cached = cached
        self.in_channels = _in_channels("GCNConv", in_channels)
        self.out_channels = check.integer("out_channels", out_channels, 1)
        self.improved = check.boolean("improved", improved)
        self.normalize = normalize
        add_self_loops = normalize if add_self_loops is None else check.boolean("add_self_loops", add_self_loops)
        if add_self_loops and not normalize:
            raise ValueError("GCNConv: add_self_loops=True needs normalize=True (PyG raises the same)")
        self.add_self_loops = add_self_loops
        self.lin = nn.Linear(in_channels, out_channels, bias=False)
        self.bias = nn.Parameter(torch.empty(out_channels)) if check.boolean("bias", bias) else None
        self._cached_weight = None
        self.reset_parameters()

    def reset_parameters(self):
        _glorot_(self.lin.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self._clear_cache()  # PyG drops its cached normalization here too
        self._cached_weight = None

    def _propagate(self, graph: Graph, h, edge_weight):
        if not self.normalize:
            return spmm(graph, h, "sum", edge_weight)  # None: the Graph's own weights, if any
        if not self.add_self_loops:
            return gcn_aggregate(graph, h, add_self_loops=False, edge_weight=edge_weight)
        loop_pos, keep_pos, no_loops = graph.self_loop_split()
        if edge_weight is None:  # unit loops (improved or not, as PyG): the fused kernel's + I on the loop-free graph
            return gcn_aggregate(graph if no_loops is None else no_loops, h)
        weight = graph.csr_edge_weight(edge_weight)
        loop_weight = torch.full((graph.num_nodes,), 2.0 if self.improved else 1.0, dtype=weight.dtype,
                                 device=weight.device)
        if no_loops is not None:
            loop_weight = loop_weight.index_put((graph.col[loop_pos],), weight[loop_pos])
        weight = torch.cat([weight[keep_pos], loop_weight])
        return gcn_aggregate(graph.with_one_loop_per_node(), h, add_self_loops=False, edge_weight=weight)

    def forward(self, x, edge_index, edge_weight=None):
        if isinstance(x, (tuple, list)):
            raise TypeError("GCNConv: x as a (x_src, x_dst) pair is not supported (PyG's GCNConv refuses it too)")
        graph = self.graph_of(edge_index, _check_x(x, self.in_channels).shape[0])
        if self.cached and self.normalize:  # PyG caches the normalized weights of the first call
            if self._cached_weight is None:
                self._cached_weight = (edge_weight,)
            edge_weight = self._cached_weight[0]
        out = self._propagate(graph, self.lin(x), edge_weight)
        return out if self.bias is None else out + self.bias


_SAGE_AGGR = {"mean": "mean", "sum": "sum", "add": "sum", "max": "max", "min": "min"}


class SAGEConv(_GraphCache):
    """PyG ``SAGEConv``: out = lin_l(aggr_j x_j) + lin_r(x), ``aggr`` one of mean, sum (add), max,
    min (nodes without in-edges aggregate to 0, as PyG); ``project``: x_j = relu(lin(x_j)) before
    the aggregation (the root term keeps x); ``normalize``: L2-normalized output rows."""

    def __init__(self, in_channels, out_channels, aggr="mean", normalize=False, root_weight=True, project=False,
                 bias=True, **kwargs):
        _pyg_options("SAGEConv", kwargs, {"node_dim": -2})
        super().__init__()
        if not isinstance(aggr, str) or aggr not in _SAGE_AGGR:
            raise ValueError(f"SAGEConv: aggr={aggr!r} is not supported; one of {sorted(_SAGE_AGGR)} "
                             f"(no lists, Aggregation modules or learnable aggregations)")
        self.in_channels = _in_channels("SAGEConv", in_channels)
        self.out_channels = check.integer("out_channels", out_channels, 1)
        self.aggr = aggr
        self.normalize = check.boolean("normalize", normalize)
        self.root_weight = check.boolean("root_weight", root_weight)
        self.project = check.boolean("project", project)
        if project:
            self.lin = nn.Linear(in_channels, in_channels, bias=True)
        self.lin_l = nn.Linear(in_channels, out_channels, bias=check.boolean("bias", bias))
        self.lin_r = nn.Linear(in_channels, out_channels, bias=False) if root_weight else None

    def reset_parameters(self):  # PyG's Linear default: torch's nn.Linear init
        for lin in (getattr(self, "lin", None), self.lin_l, self.lin_r):
            if lin is not None:
                lin.reset_parameters()

    def forward(self, x, edge_index, size=None):
        x = _single_x("SAGEConv", x)
        _no_size("SAGEConv", size)
        graph = self.graph_of(edge_index, _check_x(x, self.in_channels).shape[0])
        messages = F.relu(self.lin(x)) if self.project else x
        out = self.lin_l(spmm(graph, messages, _SAGE_AGGR[self.aggr]))
        if self.root_weight:
            out = out + self.lin_r(x)
        return F.normalize(out, p=2.0, dim=-1) if self.normalize else out


class GINConv(_GraphCache):
    """PyG ``GINConv``: out = nn((1 + eps) * x + sum_j x_j); ``train_eps`` makes eps a parameter."""

    def __init__(self, nn_module, eps=0.0, train_eps=False, **kwargs):
        _pyg_options("GINConv", kwargs, {"aggr": "add", "node_dim": -2})
        super().__init__()
        if not callable(nn_module):
            raise TypeError(f"GINConv: nn must be a module or callable, got {type(nn_module).__name__}")
        self.nn = nn_module
        self.initial_eps = check.real("eps", eps)
        if check.boolean("train_eps", train_eps):
            self.eps = nn.Parameter(torch.tensor([self.initial_eps]))
        else:
            self.register_buffer("eps", torch.tensor([self.initial_eps]))

    def reset_parameters(self):
        _reset(self.nn)
        with torch.no_grad():
            self.eps.fill_(self.initial_eps)

    def forward(self, x, edge_index, size=None):
        x = _single_x("GINConv", x)
        _no_size("GINConv", size)
        graph = self.graph_of(edge_index, _check_x(x, None).shape[0])
        return self.nn(spmm(graph, x, "sum") + (1 + self.eps) * x)


def _input_edges(edge_index, graph: Graph):
    """The edges in the order the graph was built from: edge_index itself, or a prebuilt Graph's
    CSR edges put back in its input order (the order ``_attention`` returns alpha in)."""
    return edge_index if isinstance(edge_index, torch.Tensor) else graph.edge_index()[:, graph.inv_perm]


class GATConv(_GraphCache):
    """PyG ``GATConv``: x' = lin(x) as [N, H, C]; alpha_src / alpha_dst = <x', att>; softmax over
    each target's in-edges (``add_self_loops``: self loops removed, then one added per node, as
    PyG) of leaky_relu(alpha_src[j] + alpha_dst[i]), attention dropout ``dropout`` in training
    mode; heads concatenated (or averaged) + bias. Uses the fused ``gat_aggregate`` (the dropout
    mask is never stored: a fresh seed per call drawn from torch's default generator, so
    ``torch.manual_seed`` makes it repeatable).
    ``return_attention_weights`` (truthy, as PyG) also returns ``(edge_index, alpha)``: the edges
    attended over (PyG's order: the input's non-loop edges, then the loops) and alpha [E', heads],
    after dropout, the very mask the output used."""

    def __init__(self, in_channels, out_channels, heads=1, concat=True, negative_slope=0.2, dropout=0.0,
                 add_self_loops=True, edge_dim=None, fill_value="mean", bias=True, residual=False, **kwargs):
        _pyg_options("GATConv", kwargs, {"aggr": "add"})
        _unsupported("GATConv", "edge_dim", edge_dim, None, "edge features in the attention")
        _unsupported("GATConv", "fill_value", fill_value, "mean", "it fills edge features of new loops")
        _unsupported("GATConv", "residual", residual, False, "no residual projection")
        super().__init__()
        self.in_channels = _in_channels("GATConv", in_channels)
        self.out_channels = check.integer("out_channels", out_channels, 1)
        self.heads = check.integer("heads", heads, 1)
        self.concat = check.boolean("concat", concat)
        self.negative_slope = check.real("negative_slope", negative_slope)
        self.dropout = check.fraction("dropout", dropout)
        self.add_self_loops = check.boolean("add_self_loops", add_self_loops)
        self.lin = nn.Linear(in_channels, heads * out_channels, bias=False)
        self.att_src = nn.Parameter(torch.empty(1, heads, out_channels))
        self.att_dst = nn.Parameter(torch.empty(1, heads, out_channels))
        self.bias = nn.Parameter(torch.empty(heads * out_channels if concat else out_channels)) \
            if check.boolean("bias", bias) else None
        self._loops_key = None
        self.reset_parameters()

    def reset_parameters(self):
        _glorot_(self.lin.weight)
        for att in (self.att_src, self.att_dst):
            _glorot_(att.view(self.heads, self.out_channels))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _attention_graph(self, edge_index, num_nodes):
        """(Graph, its edges as an edge_index in PyG's order): the input graph, or with
        ``add_self_loops`` its loop-free edges (input order) + one loop per node, cached while the
        input graph is (the loop removal is a boolean mask: a host sync, once per graph)."""
        graph = self.graph_of(edge_index, num_nodes)  # validates edge_index
        if not self.add_self_loops:
            return graph, None  # the edges are the input's, gathered only if asked for
        if self._loops_key is not graph:
            source = _input_edges(edge_index, graph).long()
            loops = torch.arange(graph.num_nodes, device=source.device).expand(2, -1)
            with_loops = torch.cat([source[:, source[0] != source[1]], loops], dim=1)
            self._loop_graph = (Graph.from_edge_index(with_loops, graph.num_nodes), with_loops)
            self._loops_key = graph
        return self._loop_graph

    def forward(self, x, edge_index, edge_attr=None, size=None, return_attention_weights=None):
        x = _single_x("GATConv", x)
        if edge_attr is not None:
            raise ValueError("GATConv: edge_attr is not supported (edge features need edge_dim, which sslfast's "
                             "GATConv does not have)")
        _no_size("GATConv", size)
        graph, edges = self._attention_graph(edge_index, _check_x(x, self.in_channels).shape[0])
        out, alpha_src, alpha_dst, p, seed = self._attend(graph, self.lin(x))
        if not return_attention_weights:
            return out
        edges = _input_edges(edge_index, graph) if edges is None else edges
        return out, (edges, self._attention(graph, alpha_src, alpha_dst, p, seed))

    def attend(self, h, edge_index):
        """``forward`` from the projected features ``h = lin(x)`` [N, heads * out_channels]: for
        callers that compute the projection in a cheaper way than from a dense x (GraphMAE
        projects its mask token once, not once per masked row)."""
        check.tensor("h", h, ndim=2)
        if h.shape[1] != self.heads * self.out_channels:
            raise ValueError(f"h must have heads * out_channels = {self.heads * self.out_channels} columns, "
                             f"got shape {tuple(h.shape)}")
        graph, _ = self._attention_graph(edge_index, h.shape[0])
        return self._attend(graph, h)[0]

    def _attend(self, graph, h):
        h = h.view(-1, self.heads, self.out_channels)
        alpha_src = (h * self.att_src).sum(-1)
        alpha_dst = (h * self.att_dst).sum(-1)
        p = self.dropout if self.training else 0.0
        seed = _dropout_seed(p, None, None)  # the draw gat_aggregate would make, kept for the returned alpha
        out = gat_aggregate(graph, h, alpha_src, alpha_dst, self.negative_slope, dropout=p, seed=seed)
        out = out.reshape(-1, self.heads * self.out_channels) if self.concat else out.mean(dim=1)
        if self.bias is not None:
            out = out + self.bias
        return out, alpha_src, alpha_dst, p, seed

    def _attention(self, graph: Graph, alpha_src, alpha_dst, p, seed):
        """alpha [E, heads] in the graph's input edge order, as ``gat_aggregate`` weighs the edges:
        the edge softmax (a composite, only built when asked for), then the kernel's dropout mask,
        which is keyed by CSR position and head (``drop_mask`` hashes the same index)."""
        from ..functional.graph import edge_softmax

        src, dst = graph.col, graph.target  # CSR order
        scores = F.leaky_relu(alpha_src[src] + alpha_dst[dst], self.negative_slope)
        alpha = edge_softmax(graph, scores[graph.inv_perm])[graph.perm]
        if p > 0:
            p32 = float(torch.tensor(p, dtype=torch.float32))  # the kernel compares and scales in float32
            alpha = drop_mask(alpha.contiguous(), p32, seed=seed) * (1.0 / (1.0 - p32))
        return alpha[graph.inv_perm]
