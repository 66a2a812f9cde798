"""GNN message passing, what is particular to it: Graph construction (CSR, transpose, hubs, the
counting sort, sparse inputs, Planetoid), PyG's formulas (GCN normalization, GCNConv, SAGEConv,
GINConv, GATConv, edge softmax, GAE's loss) written here, max / min ties, NaN and infinities, the
kernels' feature tiles, hubs split across workers, heads, thread counts, compiled autograd, bounds
safety, Cora. The contract every op keeps (parity with the float64 reference, gradcheck, opcheck,
compile, determinism, bad input): test_contract.py."""

import collections
import functools
import math
import os
import pickle

import pytest
import torch

import sslfast
from sslfast.bench.gnn import planetoid_root
from sslfast.graph import HUB_DEGREE, Graph, planetoid_edge_index
from sslfast.reference import gnn as reference

import helpers
from helpers import DEVICE, GRAPHS, fast_backends, gen, hub_edges, random_edges, runnable_backends, special_edges

BACKENDS = [b for b in runnable_backends(torch.device(DEVICE).type, "spmm") if b != "triton"]
FAST_BACKENDS = [b for b in fast_backends("spmm") if b != "triton"]
REDUCES = ["sum", "mean", "max", "min"]
# the Planetoid files, where the benchmarks look too ($SSLFAST_PLANETOID, ../shared, shared/)
PLANETOID = {name: planetoid_root(name) for name in ("cora", "citeseer")}
randn = functools.partial(helpers.randn, requires_grad=True)


