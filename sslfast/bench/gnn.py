"""Benchmark cases of the GNN family: spmm (sum, max), gcn_aggregate and gat_aggregate on random and power-law
graphs; sslfast vs eager (the index_add / scatter_reduce reference) vs torch.compile, plus
``torch.sparse.mm`` on the same CSR as an extra baseline for spmm sum. ``graph_build`` times
``Graph.from_edge_index`` against the same CSR + transpose built in eager torch
(``reference.csr_and_transpose``) and against a CSR-only build (``csr only``: what a library that
needs no transpose pays).

CPU sweep (full): N = 10k / 100k / 1M with E = 10 N, F = 16..256; at N = 1M, E = 10M only F = 16
and forward only (eager builds the E x F message tensor: 640 MB there, 10 GB at F = 256).

Byte models (float32, F features, N nodes, E edges, s bytes per value), forward:
* ``per_edge`` (the GB/s column): every gathered row counted once per edge:
  E*F*s (gathers) + N*F*s (output) + 8*E + 8*(N+1) (indices, offsets);
* ``per_node`` (JSON ``gbps_per_node``): every input row once: 2*N*F*s + 8*E + 8*(N+1).
Forward+backward counts the forward twice (the backward is the same traffic over the transpose).
The graph is built once per case (``Graph.from_edge_index``), outside the timed region, as a
training loop does.

Real graphs: when the Planetoid files are found (``$SSLFAST_PLANETOID``, else
``shared/data/planetoid`` beside the checkout or inside it), the full sets add Cora and CiteSeer
(PyG's edges, random features) at the sizes the papers train: GCN hidden 16, GAT 8 heads x 8,
spmm at 64 features. Small graphs: these cases measure per-call overhead as much as kernels.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import torch

import sslfast
from sslfast.graph import Graph, planetoid_edge_index
from sslfast.reference import gnn as reference

from .harness import Case, Context, Inputs, backend_of, register_family

FAMILY = "gnn"
SEED = 4321
MODEL_NOTE = ("gnn: GB/s against the per-edge byte model (each gathered row once per edge); "
              "JSON gbps_per_node counts each row once per node")

_GRAPHS: dict = {}


PLANETOID = ("cora", "citeseer")


def planetoid_root(name="cora"):
    """The folder holding ind.<name>.graph, or None (that graph's cases are then left out)."""
    checkout = Path(__file__).resolve().parents[2]
    for root in (os.environ.get("SSLFAST_PLANETOID"), checkout.parent / "shared" / "data" / "planetoid",
                 checkout / "shared" / "data" / "planetoid"):
        if root and os.path.exists(os.path.join(root, f"ind.{name}.graph")):
            return str(root)
    return None


@functools.lru_cache(maxsize=None)
def _planetoid(name):
    """(edge_index, num_nodes), read once per process: the case list sizes the cases from it and
    each case's graph is built from it."""
    return planetoid_edge_index(planetoid_root(name), name)


def make_edges(n: int, e: int, kind: str, seed: int = SEED) -> torch.Tensor:
    """``random``: uniform sources and targets. ``power_law``: targets drawn with density
    ~ u^2.5 over a fixed node permutation (the top node gets ~ E * N^-0.4 in-edges, > 10k at
    N = 100k, E = 1M), sources uniform. ``cora`` / ``citeseer``: the real graph (n, e must
    match it)."""
    if kind in PLANETOID:
        edge_index, nodes = _planetoid(kind)
        if (nodes, edge_index.shape[1]) != (n, e):
            raise ValueError(f"{kind} has N={nodes} E={edge_index.shape[1]}, the case says N={n} E={e}")
        return edge_index
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n, (e,), generator=g)
    if kind == "random":
        dst = torch.randint(0, n, (e,), generator=g)
    else:
        rank = (n * torch.rand(e, generator=g, dtype=torch.float64) ** 2.5).long().clamp_(max=n - 1)
        dst = torch.randperm(n, generator=g)[rank]
    return torch.stack([src, dst])


