"""``Graph``: a destination-sorted CSR adjacency with its cached transpose, built once.

PyG conventions: ``edge_index`` is integer [2, E], row 0 the source j, row 1 the target i;
messages flow j -> i and aggregate at i. The CSR is sorted by target (``rowptr`` over targets,
``col`` = sources), edges of one target in their original order (stable sort), so every kernel
writes each output row from one thread: deterministic without atomics. The transpose (CSC:
``colptr`` over sources, ``row`` = targets, ``csc_perm`` = CSR position of each CSC entry) serves
the backward passes. Offsets and indices are int64. Degrees and the GCN normalization are cached.
"""

from __future__ import annotations

import os
import pickle

import torch

from . import _native

__all__ = ["Graph", "HUB_DEGREE", "planetoid_edge_index"]

# Rows with at least this many edges are "hubs": the kernels split them over feature blocks (CPU)
# or a whole thread block (CUDA) instead of giving them to one thread / one warp.
HUB_DEGREE = 2048


def _offsets(keys: torch.Tensor, n: int) -> torch.Tensor:
    """CSR offsets of the rows keyed by ``keys``: counts do not depend on order, so the keys are
    taken unsorted (no gather through the sort permutation)."""
    counts = torch.bincount(keys, minlength=n) if keys.numel() else \
        torch.zeros(n, dtype=torch.int64, device=keys.device)
    ptr = torch.zeros(n + 1, dtype=torch.int64, device=keys.device)
    torch.cumsum(counts, 0, out=ptr[1:])
    return ptr


def _sort_by_key(keys: torch.Tensor, n: int, values=None, inverse=False):
    """(offsets [n + 1], perm [E], values[perm], inverse of perm): the stable sort of ``keys`` in
    [0, n) as CSR offsets and the permutation (ties in input order); the last two are None unless
    asked for. CPU: the C++ counting sort (O(E + n), the same result as
    ``torch.sort(stable=True)``, the gather and the inverse written in its scatter pass);
    elsewhere torch's sort."""
    if keys.device.type == "cpu" and _native.AVAILABLE:
        offsets, perm, sorted_values, inv = torch.ops.sslfast.csr_by_key(keys, n, values, inverse)
    else:
        offsets = _offsets(keys, n)
        perm = torch.sort(keys, stable=True).indices if keys.numel() else keys.clone()
        sorted_values = None if values is None else values[perm]
        inv = _inverse(perm) if inverse else None
    return offsets, perm, (sorted_values if values is not None else None), (inv if inverse else None)


def _inverse(perm: torch.Tensor) -> torch.Tensor:
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device=perm.device)
    return inv


def _check_edge_index(edge_index, num_nodes):
    if not isinstance(edge_index, torch.Tensor):
        raise TypeError(f"edge_index must be a torch.Tensor, got {type(edge_index).__name__}")
    if edge_index.dtype in (torch.bool,) or edge_index.is_floating_point() or edge_index.is_complex():
        raise TypeError(f"edge_index must be an integer tensor, got dtype {edge_index.dtype}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape [2, E], got {tuple(edge_index.shape)}")
    edge_index = edge_index.long()
    if num_nodes is None:
        num_nodes = int(edge_index.max()) + 1 if edge_index.numel() else 0
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 0:
        raise ValueError(f"num_nodes must be an int >= 0, got {num_nodes!r}")
    if edge_index.numel():
        lo, hi = int(edge_index.min()), int(edge_index.max())
        if lo < 0 or hi >= num_nodes:
            raise ValueError(f"edge_index entries must be in [0, num_nodes = {num_nodes}), "
                             f"got min {lo}, max {hi}")
    return edge_index, num_nodes