def x_and_weight_grads(fn, x, weight, backend, upstream_seed=99):
    """``fn(x, weight)`` under ``backend`` on fresh leaves, and the gradients of x and weight
    (zeros where unused) for a seeded upstream gradient."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, weight) if t is not None]
    xl, wl = leaves[0], (leaves[1] if weight is not None else None)
    with sslfast.use_backend(backend):
        out = fn(xl, wl)
    upstream = torch.randn(out.shape, generator=gen(upstream_seed), dtype=torch.float64).to(out)
    grads = torch.autograd.grad(out, leaves, upstream, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, leaves)]
    return out.detach(), grads


# ---------------------------------------------------------------- Graph


def test_graph_csr_and_transpose():
    edge_index, n = special_edges()
    g = Graph.from_edge_index(edge_index, n)
    src, dst = edge_index.cpu()
    assert g.rowptr.dtype == torch.int64 and g.colptr.dtype == torch.int64
    assert g.rowptr[-1] == g.colptr[-1] == edge_index.shape[1]
    # CSR: targets sorted, each edge present once, original order kept within a target (stable)
    assert torch.equal(g.target.cpu(), dst[g.perm.cpu()]) and torch.equal(g.col.cpu(), src[g.perm.cpu()])
    assert torch.all(g.target[1:] >= g.target[:-1])
    for i in range(n):
        rows = g.perm[g.rowptr[i]:g.rowptr[i + 1]]
        assert torch.all(rows[1:] > rows[:-1])
    # CSC: csc_perm maps each CSC entry to its CSR position; sources sorted
    assert torch.equal(g.row, g.target[g.csc_perm]) and torch.all(g.col[g.csc_perm][1:] >= g.col[g.csc_perm][:-1])
    assert torch.equal(g.in_degree.cpu(), torch.bincount(dst, minlength=n))
    assert torch.equal(g.out_degree.cpu(), torch.bincount(src, minlength=n))
    assert g.num_nodes == n and g.num_edges == edge_index.shape[1]
    assert g.hub_rows.numel() == 0
    assert torch.equal(g.inv_perm[g.perm].cpu(), torch.arange(edge_index.shape[1]))


def test_graph_native_build_matches_torch_build(monkeypatch):
    """The C++ counting sort (CPU) and the torch.sort path (other devices) build the same Graph."""
    import sslfast.graph as graph_module

    edge_index, n = hub_edges(n=3000, hub_degree=HUB_DEGREE + 5, seed=9)
    native = Graph.from_edge_index(edge_index, n)
    monkeypatch.setattr(graph_module._native, "AVAILABLE", False)
    plain = Graph.from_edge_index(edge_index, n)
    for name in ("rowptr", "col", "perm", "inv_perm", "target", "colptr", "csc_perm", "row", "hub_rows", "hub_cols"):
        assert torch.equal(getattr(native, name), getattr(plain, name)), name


@pytest.mark.skipif(not FAST_BACKENDS, reason="sslfast._C not built")
@pytest.mark.parametrize("n,e", [(1, 0), (5, 0), (7, 100), (1000, 5000), (70_000, 300_000), (3, 200_000)])
def test_csr_by_key_is_the_stable_sort(n, e):
    """The Graph builder's counting sort = torch.sort(stable=True), for any thread count, with the
    gather of a payload and the inverse permutation written by the same pass."""
    keys = torch.randint(0, n, (e,), generator=gen(7))
    values = torch.randint(-5, 10 ** 9, (e,), generator=gen(8))
    want = torch.sort(keys, stable=True).indices
    threads = torch.get_num_threads()
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            offsets, perm, gathered, inverse = torch.ops.sslfast.csr_by_key(keys, n, values, True)
            assert torch.equal(perm, want)
            assert torch.equal(offsets[1:] - offsets[:-1], torch.bincount(keys, minlength=n)) and offsets[0] == 0
            assert torch.equal(gathered, values[want]) and torch.equal(inverse[want], torch.arange(e))
            offsets2, perm2, none1, none2 = torch.ops.sslfast.csr_by_key(keys, n)
            assert torch.equal(offsets2, offsets) and torch.equal(perm2, want)
            assert none1.numel() == 0 and none2.numel() == 0
    finally:
        torch.set_num_threads(threads)
    torch.library.opcheck(torch.ops.sslfast.csr_by_key.default, (keys, n))
    torch.library.opcheck(torch.ops.sslfast.csr_by_key.default, (keys, n, values, True))
    with pytest.raises(RuntimeError, match="num_nodes"):
        torch.ops.sslfast.csr_by_key(torch.tensor([0, n]), n)
    with pytest.raises(RuntimeError, match="values"):
        torch.ops.sslfast.csr_by_key(keys, n, values[:-1] if e else torch.zeros(1, dtype=torch.long))


def test_graph_from_sparse_matches_edge_index():
    edge_index, n = random_edges(23, 90, seed=5), 23
    w = torch.rand(90, generator=gen(6), dtype=torch.float64).to(DEVICE)
    x = randn(n, 5, seed=7, requires_grad=False)
    expected = reference.spmm(edge_index, x, "sum", w)
    # adjacency read as out = A @ x: A[target, source]
    coo = torch.sparse_coo_tensor(edge_index.flip(0), w, (n, n))
    for adjacency in (coo, coo.coalesce().to_sparse_csr()):
        g = Graph.from_edge_index(adjacency)
        torch.testing.assert_close(sslfast.spmm(g, x), expected)


def test_graph_hubs_listed():
    edge_index, n = hub_edges()
    g = Graph.from_edge_index(edge_index, n)
    assert g.hub_rows.tolist() == [0] and 1 in g.hub_cols.tolist()


# ---------------------------------------------------------------- spmm: ties, NaN, infinities, weights


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("features", [4, 16, 40])  # runtime-width tile; 16-wide; 32-wide + 8-wide
def test_spmm_max_min_nan_ties_and_infinities(backend, dtype, features):
    """Node 0 receives from 1, 2, 3 (CSR positions 0, 1, 2). Per feature column: a tie (the
    first edge wins, and so does its gradient), NaN from the first edge and from the second
    (NaN wins; the first NaN is kept), all -inf / all +inf (a real edge is still chosen), and
    for node 4 no in-edges at all (0, no gradient)."""
    nan, inf = float("nan"), float("inf")
    cols = torch.tensor([[1.0, nan, 5.0, -inf, inf],   # node 1
                         [1.0, 2.0, nan, -inf, inf],   # node 2
                         [0.0, nan, 7.0, -inf, inf]],  # node 3
                        dtype=torch.float64)
    x = torch.zeros(5, features, dtype=torch.float64)
    x[1:4] = cols.repeat(1, (features + 4) // 5)[:, :features]
    edge_index = torch.tensor([[1, 2, 3], [0, 0, 0]], device=DEVICE)
    g = Graph.from_edge_index(edge_index, 5)
    expected = {  # column -> (value, winning source node) for max and min
        "max": [(1.0, 1), (nan, 1), (nan, 2), (-inf, 1), (inf, 1)],
        "min": [(0.0, 3), (nan, 1), (nan, 2), (-inf, 1), (inf, 1)],
    }
    # The second upstream gradient puts NaN / inf / -inf in row 0 (the only row with in-edges, so
    # the only one the backward reads): each must reach only the winning source of its column,
    # never the lanes of the other sources.
    special = torch.full((5, features), nan, dtype=torch.float64)
    special[0] = torch.tensor([nan, inf, -inf, 3.0]).repeat((features + 3) // 4)[:features]
    for reduce, per_col in expected.items():
        for upstream in (torch.ones(5, features, dtype=torch.float64), special):
            xl = x.to(DEVICE, dtype).clone().requires_grad_()  # a fresh leaf per backward
            with sslfast.use_backend(backend):
                out = sslfast.spmm(g, xl, reduce)
            out.backward(upstream.to(DEVICE, dtype))
            want = torch.zeros(5, features, dtype=torch.float64)
            want_grad = torch.zeros(5, features, dtype=torch.float64)
            for f in range(features):
                value, source = per_col[f % 5]
                want[0, f] = value
                want_grad[source, f] = upstream[0, f]
            torch.testing.assert_close(out.detach().cpu().double(), want, equal_nan=True, rtol=0, atol=0)
            torch.testing.assert_close(xl.grad.cpu().double(), want_grad, equal_nan=True, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduce", ["max", "min"])
def test_spmm_tie_gradient_goes_to_the_first_edge(backend, reduce):
    """Nodes 1 and 2 send the same value to node 0: the first edge (CSR order) gets the gradient, on
    every backend (half-precision inputs tie often)."""
    g = Graph.from_edge_index(torch.tensor([[1, 2], [0, 0]], device=DEVICE), 3)
    x = torch.tensor([[0.0], [1.0], [1.0]], dtype=torch.float64, device=DEVICE, requires_grad=True)
    with sslfast.use_backend(backend):
        sslfast.spmm(g, x, reduce).sum().backward()
    assert x.grad.flatten().tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_spmm_graph_weights_and_override(backend):
    edge_index, n = random_edges(30, 150, seed=22), 30
    w_graph, w_call = randn(150, seed=23, requires_grad=False), randn(150, seed=24, requires_grad=False)
    g = Graph.from_edge_index(edge_index, n, edge_weight=w_graph)
    x = randn(n, 4, seed=25, requires_grad=False)
    with sslfast.use_backend(backend):
        torch.testing.assert_close(sslfast.spmm(g, x), reference.spmm(edge_index, x, "sum", w_graph))
        torch.testing.assert_close(sslfast.spmm(g, x, edge_weight=w_call),
                                   reference.spmm(edge_index, x, "sum", w_call))
        # an edge_index is accepted directly (one Graph built per call)
        torch.testing.assert_close(sslfast.spmm(edge_index, x, "max"), reference.spmm(edge_index, x, "max"))


# ---------------------------------------------------------------- gcn_aggregate, Planetoid


def test_gcn_aggregate_matches_pyg_formula():
    """PyG GCNConv propagate written out: A_hat = A + I, D_hat = rowsum, D^-1/2 A_hat D^-1/2 x."""
    edge_index, n = random_edges(12, 40, seed=31), 12
    x = randn(n, 3, seed=32, requires_grad=False)
    dense = torch.zeros(n, n, dtype=torch.float64, device=DEVICE)
    dense.index_put_((edge_index[1], edge_index[0]), torch.ones(40, dtype=torch.float64, device=DEVICE),
                     accumulate=True)
    a_hat = dense + torch.eye(n, dtype=torch.float64, device=DEVICE)
    dinv = a_hat.sum(1).pow(-0.5)
    expected = dinv[:, None] * a_hat * dinv[None, :] @ x
    torch.testing.assert_close(sslfast.gcn_aggregate(edge_index, x), expected)


@pytest.mark.skipif(PLANETOID["cora"] is None, reason="no Planetoid data")
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_cora_gcn_aggregate_and_mean(backend):
    edge_index, n = planetoid_edge_index(PLANETOID["cora"], "cora")
    edge_index = edge_index.to(DEVICE)
    g = Graph.from_edge_index(edge_index, n)
    assert (n, g.num_edges) == (2708, 10556)  # PyG's Cora
    x = randn(n, 64, dtype=torch.float32, seed=33)
    got, (got_grad,) = x_and_weight_grads(lambda a, _: sslfast.gcn_aggregate(g, a), x, None, backend)
    want, (want_grad,) = x_and_weight_grads(lambda a, _: reference.gcn_aggregate(edge_index, a.double(), True,
                                                                               True), x, None, "reference")
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_grad.double(), want_grad.double(), rtol=1e-5, atol=1e-5)
    with sslfast.use_backend(backend):
        torch.testing.assert_close(sslfast.spmm(g, x, "mean"), reference.spmm(edge_index, x, "mean"))


@pytest.mark.skipif(None in PLANETOID.values(), reason="no Planetoid data")
def test_planetoid_edge_index_matches_pyg():
    """PyG's counts (Cora 2708 / 10556, CiteSeer 3327 / 9104), each link both ways, no self
    loops, no duplicates, sorted by (source, target); built here from the raw pickle."""
    for name, nodes, edges in (("cora", 2708, 10556), ("CiteSeer", 3327, 9104)):
        root = PLANETOID[name.lower()]
        edge_index, n = planetoid_edge_index(root, name)
        assert (n, edge_index.shape[1], edge_index.dtype) == (nodes, edges, torch.int64)
        with open(os.path.join(root, f"ind.{name.lower()}.graph"), "rb") as f:
            adjacency = pickle.load(f, encoding="latin1")
        links = {(int(s), int(d)) for s, nbrs in adjacency.items() for d in nbrs if int(s) != int(d)}
        want = sorted(links | {(d, s) for s, d in links})
        assert edge_index.t().tolist() == [list(p) for p in want]


def test_planetoid_edge_index_bad_input(tmp_path):
    with pytest.raises(ValueError, match="name must be"):
        planetoid_edge_index(tmp_path, "reddit")
    with pytest.raises(FileNotFoundError, match="ind.cora.graph"):
        planetoid_edge_index(tmp_path, "cora")
    with open(tmp_path / "ind.cora.graph", "wb") as f:  # a pickle that would run a command
        pickle.dump(os.system, f)
    with pytest.raises(pickle.UnpicklingError, match=r"only hold dicts \(defaultdict\) and lists"):
        planetoid_edge_index(tmp_path, "cora")
    with open(tmp_path / "ind.cora.graph", "wb") as f:  # as Planetoid's: defaultdict(list), Python 2 names
        data = pickle.dumps(collections.defaultdict(list, {0: [1, 2], 3: [3]}), protocol=2)
        assert b"c__builtin__\nlist" in data and b"ccollections\ndefaultdict" in data
        f.write(data)
    edge_index, n = planetoid_edge_index(tmp_path, "cora")
    assert n == 4 and edge_index.tolist() == [[0, 0, 1, 2], [1, 2, 0, 0]]  # both ways, no loop
    assert planetoid_edge_index(tmp_path, "cora", num_nodes=6)[1] == 6  # trailing isolated nodes
    with pytest.raises(ValueError, match="num_nodes must exceed the largest node id 3"):
        planetoid_edge_index(tmp_path, "cora", num_nodes=3)


# ---------------------------------------------------------------- feature tiles, hubs


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("features", [8, 16, 32, 96, 136])
def test_fixed_width_feature_tiles(backend, features):
    """F = 8 / 16 / 32 / 64 have their own fixed-width tiles (96 = 64 + 32, 136 = 2 x 64 + 8):
    forward, x- and weight-gradients (the transpose) vs the float64 reference, hubs included."""
    edge_index, n = hub_edges(n=3000, hub_degree=HUB_DEGREE + 5, seed=6)
    g = Graph.from_edge_index(edge_index, n)
    x, w = randn(n, features, seed=80), randn(edge_index.shape[1], seed=81)
    for fn in (lambda a, b: sslfast.spmm(g, a, "mean", b), lambda a, _: sslfast.gcn_aggregate(g, a)):
        got, got_grads = x_and_weight_grads(fn, x, w, backend)
        want, want_grads = x_and_weight_grads(fn, x, w, "reference")
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        for a, b in zip(got_grads, want_grads):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def many_hubs_edges(n=3000, seed=176):
    """8 hub rows (HUB_DEGREE exactly, then HUB_DEGREE + 37k + 3: splits into chunks that end
    ragged), 6 long ordinary rows (300..1800 edges), 2 hub columns (nodes n - 1 and n - 2 send
    HUB_DEGREE + 11 and + 300 edges), and random noise."""
    g = gen(seed)
    degrees = [HUB_DEGREE] + [HUB_DEGREE + 37 * k + 3 for k in range(1, 8)] + [300 * k for k in range(1, 7)]
    targets = torch.cat([torch.full((d,), k) for k, d in enumerate(degrees)])
    into = torch.stack([torch.randint(0, n, targets.shape, generator=g), targets])
    out = [torch.stack([torch.full((d,), n - 1 - k), torch.randint(0, n, (d,), generator=g)])
           for k, d in enumerate([HUB_DEGREE + 11, HUB_DEGREE + 300])]
    noise = torch.randint(0, n, (2, 4 * n), generator=g)
    return torch.cat([into, *out, noise], dim=1).to(DEVICE), n


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("features", [3, 64, 128, 264])
def test_spmm_many_hubs_low_precision(backend, dtype, features):
    """Low-precision inputs (fp32 accumulation) on rows split across workers: 8 hub rows, long
    rows, hub columns; feature counts that pick each lane width on CUDA (scalar, 8-byte, 16-byte
    loads). Forward (sum, mean, GCN) and, in float32, the x-gradient (the transpose, where the hub
    columns are the long rows) vs float64 of the same inputs, within the dtype's rounding."""
    edge_index, n = many_hubs_edges()
    g = Graph.from_edge_index(edge_index, n)
    assert g.hub_rows.numel() == 8 and g.hub_cols.numel() == 2
    x = randn(n, features, dtype=dtype, seed=177, requires_grad=False)
    w = randn(edge_index.shape[1], dtype=dtype, seed=178, requires_grad=False)
    cases = [(lambda a, b: sslfast.spmm(g, a, "sum", b), lambda a, b: reference.spmm(edge_index, a, "sum", b)),
             (lambda a, b: sslfast.spmm(g, a, "mean"), lambda a, b: reference.spmm(edge_index, a, "mean")),
             (lambda a, b: sslfast.gcn_aggregate(g, a), lambda a, b: reference.gcn_aggregate(edge_index, a))]
    # float32 sums of ~2k terms of size ~1; bf16: one rounding of the result (2^-9 relative)
    rtol, atol_scale = (1e-5, 1e-5) if dtype == torch.float32 else (2 ** -8, 1e-4)
    for fast, slow in cases:
        if dtype == torch.float32:
            got, (got_grad,) = x_and_weight_grads(lambda a, _: fast(a, w), x, None, backend)
            truth, (truth_grad,) = x_and_weight_grads(lambda a, _: slow(a, w.double()), x.double(), None, "reference")
            torch.testing.assert_close(got_grad.double(), truth_grad, rtol=rtol,
                                       atol=atol_scale * truth_grad.abs().max().item())
        else:
            with sslfast.use_backend(backend):
                got = fast(x, w)
            truth = slow(x.double(), w.double())
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), truth, rtol=rtol, atol=atol_scale * truth.abs().max().item())