def _graph(n, e, kind, device):
    key = (n, e, kind, str(device))
    if key not in _GRAPHS:
        _GRAPHS.clear()  # one graph alive at a time
        graph = Graph.from_edge_index(make_edges(n, e, kind).to(device), n)
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            graph.torch_csr = torch.sparse_csr_tensor(graph.rowptr, graph.col,
                                                      torch.ones(e, device=device), (n, n))
        _GRAPHS[key] = graph
    return _GRAPHS[key]


def _byte_models(n, e, f, dtype_bytes=4):
    index = 8 * e + 8 * (n + 1)

    def per_edge(mode):
        fwd = e * f * dtype_bytes + n * f * dtype_bytes + index
        return fwd if mode == "fwd" else 2 * fwd

    def per_node(mode):
        fwd = 2 * n * f * dtype_bytes + index
        return fwd if mode == "fwd" else 2 * fwd

    return per_edge, {"per_node": per_node}



def _sparse_mm(graph, x, reduce="sum"):
    if x.dtype != graph.torch_csr.dtype:
        graph.torch_csr = graph.torch_csr.to(x.dtype)
    return torch.sparse.mm(graph.torch_csr, x)


def _eager_spmm(graph, x, reduce="sum"):
    """The eager baseline: the reference, except max / min as the one ``scatter_reduce`` an eager
    user writes (the reference adds passes that pick the first edge on ties, as the kernels do)."""
    if reduce in ("sum", "mean"):
        return reference.spmm(graph, x, reduce)
    src, dst = graph.edge_index()
    index = dst.unsqueeze(1).expand(-1, x.shape[1])
    return torch.zeros_like(x).scatter_reduce(0, index, x[src], reduce="amax" if reduce == "max" else "amin",
                                              include_self=False)


def spmm_case(n, e, f, kind="random", reduce="sum", modes=("fwd", "fwd+bwd"), headline=False) -> Case:
    def make_inputs(device, dtype, requires_grad):
        graph = _graph(n, e, kind, device)
        g = torch.Generator().manual_seed(SEED + 1)
        x = torch.randn(n, f, generator=g).to(device, dtype).requires_grad_(requires_grad)
        return Inputs((graph, x), {"reduce": reduce}, [x] if requires_grad else [])

    per_edge, extra = _byte_models(n, e, f)
    baselines = {"sparse.mm": _sparse_mm} if reduce == "sum" else {}
    return Case(FAMILY, "spmm", f"{kind} N={n} E={e} F={f} {reduce}",
                {"N": n, "E": e, "F": f, "graph": kind, "reduce": reduce}, make_inputs,
                sslfast.spmm, _eager_spmm, bytes=per_edge, extra_bytes=extra,
                backend=backend_of("spmm"), modes=modes, headline=headline, cost=e * f,
                model_note=MODEL_NOTE, baselines=baselines)


def gcn_case(n, e, f, kind="random", modes=("fwd", "fwd+bwd")) -> Case:
    def make_inputs(device, dtype, requires_grad):
        graph = _graph(n, e, kind, device)
        g = torch.Generator().manual_seed(SEED + 2)
        x = torch.randn(n, f, generator=g).to(device, dtype).requires_grad_(requires_grad)
        return Inputs((graph, x), {}, [x] if requires_grad else [])

    per_edge, extra = _byte_models(n, e, f)
    return Case(FAMILY, "gcn_aggregate", f"{kind} N={n} E={e} F={f}",
                {"N": n, "E": e, "F": f, "graph": kind}, make_inputs, sslfast.gcn_aggregate,
                reference.gcn_aggregate, bytes=per_edge, extra_bytes=extra,
                backend=backend_of("gcn_aggregate"), modes=modes, cost=e * f, model_note=MODEL_NOTE)