class Graph:
    """A graph ready for the sslfast GNN kernels (see the module docstring).

    Attributes: ``num_nodes``, ``num_edges``, ``rowptr`` [N+1], ``col`` [E] (sources, CSR order),
    ``perm`` [E] (original edge id of each CSR position), ``colptr`` [N+1], ``row`` [E]
    (targets, CSC order), ``csc_perm`` [E], ``hub_rows`` / ``hub_cols`` (rows / columns of
    degree >= HUB_DEGREE), ``edge_weight`` (CSR order, or None), ``in_degree``, ``out_degree``.
    """

    def __init__(self, rowptr, col, perm, num_nodes, edge_weight=None, inv_perm=None):
        self.num_nodes = int(num_nodes)
        self.rowptr, self.col, self.perm = rowptr, col, perm
        self.num_edges = int(col.numel())
        self.edge_weight = edge_weight
        self.in_degree = rowptr[1:] - rowptr[:-1]
        target = torch.repeat_interleave(torch.arange(self.num_nodes, device=col.device), self.in_degree)
        self.target = target  # CSR-order targets: with col, the edge_index in CSR order
        # Stable sort by source: within a column, entries stay in CSR (= target) order.
        self.colptr, self.csc_perm, self.row, _ = _sort_by_key(col, self.num_nodes, values=target)
        self.out_degree = self.colptr[1:] - self.colptr[:-1]
        self.inv_perm = _inverse(perm) if inv_perm is None else inv_perm
        self.hub_rows = torch.nonzero(self.in_degree >= HUB_DEGREE).flatten()
        self.hub_cols = torch.nonzero(self.out_degree >= HUB_DEGREE).flatten()
        self._gcn_norm = {}
        self._self_loops = None  # (loop_pos, keep_pos, graph without loops or None), on first use
        self._one_loop_per_node = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_edge_index(cls, edge_index, num_nodes=None, edge_weight=None) -> "Graph":
        """From a PyG ``edge_index`` [2, E] (row 0 source, row 1 target), or from a
        ``torch.sparse_csr`` / ``sparse_coo`` adjacency ``A`` [N, N] read as ``out = A @ x``
        (``A[i, j]`` is the edge j -> i, like PyG's ``adj_t``; its values become edge weights)."""
        if isinstance(edge_index, torch.Tensor) and edge_index.layout in (torch.sparse_csr, torch.sparse_coo):
            return cls.from_sparse(edge_index)
        edge_index, num_nodes = _check_edge_index(edge_index, num_nodes)
        edge_weight = cls._check_weight(edge_weight, edge_index.shape[1], edge_index.device)
        src, dst = edge_index[0], edge_index[1]
        rowptr, perm, col, inv_perm = _sort_by_key(dst, num_nodes, values=src, inverse=True)
        weight = None if edge_weight is None else edge_weight[perm]
        return cls(rowptr, col.contiguous(), perm, num_nodes, weight, inv_perm)

    @classmethod
    def from_sparse(cls, adjacency: torch.Tensor) -> "Graph":
        if adjacency.dim() != 2 or adjacency.shape[0] != adjacency.shape[1]:
            raise ValueError(f"adjacency must be a square [N, N] sparse matrix, got {tuple(adjacency.shape)}")
        n = adjacency.shape[0]
        if adjacency.layout == torch.sparse_coo:
            adjacency = adjacency.coalesce()
            target, source = adjacency.indices()
            edge_index = torch.stack([source, target])
            return cls.from_edge_index(edge_index, n, adjacency.values())
        rowptr = adjacency.crow_indices().long().contiguous()
        col = adjacency.col_indices().long().contiguous()
        if col.numel() and (int(col.min()) < 0 or int(col.max()) >= n):
            raise ValueError(f"adjacency column indices must be in [0, {n}), got min {int(col.min())}, "
                             f"max {int(col.max())}")
        if rowptr[0] != 0 or rowptr[-1] != col.numel() or bool((rowptr[1:] < rowptr[:-1]).any()):
            raise ValueError("adjacency crow_indices must start at 0, be non-decreasing and end at nnz")
        perm = torch.arange(col.numel(), device=col.device)
        return cls(rowptr, col, perm, n, adjacency.values().contiguous())

    @staticmethod
    def _check_weight(edge_weight, num_edges, device):
        if edge_weight is None:
            return None
        if not isinstance(edge_weight, torch.Tensor):
            raise TypeError(f"edge_weight must be a torch.Tensor, got {type(edge_weight).__name__}")
        if not edge_weight.is_floating_point():
            raise TypeError(f"edge_weight must be a floating-point tensor, got dtype {edge_weight.dtype}")
        if edge_weight.dim() != 1 or edge_weight.shape[0] != num_edges:
            raise ValueError(f"edge_weight must have shape [E] = [{num_edges}], got {tuple(edge_weight.shape)}")
        if edge_weight.device != device:
            raise ValueError(f"edge_weight is on {edge_weight.device} but edge_index is on {device}")
        return edge_weight

    # ------------------------------------------------------------------ derived

    def csr_edge_weight(self, edge_weight):
        """``edge_weight`` in original edge order -> CSR order (differentiable gather)."""
        edge_weight = self._check_weight(edge_weight, self.num_edges, self.col.device)
        return edge_weight[self.perm]

    def gcn_norm(self, add_self_loops: bool, dtype: torch.dtype) -> torch.Tensor:
        """D^-1/2 per node; D = in-degree (+ 1 with self loops); 0 where D = 0 (PyG gcn_norm)."""
        key = (bool(add_self_loops), dtype)
        if key not in self._gcn_norm:
            deg = self.in_degree.to(torch.float64) + (1.0 if add_self_loops else 0.0)
            dinv = deg.pow(-0.5)
            dinv = torch.where(deg > 0, dinv, torch.zeros_like(dinv))
            self._gcn_norm[key] = dinv.to(dtype).contiguous()
        return self._gcn_norm[key]

    def gcn_norm_ones(self, dtype: torch.dtype) -> torch.Tensor:
        """All-ones node scale: ``gcn_aggregate(normalize=False)`` runs the same kernel with it."""
        key = ("ones", dtype)
        if key not in self._gcn_norm:
            self._gcn_norm[key] = torch.ones(self.num_nodes, dtype=dtype, device=self.col.device)
        return self._gcn_norm[key]

    def self_loop_split(self):
        """(loop_pos, keep_pos, no_loops): CSR positions of the self loops and of the other edges,
        and this graph without its self loops (None when it has none). Cached with the graph: the
        boolean mask becomes index tensors once, so per-call users (GCNConv) never sync."""
        if self._self_loops is None:
            is_loop = self.col == self.target
            loop_pos, keep_pos = is_loop.nonzero().squeeze(1), (~is_loop).nonzero().squeeze(1)
            no_loops = None
            if loop_pos.numel():
                no_loops = Graph.from_edge_index(self.edge_index()[:, keep_pos], self.num_nodes)
            self._self_loops = (loop_pos, keep_pos, no_loops)
        return self._self_loops

    def with_one_loop_per_node(self) -> "Graph":
        """The loop-free edges (CSR order) followed by one self loop per node: PyG's
        ``add_remaining_self_loops`` structure. Cached with the graph."""
        if self._one_loop_per_node is None:
            _, keep_pos, _ = self.self_loop_split()
            loops = torch.arange(self.num_nodes, device=self.col.device).expand(2, -1)
            edge_index = torch.cat([self.edge_index()[:, keep_pos], loops], dim=1)
            self._one_loop_per_node = Graph.from_edge_index(edge_index, self.num_nodes)
        return self._one_loop_per_node

    def edge_index(self) -> torch.Tensor:
        """[2, E] in CSR order (source, target)."""
        return torch.stack([self.col, self.target])

    def to(self, device) -> "Graph":
        weight = None if self.edge_weight is None else self.edge_weight.to(device)
        return Graph(self.rowptr.to(device), self.col.to(device), self.perm.to(device), self.num_nodes, weight)

    def __repr__(self):
        return (f"Graph(num_nodes={self.num_nodes}, num_edges={self.num_edges}, "
                f"device={self.col.device}, weighted={self.edge_weight is not None})")