# ---------------------------------------------------------------- bad input, bounds safety


def test_graph_bad_input():
    """Graph.from_edge_index names the bad argument; the ops' bad inputs: test_contract.py."""
    edge_index, n = special_edges()
    with pytest.raises(ValueError, match="edge_index"):
        Graph.from_edge_index(edge_index[0], n)
    with pytest.raises(ValueError, match="edge_index"):
        Graph.from_edge_index(torch.zeros(3, 4, dtype=torch.long), n)
    with pytest.raises(TypeError, match="edge_index"):
        Graph.from_edge_index(edge_index.float(), n)
    with pytest.raises(TypeError, match="edge_index"):
        Graph.from_edge_index([[0, 1], [1, 0]], n)
    with pytest.raises(ValueError, match="edge_index"):
        Graph.from_edge_index(torch.tensor([[0, -1], [1, 0]]), n)
    with pytest.raises(ValueError, match="edge_index"):
        Graph.from_edge_index(torch.tensor([[0, n], [1, 0]]), n)
    with pytest.raises(ValueError, match="edge_weight"):
        Graph.from_edge_index(edge_index, n, edge_weight=torch.ones(3))


@pytest.mark.skipif(not FAST_BACKENDS, reason="sslfast._C not built")
def test_core_op_rejects_inconsistent_graph():
    """Direct torch.ops calls: a kernel checks sizes instead of reading out of bounds."""
    edge_index, n = special_edges()
    g = Graph.from_edge_index(edge_index, n)
    x = randn(n + 2, 3, seed=90, requires_grad=False)
    with pytest.raises(RuntimeError):
        torch.ops.sslfast.spmm_fwd(g.rowptr, g.col, g.colptr, g.row, g.csc_perm, g.hub_rows, g.hub_cols,
                                   None, x, "sum")
    bad_col = g.col.clone()
    bad_col[0] = 10 ** 6  # out of range index: skipped, never read
    out, _ = torch.ops.sslfast.spmm_fwd(g.rowptr, bad_col, g.colptr, g.row, g.csc_perm, g.hub_rows, g.hub_cols,
                                        None, x[:n].contiguous(), "sum")
    assert torch.isfinite(out).all()