def gat_case(n, e, heads, f, kind="random", modes=("fwd+bwd",)) -> Case:
    """GAT aggregation with H heads of F features; bytes: the spmm model with F -> H * F."""

    def make_inputs(device, dtype, requires_grad):
        graph = _graph(n, e, kind, device)
        g = torch.Generator().manual_seed(SEED + 3)
        h = torch.randn(n, heads, f, generator=g).to(device, dtype).requires_grad_(requires_grad)
        a_src = torch.randn(n, heads, generator=g).to(device, dtype).requires_grad_(requires_grad)
        a_dst = torch.randn(n, heads, generator=g).to(device, dtype).requires_grad_(requires_grad)
        return Inputs((graph, h, a_src, a_dst), {}, [h, a_src, a_dst] if requires_grad else [])

    per_edge, extra = _byte_models(n, e, heads * f)
    return Case(FAMILY, "gat_aggregate", f"{kind} N={n} E={e} H={heads} F={f}",
                {"N": n, "E": e, "H": heads, "F": f, "graph": kind}, make_inputs, sslfast.gat_aggregate,
                reference.gat_aggregate, bytes=per_edge, extra_bytes=extra,
                backend=backend_of("gat_aggregate"),
                modes=modes, cost=e * heads * f, model_note=MODEL_NOTE)


def _build_graph(edge_index, num_nodes):
    return Graph.from_edge_index(edge_index, num_nodes)


def graph_build_case(n, e, kind="random") -> Case:
    """Graph construction from an edge_index (forward only; nothing to differentiate)."""

    def make_inputs(device, dtype, requires_grad):
        return Inputs((make_edges(n, e, kind).to(device), n))

    return Case(FAMILY, "graph_build", f"{kind} N={n} E={e}", {"N": n, "E": e, "graph": kind}, make_inputs,
                _build_graph, reference.csr_and_transpose, backend=lambda device: "torch ops",
                modes=("fwd",), cost=e * 4, baselines={"csr only": reference.csr},
                model_note="graph_build: no byte model; eager = the same CSR + transpose in torch")


@register_family(FAMILY)
def cases(ctx: Context) -> list:
    if ctx.sizes == "tiny":
        return [spmm_case(300, 2000, 8), spmm_case(300, 2000, 8, "power_law", "max"),
                gcn_case(300, 2000, 8), gat_case(300, 2000, 2, 4)]
    big = dict(n=100_000, e=1_000_000, f=128)
    big_graph = dict(n=100_000, e=1_000_000)
    if ctx.device.type == "cuda":
        huge = dict(n=1_000_000, e=10_000_000, f=128)
        out = [spmm_case(**big, headline=True), spmm_case(**big, kind="power_law"),
               spmm_case(**huge, kind="power_law"), gcn_case(**huge, kind="power_law"),
               spmm_case(**big, reduce="max"), graph_build_case(1_000_000, 10_000_000, "power_law")]
        return out[:3] if ctx.sizes == "quick" else out + planetoid_cases()
    if ctx.sizes == "quick":
        return [spmm_case(**big, modes=("fwd",), headline=True), gcn_case(**big, modes=("fwd+bwd",)),
                graph_build_case(**big_graph)]
    fwd = dict(modes=("fwd",))
    # grouped by graph: the case builder keeps one graph alive at a time
    return [spmm_case(**big, headline=True), gcn_case(**big, modes=("fwd+bwd",)),
            spmm_case(**big, reduce="max", **fwd),
            spmm_case(**big, kind="power_law", **fwd), gcn_case(**big, kind="power_law", modes=("fwd+bwd",)),
            spmm_case(10_000, 100_000, 16, **fwd), spmm_case(10_000, 100_000, 256, **fwd),
            spmm_case(10_000, 100_000, 256, kind="power_law", **fwd),
            spmm_case(1_000_000, 10_000_000, 16, **fwd), spmm_case(1_000_000, 10_000_000, 16, "power_law", **fwd),
            gat_case(50_000, 500_000, 4, 32),
            graph_build_case(**big_graph), graph_build_case(1_000_000, 10_000_000, "power_law")] + planetoid_cases()


def planetoid_cases() -> list:
    """Cora / CiteSeer at the papers' sizes (full sets only; none when the data is absent)."""
    out = []
    for name in PLANETOID:
        if planetoid_root(name) is None:
            continue
        edge_index, n = _planetoid(name)
        size = dict(n=n, e=edge_index.shape[1], kind=name)
        if name == "cora":
            out += [spmm_case(**size, f=64), gcn_case(**size, f=16, modes=("fwd+bwd",)),
                    gat_case(**size, heads=8, f=8)]
        else:
            out.append(gcn_case(**size, f=16, modes=("fwd+bwd",)))
    return out