class _AdjacencyUnpickler(pickle.Unpickler):
    """Planetoid's ``ind.<name>.graph`` is a pickled dict node -> neighbour list; nothing else
    is allowed to load (a pickle can name any callable)."""

    _ALLOWED = {("collections", "defaultdict"), ("builtins", "dict"), ("builtins", "list"),
                ("__builtin__", "dict"), ("__builtin__", "list")}  # Python 2 pickles name __builtin__

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"ind.<name>.graph may only hold dicts (defaultdict) and lists, "
                                     f"found {module}.{name}")


def planetoid_edge_index(root, name, num_nodes=None):
    """(edge_index [2, E] int64, num_nodes) of a Planetoid citation graph (``name``: "cora",
    "citeseer" or "pubmed") from ``root``/ind.<name>.graph: PyG's ``Planetoid`` edge set, every
    link in both directions (the raw dicts list both; the reverse is added anyway), self loops
    and duplicates removed, sorted by (source, target). Cora: 2708 nodes, 10556 edges;
    CiteSeer: 3327, 9104. Only the graph file is read (no scipy needed), so ``num_nodes``
    defaults to the largest node id in it + 1; pass PyG's count (from the label arrays) for a
    copy whose last nodes are isolated and absent from the dict."""
    if not isinstance(name, str) or name.lower() not in ("cora", "citeseer", "pubmed"):
        raise ValueError(f"name must be 'cora', 'citeseer' or 'pubmed', got {name!r}")
    if num_nodes is not None and (isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 0):
        raise ValueError(f"num_nodes must be None or an int >= 0, got {num_nodes!r}")
    path = os.path.join(os.fspath(root), f"ind.{name.lower()}.graph")
    if not os.path.exists(path):
        raise FileNotFoundError(f"root has no {os.path.basename(path)}: {path}")
    with open(path, "rb") as f:
        adjacency = _AdjacencyUnpickler(f, encoding="latin1").load()
    if not isinstance(adjacency, dict):
        raise ValueError(f"{path} must hold a dict node -> neighbours, got {type(adjacency).__name__}")
    pairs = [(int(s), int(d)) for s, nbrs in adjacency.items() for d in nbrs]
    largest = max(max((max(s, d) for s, d in pairs), default=-1), max((int(k) for k in adjacency), default=-1))
    if num_nodes is None:
        num_nodes = largest + 1
    elif num_nodes <= largest:
        raise ValueError(f"num_nodes must exceed the largest node id {largest} of {path}, got {num_nodes}")
    edges = torch.tensor(pairs, dtype=torch.int64).reshape(-1, 2).t()
    edges = torch.cat([edges, edges.flip(0)], dim=1)
    edges = edges[:, edges[0] != edges[1]]
    keys = torch.unique(edges[0] * num_nodes + edges[1])  # sorted, no duplicates
    return torch.stack([keys // num_nodes, keys % num_nodes]), num_nodes