# ---------------------------------------------------------------- modules vs PyG formulas


def _dense_adjacency(edge_index, n):
    """A[i, j] = number of edges j -> i."""
    a = torch.zeros(n, n, dtype=torch.float64, device=DEVICE)
    a.index_put_((edge_index[1], edge_index[0]), torch.ones(edge_index.shape[1], dtype=torch.float64,
                                                            device=DEVICE), accumulate=True)
    return a


@pytest.mark.parametrize("backend", BACKENDS)
def test_modules_match_pyg_formulas(backend):
    torch.manual_seed(0)
    edge_index, n = special_edges()
    x = randn(n, 6, seed=100)
    a = _dense_adjacency(edge_index, n)
    deg = a.sum(1)
    sslfast.set_backend(backend)

    gcn = sslfast.nn.GCNConv(6, 5).double().to(DEVICE)
    torch.nn.init.normal_(gcn.bias)
    a_hat = a.clone()
    a_hat.fill_diagonal_(1.0)  # PyG add_remaining_self_loops: special_edges has loops at 3, 4 and 6
    dinv = a_hat.sum(1).pow(-0.5)
    expected = (dinv[:, None] * a_hat * dinv[None, :]) @ (x @ gcn.lin.weight.t()) + gcn.bias
    torch.testing.assert_close(gcn(x, edge_index), expected)
    torch.testing.assert_close(gcn(x, Graph.from_edge_index(edge_index, n)), expected)

    # improved: loops of weight 2 where none exist, with edge weights only; without them PyG 2.8's
    # add_remaining_self_loops ignores the fill value (unit loops), and so does the drop-in
    improved = sslfast.nn.GCNConv(6, 5, improved=True).double().to(DEVICE)
    diag = torch.full((n,), 2.0, dtype=torch.float64, device=DEVICE)
    diag[edge_index[0][edge_index[0] == edge_index[1]]] = 1.0
    a_hat = a.clone()
    a_hat.diagonal().copy_(diag)
    dinv = a_hat.sum(1).pow(-0.5)
    expected = (dinv[:, None] * a_hat * dinv[None, :]) @ (x @ improved.lin.weight.t())
    ones = torch.ones(edge_index.shape[1], dtype=torch.float64, device=DEVICE)
    torch.testing.assert_close(improved(x, edge_index, ones), expected)
    plain = sslfast.nn.GCNConv(6, 5).double().to(DEVICE)
    plain.load_state_dict(improved.state_dict())
    torch.testing.assert_close(improved(x, edge_index), plain(x, edge_index))

    sage = sslfast.nn.SAGEConv(6, 4).double().to(DEVICE)
    mean = (a @ x) / deg.clamp(min=1)[:, None]
    torch.testing.assert_close(sage(x, edge_index), sage.lin_l(mean) + sage.lin_r(x))

    mlp = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).double().to(DEVICE)
    gin = sslfast.nn.GINConv(mlp, eps=0.3, train_eps=True).to(DEVICE)
    out = gin(x, edge_index)
    torch.testing.assert_close(out, mlp(1.3 * x + a @ x))
    out.sum().backward()
    assert gin.eps.grad is not None and x.grad is not None


def test_modules_reset_parameters_and_cached():
    """PyG's ``inits.reset`` (GAE.__init__ calls it) must find each layer's own reset_parameters:
    without one it falls through to the inner nn.Linear, whose default init is about 2x narrower
    than glorot (the GAE finding in benchmarks/NOTES.md)."""
    torch.manual_seed(0)
    for conv, weight in [(sslfast.nn.GCNConv(200, 100), "lin"), (sslfast.nn.GATConv(200, 50, heads=2), "lin")]:
        with torch.no_grad():
            getattr(conv, weight).weight.zero_()
            if conv.bias is not None:
                conv.bias.fill_(3.0)
        conv.reset_parameters()
        w = getattr(conv, weight).weight
        bound = math.sqrt(6.0 / (w.shape[0] + w.shape[1]))
        assert bound * 0.95 < float(w.abs().max()) <= bound  # glorot uniform, not nn.Linear's 1/sqrt(fan_in)
        assert float(conv.bias.abs().max()) == 0.0
    sage = sslfast.nn.SAGEConv(8, 4)
    before = sage.lin_l.weight.clone()
    sage.reset_parameters()
    assert not torch.equal(before, sage.lin_l.weight)
    gin = sslfast.nn.GINConv(torch.nn.Linear(8, 4), eps=0.5, train_eps=True)
    with torch.no_grad():
        gin.eps.fill_(9.0)
    gin.reset_parameters()
    assert float(gin.eps) == 0.5

    edge_index, n = special_edges()
    x = randn(n, 6, seed=3)
    cached = sslfast.nn.GCNConv(6, 5, cached=True).double().to(DEVICE)
    first = cached(x, edge_index)
    other = edge_index[:, :3].clone()  # a different graph: cached=True keeps the first one, as PyG
    torch.testing.assert_close(cached(x, other), first)
    with pytest.raises(TypeError, match="cached"):
        sslfast.nn.GCNConv(6, 5, cached=1)


# ---------------------------------------------------------------- compiled autograd, edge loss, negatives


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_gradients_under_compiled_autograd(backend):
    """Every GNN op's gradients through compiled autograd (which rejected C++ autograd nodes that
    mark an output non-differentiable) equal eager's: weights with and without x, max / min with
    their int64 argmax, GAT (whose lse output is not differentiable), SDDMM, weighted GCN. Under
    torch.compile(fullgraph=True): test_contract.py."""
    edge_index, n = random_edges(31, 120, seed=190), 31
    g = Graph.from_edge_index(edge_index, n)

    def t(*shape, seed):
        return randn(*shape, dtype=torch.float32, seed=seed)

    ones = torch.ones(n, 5, device=DEVICE)
    cases = {
        "spmm min, weighted": (lambda x, w: sslfast.spmm(g, x, "min", w), [t(n, 5, seed=191), t(120, seed=192)]),
        "spmm sum, weight only": (lambda w: sslfast.spmm(g, ones, "sum", w), [t(120, seed=193)]),
        "gcn, weighted": (lambda x, w: sslfast.gcn_aggregate(g, x, edge_weight=w),
                          [t(n, 5, seed=194), t(120, seed=195).detach().abs().requires_grad_()]),
        "sddmm": (lambda a, b: sslfast.sddmm(g, a, b), [t(n, 4, seed=196), t(n, 4, seed=197)]),
        "gat": (lambda h, a, b: sslfast.gat_aggregate(g, h, a, b), [t(n, 2, 3, seed=198), t(n, 2, seed=199),
                                                                    t(n, 2, seed=200)]),
    }

    def value_and_grads(fn, inputs):
        leaves = [x.detach().clone().requires_grad_() for x in inputs]
        out = fn(*leaves)
        upstream = torch.randn(out.shape, generator=gen(201)).to(out)
        return out.detach(), torch.autograd.grad(out, leaves, upstream)

    with sslfast.use_backend(backend):
        for name, (fn, inputs) in cases.items():
            torch._dynamo.reset()
            want = value_and_grads(fn, inputs)
            with torch._dynamo.compiled_autograd._enable(torch.compile(backend="eager")):
                got = value_and_grads(fn, inputs)
            torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6, msg=name)
            for a, b in zip(got[1], want[1]):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    torch._dynamo.reset()


@pytest.mark.parametrize("backend", BACKENDS)
def test_inner_product_edge_loss_matches_pyg_gae(backend):
    pos, n = random_edges(40, 120, seed=120), 40
    neg = random_edges(40, 90, seed=121)
    z = randn(n, 8, dtype=torch.float32, seed=122)
    with sslfast.use_backend(backend):
        loss = sslfast.inner_product_edge_loss(z, pos, neg)
    (grad,) = torch.autograd.grad(loss, z)
    zz = z.detach().double().requires_grad_()
    # PyG GAE.recon_loss with InnerProductDecoder(sigmoid=True), EPS = 1e-15
    p = torch.sigmoid((zz[pos[0]] * zz[pos[1]]).sum(-1))
    q = torch.sigmoid((zz[neg[0]] * zz[neg[1]]).sum(-1))
    expected = -torch.log(p + 1e-15).mean() - torch.log(1 - q + 1e-15).mean()
    (expected_grad,) = torch.autograd.grad(expected, zz)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-4, atol=1e-6)


def test_negative_sampling_avoids_edges():
    edge_index, n = random_edges(50, 400, seed=130), 50
    neg = sslfast.negative_sampling(edge_index, n, 300, generator=None)
    assert neg.shape == (2, 300) and neg.dtype == torch.int64 and neg.device == edge_index.device
    existing = set(map(tuple, edge_index.t().tolist()))
    pairs = list(map(tuple, neg.t().tolist()))
    assert not existing & set(pairs)
    assert len(set(pairs)) == len(pairs) and all(s != d for s, d in pairs)
    assert (neg >= 0).all() and (neg < n).all()
    with pytest.raises(ValueError, match="num_neg"):
        sslfast.negative_sampling(edge_index, n, -1)


def test_negative_sampling_sees_an_edge_index_changed_in_place():
    """The sorted edge keys are cached per edge_index tensor: an in-place change must not reuse them.
    Five nodes, four edges: the 16 other non-loop pairs are all drawn, so a stale key would show."""
    edge_index = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]], device=DEVICE)
    gen = torch.Generator(device=DEVICE)
    first = sslfast.negative_sampling(edge_index, 5, 16, generator=gen.manual_seed(0))
    assert torch.equal(first, sslfast.negative_sampling(edge_index, 5, 16, generator=gen.manual_seed(0)))
    edge_index[1, 0] = 4  # 0 -> 1 becomes 0 -> 4
    pairs = set(map(tuple, sslfast.negative_sampling(edge_index, 5, 16).t().tolist()))
    assert (0, 4) not in pairs and (0, 1) in pairs and len(pairs) == 16


def test_edge_loss_bad_input():
    edge_index, n = special_edges()
    a = randn(n, 4, seed=140)
    with pytest.raises(ValueError, match="neg_edge_index"):
        sslfast.inner_product_edge_loss(a, edge_index, torch.tensor([[0], [n]], device=DEVICE))
    with pytest.raises(ValueError, match="pos_edge_index"):
        sslfast.inner_product_edge_loss(a, torch.zeros(2, 0, dtype=torch.long, device=DEVICE), edge_index)


# ---------------------------------------------------------------- fused GAT


def gat_inputs(n, heads, f, dtype=torch.float64, seed=150):
    return (randn(n, heads, f, dtype=dtype, seed=seed), randn(n, heads, dtype=dtype, seed=seed + 1),
            randn(n, heads, dtype=dtype, seed=seed + 2))


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("heads, features", [(8, 8), (3, 5)])
def test_gat_aggregate_float32_matches_float64_reference(backend, heads, features):
    """float32 takes the CPU kernel's vectorized exp (8 lanes, std::exp for the tail) over chunks
    of a row's edges: a hub of 10k edges spans many chunks; 3 heads leave ragged tails."""
    edge_index, n = hub_edges()
    g = Graph.from_edge_index(edge_index, n)
    # float64 leaves holding float32 values: the kernel runs in float32 (the cast is differentiable),
    # the reference in float64 on the same numbers
    leaves = [t.float().double().requires_grad_() for t in gat_inputs(n, heads, features, seed=170)]
    upstream = torch.randn(n, heads, features, generator=gen(171), dtype=torch.float64).to(DEVICE)
    with sslfast.use_backend(backend):
        out = sslfast.gat_aggregate(g, *[t.float() for t in leaves])
    grads = torch.autograd.grad(out, leaves, upstream.float())
    want = reference.gat_aggregate(edge_index, *leaves, 0.2)
    want_grads = torch.autograd.grad(want, leaves, upstream)
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, want_grads):  # float32 sums over the hub's 10k edges: up to 3.5e-4 off at |g| ~ 15
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("features", [8, 16, 5])
def test_gat_aggregate_heads_are_independent_bitwise(backend, features):
    """Heads do not interact: rolling the head axis of the inputs (and of the upstream gradient)
    rolls the output and every gradient, bit for bit. With 9 heads the CPU kernels do the score
    steps of heads 0-7 as one 8-head vector and head 8 alone (and the backward's dots too when
    features % 8 == 0), so the roll moves a head between the two paths."""
    edge_index, n = random_edges(200, 1500, seed=202), 200
    g = Graph.from_edge_index(edge_index, n)
    inputs = gat_inputs(n, 9, features, dtype=torch.float32, seed=203)
    upstream = torch.randn(n, 9, features, generator=gen(204)).to(DEVICE)

    def run(shift):
        leaves = [torch.roll(t.detach(), shift, dims=1).requires_grad_() for t in inputs]
        with sslfast.use_backend(backend):
            out = sslfast.gat_aggregate(g, *leaves)
        grads = torch.autograd.grad(out, leaves, torch.roll(upstream, shift, dims=1))
        return [torch.roll(t, -shift, dims=1) for t in (out.detach(), *grads)]

    for a, b in zip(run(0), run(1)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_gat_aggregate_hub_heads_split_by_thread_count_stays_bitwise(backend):
    """65 heads: a hub row's heads run as one block of 65 on one thread, as blocks of 64 + 1 on
    two. Every float32 exp must take the same path either way (no position-dependent tail)."""
    n = 3000  # 8 hubs with different last-chunk sizes, so many elements sit in a vector's tail
    targets = torch.cat([torch.full((HUB_DEGREE + 37 * k + 3,), k) for k in range(8)])
    sources = torch.randint(0, n, targets.shape, generator=gen(174))
    edge_index = torch.stack([sources, targets]).to(DEVICE)
    g = Graph.from_edge_index(edge_index, n)
    assert g.hub_rows.numel() == 8
    inputs = gat_inputs(n, 65, 2, dtype=torch.float32, seed=175)
    threads = torch.get_num_threads()
    runs = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            runs.append(x_and_weight_grads(lambda a, _: sslfast.gat_aggregate(g, a, *inputs[1:]), inputs[0], None,
                                          backend))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1][0], runs[1][1][0])


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_gat_aggregate_nan_score_gives_nan_row(backend):
    """A NaN attention logit makes the softmax of every row it enters NaN at that head (as the
    reference does), in float32 too, where the scores go through the vectorized exp."""
    edge_index, n = random_edges(40, 400, seed=176), 40
    g = Graph.from_edge_index(edge_index, n)
    h, a_src, a_dst = gat_inputs(n, 8, 4, dtype=torch.float32, seed=177)
    a_src = a_src.clone()
    a_src[5, 3] = float("nan")
    with sslfast.use_backend(backend):
        got = sslfast.gat_aggregate(g, h, a_src, a_dst)
    want = reference.gat_aggregate(edge_index, h.double(), a_src.double(), a_dst.double(), 0.2)
    hit = torch.zeros(n, dtype=torch.bool, device=DEVICE)
    hit[edge_index[1][edge_index[0] == 5]] = True
    assert hit.any() and torch.isnan(got[hit][:, 3]).all() and not torch.isnan(got[~hit]).any()
    torch.testing.assert_close(got.double(), want, equal_nan=True, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("concat", [True, False])
def test_gatconv_matches_pyg_formula(backend, concat):
    torch.manual_seed(1)
    edge_index, n = special_edges()
    x = randn(n, 6, seed=170)
    conv = sslfast.nn.GATConv(6, 4, heads=3, concat=concat).double().to(DEVICE)
    torch.nn.init.normal_(conv.bias)
    with sslfast.use_backend(backend):
        out = conv(x, edge_index)
    # dense PyG formula: self loops replaced by one per node, masked softmax over sources
    a = _dense_adjacency(edge_index, n)
    a.fill_diagonal_(0)
    a = a + torch.eye(n, dtype=torch.float64, device=DEVICE)
    h = (x @ conv.lin.weight.t()).view(n, 3, 4)
    alpha_src, alpha_dst = (h * conv.att_src).sum(-1), (h * conv.att_dst).sum(-1)
    e = torch.nn.functional.leaky_relu(alpha_dst.t()[:, :, None] + alpha_src.t()[:, None, :], 0.2)  # [H, i, j]
    w = torch.where(a > 0, a * torch.exp(e - e.amax(-1, keepdim=True)), torch.zeros_like(e))
    att = w / w.sum(-1, keepdim=True)
    expected = torch.einsum("kij,jkc->ikc", att, h)
    expected = expected.reshape(n, 12) if concat else expected.mean(1)
    torch.testing.assert_close(out, expected + conv.bias)
    with sslfast.use_backend(backend):  # attend: the same layer from the projected features
        torch.testing.assert_close(conv.attend(x @ conv.lin.weight.t(), edge_index), out)
        with pytest.raises(ValueError, match="h must have heads"):
            conv.attend(x, edge_index)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_sanitize_every_kernel_once(backend):
    """Small calls of every kernel, forward and backward (``make gpu-check`` runs the tests named
    ``sanitize`` under compute-sanitizer memcheck): odd feature counts, a hub, empty rows."""
    edge_index, n = hub_edges(n=3000, hub_degree=HUB_DEGREE + 5)
    g = Graph.from_edge_index(edge_index, n)
    w = randn(edge_index.shape[1], dtype=torch.float32, seed=180)
    for f in (1, 7, 64):
        x = randn(n, f, dtype=torch.float32, seed=181)
        with sslfast.use_backend(backend):
            for reduce in REDUCES:
                sslfast.spmm(g, x, reduce, w).sum().backward()
            sslfast.gcn_aggregate(g, x).sum().backward()
            sslfast.sddmm(g, x, x).sum().backward()
    assert x.grad is not None and w.grad is not None


@pytest.mark.parametrize("heads", [None, 3])
@pytest.mark.parametrize("graph_name", list(GRAPHS))
def test_edge_softmax_matches_pyg_formula(heads, graph_name):
    edge_index, n = GRAPHS[graph_name]()
    g = Graph.from_edge_index(edge_index, n)
    e = edge_index.shape[1]
    scores = randn(*((e,) if heads is None else (e, heads)), seed=190)
    got = sslfast.edge_softmax(g, scores)
    dst = edge_index[1]
    expected = torch.empty_like(scores)
    for i in range(n):  # PyG softmax written per target
        sel = dst == i
        if sel.any():
            expected[sel] = torch.softmax(scores[sel], dim=0)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got, reference.edge_softmax(edge_index, scores))
    if e:
        upstream = torch.randn(scores.shape, generator=gen(191), dtype=torch.float64).to(DEVICE)
        torch.testing.assert_close(torch.autograd.grad(got, scores, upstream)[0],
                                   torch.autograd.grad(expected, scores, upstream)[0])
    with pytest.raises(ValueError, match="scores"):
        sslfast.edge_softmax(g, randn(e + 1, seed=192))


# ---------------------------------------------------------------- GCN with edge weights, PyG's gcn_norm


def pyg_gcn_conv_propagate(edge_index, n, x, edge_weight=None, add_self_loops=True, normalize=True):
    """PyG GCNConv.propagate after gcn_norm, written out edge by edge: add_remaining_self_loops
    drops every existing loop and adds one per node with weight 1, or with the weight of the
    node's existing loop; deg = scatter_add(w, target); w_ji d_j^-1/2 d_i^-1/2; no normalization
    (normalize=False): the raw weights, no loops."""
    w = torch.ones(edge_index.shape[1], dtype=x.dtype, device=x.device) if edge_weight is None else edge_weight
    if normalize:
        if add_self_loops:
            keep = edge_index[0] != edge_index[1]
            loop_w = torch.ones(n, dtype=x.dtype, device=x.device)
            loop_w[edge_index[0][~keep]] = w[~keep]
            loops = torch.arange(n, device=x.device).expand(2, -1)
            edge_index = torch.cat([edge_index[:, keep], loops], dim=1)
            w = torch.cat([w[keep], loop_w])
        deg = torch.zeros(n, dtype=x.dtype, device=x.device).index_add(0, edge_index[1], w)
        dinv = deg.pow(-0.5)
        dinv = dinv.masked_fill(dinv == float("inf"), 0)
        w = dinv[edge_index[0]] * w * dinv[edge_index[1]]
    return torch.zeros_like(x).index_add(0, edge_index[1], w[:, None] * x[edge_index[0]])


def positive_weights(e, seed):
    return (torch.rand(e, generator=gen(seed), dtype=torch.float64) + 0.1).to(DEVICE).requires_grad_(True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("add_self_loops", [True, False])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("graph_name", list(GRAPHS) + ["hub"])
def test_gcn_aggregate_unit_weights_equal_unweighted(backend, add_self_loops, normalize, graph_name):
    """Weights of 1 (the spmm path) give the unweighted fused kernel's result."""
    edge_index, n = hub_edges(n=3000, hub_degree=HUB_DEGREE + 5) if graph_name == "hub" else GRAPHS[graph_name]()
    g = Graph.from_edge_index(edge_index, n)
    x = randn(n, 7, seed=120)
    kwargs = dict(add_self_loops=add_self_loops, normalize=normalize)
    ones = torch.ones(edge_index.shape[1], dtype=torch.float64, device=DEVICE)
    with sslfast.use_backend(backend):
        torch.testing.assert_close(sslfast.gcn_aggregate(g, x, edge_weight=ones, **kwargs),
                                   sslfast.gcn_aggregate(g, x, **kwargs), rtol=1e-12, atol=1e-12)


def test_reference_gcn_aggregate_edge_weight_is_the_dense_formula():
    edge_index, n = special_edges()
    x, w = randn(n, 3, seed=130, requires_grad=False), positive_weights(edge_index.shape[1], seed=131).detach()
    a_w = torch.zeros(n, n, dtype=torch.float64, device=DEVICE)
    a_w.index_put_((edge_index[1], edge_index[0]), w, accumulate=True)
    a_hat = a_w + torch.eye(n, dtype=torch.float64, device=DEVICE)
    dinv = a_hat.sum(1).pow(-0.5)
    torch.testing.assert_close(reference.gcn_aggregate(edge_index, x, edge_weight=w),
                               dinv[:, None] * a_hat * dinv[None, :] @ x)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("graph_name", ["special", "random", "duplicate_loops"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("normalize", [True, False])
def test_gcnconv_matches_pyg_gcn_norm(backend, graph_name, weighted, normalize):
    if graph_name == "duplicate_loops":  # node 2 has two loops: PyG keeps one (weight 1 unweighted)
        edge_index, n = torch.tensor([[0, 2, 2, 1, 3], [1, 2, 2, 2, 0]], device=DEVICE), 4
        if weighted:
            pytest.skip("which duplicate loop's weight PyG keeps is unspecified (index_put)")
    else:
        edge_index, n = GRAPHS[graph_name]()
    x = randn(n, 6, seed=150)
    w = positive_weights(edge_index.shape[1], seed=151) if weighted else None
    with sslfast.use_backend(backend):
        gcn = sslfast.nn.GCNConv(6, 5, normalize=normalize).double().to(DEVICE)
        torch.nn.init.normal_(gcn.bias)
        expected = pyg_gcn_conv_propagate(edge_index, n, x @ gcn.lin.weight.t(), w, normalize=normalize) + gcn.bias
        torch.testing.assert_close(gcn(x, edge_index, w), expected)
        torch.testing.assert_close(gcn(x, Graph.from_edge_index(edge_index, n), w), expected)
        if weighted:
            (g_x, g_w), (e_x, e_w) = (torch.autograd.grad(out.sum(), (x, w)) for out in
                                      (gcn(x, edge_index, w),
                                       pyg_gcn_conv_propagate(edge_index, n, x @ gcn.lin.weight.t(), w,
                                                              normalize=normalize)))
            torch.testing.assert_close(g_x, e_x)
            torch.testing.assert_close(g_w, e_w)
