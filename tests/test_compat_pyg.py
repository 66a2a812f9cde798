"""sslfast.nn's convs as drop-ins for PyG's (issue 18): the models of PyG's DGI, GAE / VGAE and
GAT examples built with either library, the same weights (``load_state_dict`` of PyG's state),
equal outputs and gradients; every supported constructor argument against PyG's conv; attention
dropout statistics; unsupported arguments named in the error. PyG is a test dependency."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

pyg_nn = pytest.importorskip("torch_geometric.nn")

import sslfast  # noqa: E402
from sslfast import data as D  # noqa: E402
from sslfast import nn as fast_nn  # noqa: E402

from helpers import DEVICE  # noqa: E402

TOL = 1e-5  # float32, both libraries summing in their own order
HAS_CORA = any((p / "ind.cora.graph").exists() for p in D.planetoid_candidates())

# Largest error seen per test (outputs, gradients; absolute, or relative to the largest value where
# that exceeds 1), for docs/compat-pyg.md.
MAX_ERRORS: dict[str, tuple[float, float]] = {}


def random_graph(n=40, num_edges=200, seed=0, loops=3):
    """Distinct random edges (no duplicates: max aggregation would tie, and PyG splits a tied
    gradient where sslfast gives it to the first edge), ``loops`` self loops among them, the last
    node isolated."""
    g = torch.Generator().manual_seed(seed)
    keys = torch.unique(torch.randint(0, (n - 1) ** 2, (num_edges,), generator=g))
    src, dst = keys // (n - 1), keys % (n - 1)
    keep = src != dst
    src, dst = src[keep], dst[keep]
    loop_nodes = torch.randperm(n - 1, generator=g)[:loops]
    edge_index = torch.cat([torch.stack([src, dst]), loop_nodes.expand(2, -1)], dim=1)
    edge_index = edge_index[:, torch.randperm(edge_index.shape[1], generator=g)]  # unsorted, as users pass it
    return edge_index.to(DEVICE), n


def randn(*shape, seed, scale=1.0):
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale).to(DEVICE)


def _max_err(a, b):
    """Largest absolute difference, relative to the largest |b| where that exceeds 1."""
    if not a.numel():
        return 0.0
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1.0))


def _close(name, got, want, tol=TOL):
    """assert_close with the scale of the values: absolute and relative TOL."""
    torch.testing.assert_close(got, want, rtol=tol, atol=tol, msg=lambda m: f"{name}: {m}")
    return _max_err(got, want)


def _record(key, out_err, grad_err):
    old = MAX_ERRORS.get(key, (0.0, 0.0))
    MAX_ERRORS[key] = (max(old[0], out_err), max(old[1], grad_err))


def compare_grads(pyg_model, fast_model, extra=()):
    """Every parameter's gradient (same names on both sides), plus (name, pyg_tensor, fast_tensor)
    leaves in ``extra``; returns the largest error."""
    fast_params = dict(fast_model.named_parameters())
    names = [name for name, _ in pyg_model.named_parameters()]
    assert sorted(names) == sorted(fast_params), "parameter names differ"
    err = 0.0
    for name, p in pyg_model.named_parameters():
        q = fast_params[name]
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            err = max(err, _close(f"grad of {name}", q.grad, p.grad))
    for name, a, b in extra:
        err = max(err, _close(f"grad of {name}", b.grad, a.grad))
    return err


def twins(make_pyg, make_fast):
    """A PyG model and the sslfast one with its weights (strict load: the names and shapes agree)."""
    torch.manual_seed(0)
    pyg_model = make_pyg().to(DEVICE)
    fast_model = make_fast().to(DEVICE)
    fast_model.load_state_dict(pyg_model.state_dict())
    return pyg_model, fast_model


def cora():
    g = D.load("cora")
    x = g.x / g.x.sum(1, keepdim=True).clamp(min=1)  # T.NormalizeFeatures, as the GAE and GAT examples
    return g.x.to(DEVICE), x.to(DEVICE), g.edge_index.to(DEVICE), g.x.shape[0]


def graphs():
    cases = [pytest.param("random", id="random")]
    cases.append(pytest.param("cora", id="cora", marks=pytest.mark.skipif(not HAS_CORA, reason="no Planetoid files")))
    return cases


def example_data(name):
    """(raw x, normalized x, edge_index, num_nodes)"""
    if name == "cora":
        return cora()
    edge_index, n = random_graph(60, 400, seed=1)
    x = randn(n, 24, seed=2).relu()
    return x, x / x.sum(1, keepdim=True).clamp(min=1e-6), edge_index, n


# ---------------------------------------------------------------- the examples' models


class DGIEncoder(torch.nn.Module):
    """examples/infomax_transductive.py's Encoder, with either library's GCNConv."""

    def __init__(self, conv_cls, in_channels, hidden_channels):
        super().__init__()
        self.conv = conv_cls(in_channels, hidden_channels, cached=True)
        self.prelu = torch.nn.PReLU(hidden_channels)

    def forward(self, x, edge_index):
        return self.prelu(self.conv(x, edge_index))


def _corruption(x, edge_index):
    return x[torch.randperm(x.size(0), device=x.device)], edge_index


def _summary(z, *args, **kwargs):
    return torch.sigmoid(z.mean(dim=0))


@pytest.mark.parametrize("graph", graphs())
def test_dgi_example(graph):
    """DeepGraphInfomax(Encoder(GCNConv(cached=True) + PReLU)): two Adam steps, each from the same
    weights; outputs, loss and every gradient equal (the second step runs on the cached graph)."""
    x, _, edge_index, _ = example_data(graph)
    hidden = 512 if graph == "cora" else 32

    def model(conv_cls):
        return lambda: pyg_nn.DeepGraphInfomax(hidden, DGIEncoder(conv_cls, x.shape[1], hidden), _summary,
                                               _corruption)

    pyg_model, fast_model = twins(model(pyg_nn.GCNConv), model(fast_nn.GCNConv))
    opts = [torch.optim.Adam(m.parameters(), lr=0.001) for m in (pyg_model, fast_model)]
    out_err = grad_err = 0.0
    for step in range(2):
        results = []
        for model_, opt in zip((pyg_model, fast_model), opts):
            opt.zero_grad()
            torch.manual_seed(10 + step)  # the corruption's permutation
            pos_z, neg_z, summary = model_(x, edge_index)
            loss = model_.loss(pos_z, neg_z, summary)
            loss.backward()
            results.append((pos_z, neg_z, summary, loss))
        for name, a, b in zip(("pos_z", "neg_z", "summary", "loss"), *results):
            out_err = max(out_err, _close(name, b, a))
        grad_err = max(grad_err, compare_grads(pyg_model, fast_model))
        for opt in opts:
            opt.step()
        # the next step starts from PyG's weights: Adam's first steps are about lr * sign(grad),
        # which would turn a 1e-9 difference in a near-zero gradient into one of lr
        fast_model.load_state_dict(pyg_model.state_dict())
    _record(f"DGI {graph}", out_err, grad_err)


class GCNEncoder(torch.nn.Module):
    """examples/autoencoder.py's GCNEncoder."""

    def __init__(self, conv_cls, in_channels, out_channels):
        super().__init__()
        self.conv1 = conv_cls(in_channels, 2 * out_channels)
        self.conv2 = conv_cls(2 * out_channels, out_channels)

    def forward(self, x, edge_index):
        return self.conv2(self.conv1(x, edge_index).relu(), edge_index)


class VariationalGCNEncoder(torch.nn.Module):
    """examples/autoencoder.py's VariationalGCNEncoder."""

    def __init__(self, conv_cls, in_channels, out_channels):
        super().__init__()
        self.conv1 = conv_cls(in_channels, 2 * out_channels)
        self.conv_mu = conv_cls(2 * out_channels, out_channels)
        self.conv_logstd = conv_cls(2 * out_channels, out_channels)

    def forward(self, x, edge_index):
        x = self.conv1(x, edge_index).relu()
        return self.conv_mu(x, edge_index), self.conv_logstd(x, edge_index)


@pytest.mark.parametrize("variational", [False, True], ids=["GAE", "VGAE"])
@pytest.mark.parametrize("graph", graphs())
def test_gae_example(graph, variational):
    """GAE(GCNEncoder) / VGAE(VariationalGCNEncoder) of the autoencoder example: encode,
    recon_loss (+ KL), two Adam steps, each from the same weights; z, the loss and every gradient
    equal."""
    _, x, edge_index, n = example_data(graph)
    wrapper, encoder = (pyg_nn.VGAE, VariationalGCNEncoder) if variational else (pyg_nn.GAE, GCNEncoder)
    pyg_model, fast_model = twins(lambda: wrapper(encoder(pyg_nn.GCNConv, x.shape[1], 16)),
                                  lambda: wrapper(encoder(fast_nn.GCNConv, x.shape[1], 16)))
    opts = [torch.optim.Adam(m.parameters(), lr=0.01) for m in (pyg_model, fast_model)]
    out_err = grad_err = 0.0
    for step in range(2):
        results = []
        for model, opt in zip((pyg_model, fast_model), opts):
            model.train()
            opt.zero_grad()
            torch.manual_seed(20 + step)  # VGAE's reparametrization noise
            random.seed(20 + step)  # PyG's negative_sampling draws with Python's random.sample
            z = model.encode(x, edge_index)
            loss = model.recon_loss(z, edge_index)
            if variational:
                loss = loss + (1 / n) * model.kl_loss()
            loss.backward()
            results.append((z, loss))
        for name, a, b in zip(("z", "loss"), *results):
            out_err = max(out_err, _close(name, b, a))
        grad_err = max(grad_err, compare_grads(pyg_model, fast_model))
        for opt in opts:
            opt.step()
        # the next step starts from PyG's weights: Adam's first steps are about lr * sign(grad),
        # which would turn a 1e-9 difference in a near-zero gradient into one of lr
        fast_model.load_state_dict(pyg_model.state_dict())
    _record(f"{'VGAE' if variational else 'GAE'} {graph}", out_err, grad_err)


class GAT(torch.nn.Module):
    """examples/gat.py's GAT (hidden 8 x 8 heads); ``p`` its dropouts (0.6 there)."""

    def __init__(self, conv_cls, in_channels, out_channels, p=0.6, hidden_channels=8, heads=8):
        super().__init__()
        self.p = p
        self.conv1 = conv_cls(in_channels, hidden_channels, heads, dropout=p)
        self.conv2 = conv_cls(hidden_channels * heads, out_channels, heads=1, concat=False, dropout=p)

    def forward(self, x, edge_index):
        x = F.dropout(x, p=self.p, training=self.training)
        x = F.elu(self.conv1(x, edge_index))
        x = F.dropout(x, p=self.p, training=self.training)
        return self.conv2(x, edge_index)


@pytest.mark.parametrize("mode", ["eval", "train-p0"])
@pytest.mark.parametrize("graph", graphs())
def test_gat_example(graph, mode):
    """The GAT example's model: in eval mode (dropout 0.6, inactive) and in training mode with
    dropout 0 (dropout draws differ between the libraries; its statistics are tested below):
    logits, the cross-entropy on the training nodes and every gradient equal."""
    _, x, edge_index, n = example_data(graph)
    classes = 7
    y = torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(3)).to(DEVICE)
    train_mask = (torch.arange(n) % 5 == 0).to(DEVICE)
    p = 0.6 if mode == "eval" else 0.0
    pyg_model, fast_model = twins(lambda: GAT(pyg_nn.GATConv, x.shape[1], classes, p),
                                  lambda: GAT(fast_nn.GATConv, x.shape[1], classes, p))
    results = []
    for model in (pyg_model, fast_model):
        model.train(mode != "eval")
        out = model(x, edge_index)
        loss = F.cross_entropy(out[train_mask], y[train_mask])
        loss.backward()
        results.append((out, loss))
    out_err = max(_close(name, b, a) for name, a, b in zip(("logits", "loss"), *results))
    _record(f"GAT {graph} {mode}", out_err, compare_grads(pyg_model, fast_model))


# ---------------------------------------------------------------- every argument, layer by layer


def run_pair(key, pyg_conv, fast_conv, x, edge_index, *args, extra_inputs=(), extra_grads=True, **kwargs):
    """One forward + backward of a PyG conv and the sslfast conv with its weights: the output
    (and, for tuples, every tensor in it), the gradients of the parameters, of x and (with
    ``extra_grads``) of the tensors in ``extra_inputs``."""
    fast_conv.load_state_dict(pyg_conv.state_dict())
    leaves, outs = [], []
    for conv in (pyg_conv, fast_conv):
        xs = x.clone().requires_grad_()
        extras = [t.clone().requires_grad_(extra_grads) for t in extra_inputs]
        out = conv(xs, edge_index, *extras, *args, **kwargs)
        flat = [out] if isinstance(out, torch.Tensor) else [out[0], *out[1]]
        loss = sum((t * randn(*t.shape, seed=90 + i)).sum() for i, t in enumerate(flat) if t.is_floating_point())
        loss.backward()
        leaves.append((xs, extras))
        outs.append(flat)
    out_err = 0.0
    for i, (a, b) in enumerate(zip(*outs)):
        if a.is_floating_point():
            out_err = max(out_err, _close(f"output {i}", b, a))
        else:
            assert torch.equal(a, b), f"output {i} (edge_index) differs"
    extra = [("x", leaves[0][0], leaves[1][0])]
    if extra_grads:
        extra += [(f"input {i}", a, b) for i, (a, b) in enumerate(zip(leaves[0][1], leaves[1][1]))]
    _record(key, out_err, compare_grads(pyg_conv, fast_conv, extra))
    return outs


@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("normalize, add_self_loops", [(True, None), (True, True), (True, False), (False, None),
                                                        (False, False)])
@pytest.mark.parametrize("improved", [False, True])
def test_gcnconv_arguments(improved, normalize, add_self_loops, bias, weighted, cached):
    edge_index, n = random_graph(seed=4)
    x = randn(n, 6, seed=5)
    weight = (torch.rand(edge_index.shape[1], generator=torch.Generator().manual_seed(6)) + 0.5).to(DEVICE)
    args = dict(improved=improved, cached=cached, add_self_loops=add_self_loops, normalize=normalize, bias=bias)
    torch.manual_seed(0)
    pyg_conv, fast_conv = pyg_nn.GCNConv(6, 5, **args).to(DEVICE), fast_nn.GCNConv(6, 5, **args).to(DEVICE)
    if bias:
        torch.nn.init.normal_(pyg_conv.bias)
    # PyG's cache holds the normalized weights with their autograd graph, which a second backward
    # cannot run through: with cached=True the weights are constants
    extra = dict(extra_inputs=(weight,) if weighted else (), extra_grads=not cached)
    run_pair("GCNConv", pyg_conv, fast_conv, x, edge_index, **extra)
    # a second call on another graph: cached=True keeps the first graph and weights, as PyG
    other, _ = random_graph(seed=7, num_edges=120)
    other_weight = (torch.rand(other.shape[1], generator=torch.Generator().manual_seed(8)) + 0.5).to(DEVICE)
    extra["extra_inputs"] = (other_weight,) if weighted else ()
    run_pair("GCNConv", pyg_conv, fast_conv, x, other, **extra)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("project", [False, True])
@pytest.mark.parametrize("root_weight", [True, False])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("aggr", ["mean", "sum", "add", "max", "min"])
def test_sageconv_arguments(aggr, normalize, root_weight, project, bias):
    edge_index, n = random_graph(seed=9)
    x = randn(n, 6, seed=10)
    args = dict(aggr=aggr, normalize=normalize, root_weight=root_weight, project=project, bias=bias)
    torch.manual_seed(0)
    run_pair("SAGEConv", pyg_nn.SAGEConv(6, 5, **args).to(DEVICE), fast_nn.SAGEConv(6, 5, **args).to(DEVICE),
             x, edge_index)


@pytest.mark.parametrize("attention", [None, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("add_self_loops", [True, False])
@pytest.mark.parametrize("negative_slope", [0.2, 0.05])
@pytest.mark.parametrize("concat", [True, False])
@pytest.mark.parametrize("heads", [1, 3])
def test_gatconv_arguments(heads, concat, negative_slope, add_self_loops, bias, attention):
    """return_attention_weights: the edges (PyG's order, loops last) equal, alpha [E', heads] and
    its gradient too (the loss weighs every returned tensor)."""
    edge_index, n = random_graph(seed=11)
    x = randn(n, 6, seed=12)
    args = dict(heads=heads, concat=concat, negative_slope=negative_slope, add_self_loops=add_self_loops, bias=bias)
    torch.manual_seed(0)
    pyg_conv, fast_conv = pyg_nn.GATConv(6, 4, **args).to(DEVICE), fast_nn.GATConv(6, 4, **args).to(DEVICE)
    if bias:
        torch.nn.init.normal_(pyg_conv.bias)
    outs = run_pair("GATConv", pyg_conv, fast_conv, x, edge_index, return_attention_weights=attention)
    if attention:
        edges, alpha = outs[1][1], outs[1][2]
        assert alpha.shape == (edges.shape[1], heads)
        loops = int((edge_index[0] == edge_index[1]).sum())
        expected = edge_index.shape[1] - loops + n if add_self_loops else edge_index.shape[1]
        assert edges.shape == (2, expected)


@pytest.mark.parametrize("train_eps", [False, True])
@pytest.mark.parametrize("eps", [0.0, 0.3, -0.2])
def test_ginconv_arguments(eps, train_eps):
    edge_index, n = random_graph(seed=13)
    x = randn(n, 6, seed=14)

    def mlp():
        return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 5))

    torch.manual_seed(0)
    pyg_conv = pyg_nn.GINConv(mlp(), eps=eps, train_eps=train_eps).to(DEVICE)
    fast_conv = fast_nn.GINConv(mlp(), eps=eps, train_eps=train_eps).to(DEVICE)
    assert isinstance(fast_conv.eps, torch.nn.Parameter) == train_eps
    run_pair("GINConv", pyg_conv, fast_conv, x, edge_index)


def test_prebuilt_graph_and_same_tensor_pairs():
    """sslfast extras that stay PyG-equal: a prebuilt Graph for edge_index, and x given as the
    pair (x, x) (PyG's non-bipartite pair)."""
    edge_index, n = random_graph(seed=15)
    graph = sslfast.Graph.from_edge_index(edge_index, n)
    x = randn(n, 6, seed=16)
    torch.manual_seed(0)
    for pyg_conv, fast_conv in [(pyg_nn.GCNConv(6, 5), fast_nn.GCNConv(6, 5)),
                                (pyg_nn.SAGEConv(6, 5, aggr="max"), fast_nn.SAGEConv(6, 5, aggr="max")),
                                (pyg_nn.GATConv(6, 2, heads=2), fast_nn.GATConv(6, 2, heads=2)),
                                (pyg_nn.GINConv(torch.nn.Linear(6, 5)), fast_nn.GINConv(torch.nn.Linear(6, 5)))]:
        pyg_conv, fast_conv = pyg_conv.to(DEVICE), fast_conv.to(DEVICE)
        fast_conv.load_state_dict(pyg_conv.state_dict())
        want = pyg_conv(x, edge_index)
        _close("prebuilt Graph", fast_conv(x, graph), want)
        if not isinstance(fast_conv, fast_nn.GCNConv):
            _close("(x, x)", fast_conv((x, x), edge_index), want)
    for add_self_loops in (True, False):  # return_attention_weights with a Graph: the Graph's input order
        pyg_conv = pyg_nn.GATConv(6, 2, heads=2, add_self_loops=add_self_loops).to(DEVICE)
        fast_conv = fast_nn.GATConv(6, 2, heads=2, add_self_loops=add_self_loops).to(DEVICE)
        fast_conv.load_state_dict(pyg_conv.state_dict())
        want, (want_edges, want_alpha) = pyg_conv(x, edge_index, return_attention_weights=True)
        got, (edges, alpha) = fast_conv(x, graph, return_attention_weights=True)
        assert torch.equal(edges, want_edges)
        _close("alpha with a Graph", alpha, want_alpha)


def test_cache_follows_edits_and_inference_mode():
    """The Graph cached per edge_index tensor is rebuilt after an in-place edit of it; tensors made
    under inference_mode (no version counter) work too."""
    edge_index, n = random_graph(seed=22)
    x = randn(n, 4, seed=23)
    torch.manual_seed(0)
    pyg_conv, fast_conv = pyg_nn.SAGEConv(4, 3).to(DEVICE), fast_nn.SAGEConv(4, 3).to(DEVICE)
    fast_conv.load_state_dict(pyg_conv.state_dict())
    _close("before the edit", fast_conv(x, edge_index), pyg_conv(x, edge_index))
    edge_index[1] = edge_index[1].roll(1)
    _close("after the edit", fast_conv(x, edge_index), pyg_conv(x, edge_index))
    with torch.inference_mode():
        edges, features = edge_index.clone(), x.clone()
        for conv in (fast_nn.GCNConv(4, 3, cached=True), fast_nn.GATConv(4, 3), fast_conv):
            assert conv.to(DEVICE)(features, edges).shape == (n, 3)


def test_inference_mode_edge_index_edited_in_place_is_read_again():
    """An inference tensor has no version counter, so an in-place edit of it cannot be detected:
    the conv must read it again on every call (SAGE, GCN, and GAT's loop graph)."""
    edge_index, n = random_graph(seed=24)
    x = randn(n, 4, seed=25)
    torch.manual_seed(0)
    pairs = [(pyg_nn.SAGEConv(4, 3, aggr="sum"), fast_nn.SAGEConv(4, 3, aggr="sum")),
             (pyg_nn.GCNConv(4, 3), fast_nn.GCNConv(4, 3)),
             (pyg_nn.GATConv(4, 3, heads=2), fast_nn.GATConv(4, 3, heads=2))]
    for pyg_conv, fast_conv in pairs:
        pyg_conv, fast_conv = pyg_conv.to(DEVICE), fast_conv.to(DEVICE)
        fast_conv.load_state_dict(pyg_conv.state_dict())
        with torch.inference_mode():
            edges = edge_index.clone()
            fast_conv(x, edges)
            edges[1] = edges[1].roll(1)
            _close(f"{type(fast_conv).__name__} after an inference-mode edit", fast_conv(x, edges),
                   pyg_conv(x, edges))


def test_gcn_cached_keeps_the_first_prebuilt_graph_and_weights():
    """cached=True with sslfast.graph.Graph inputs: the first call's graph and edge weights are
    used for every later call, as with edge_index tensors (a later Graph of another edge count
    must not meet the first call's weights)."""
    edge_index, n = random_graph(seed=26)
    x = randn(n, 4, seed=27)
    g = torch.Generator().manual_seed(28)
    weight = torch.rand(edge_index.shape[1], generator=g).to(DEVICE)
    torch.manual_seed(0)
    pyg_conv, fast_conv = pyg_nn.GCNConv(4, 3, cached=True).to(DEVICE), fast_nn.GCNConv(4, 3, cached=True).to(DEVICE)
    fast_conv.load_state_dict(pyg_conv.state_dict())
    want = pyg_conv(x, edge_index, weight)
    _close("first Graph", fast_conv(x, sslfast.Graph.from_edge_index(edge_index, num_nodes=n), weight), want)
    other = edge_index[:, : edge_index.shape[1] // 2].clone()
    other_weight = torch.rand(other.shape[1], generator=g).to(DEVICE)
    _close("second Graph", fast_conv(x, sslfast.Graph.from_edge_index(other, num_nodes=n), other_weight), want)
    _close("then an edge_index", fast_conv(x, other, other_weight), want)


# ---------------------------------------------------------------- attention dropout


def test_gat_attention_dropout_statistics_and_seeding():
    """Training mode, dropout 0.5: the returned alpha is PyG's (softmax, then dropout): about half
    of the entries zero, the others the eval-mode alpha / (1 - p); it is the mask the fused output
    used (the output recomputed from alpha matches, gradients too); torch.manual_seed repeats it."""
    edge_index, n = random_graph(n=300, num_edges=3000, seed=17)
    x = randn(n, 8, seed=18)
    p, heads = 0.5, 4
    torch.manual_seed(0)
    conv = fast_nn.GATConv(8, 3, heads=heads, dropout=p, bias=False).to(DEVICE)
    conv.eval()
    _, (edges, alpha_eval) = conv(x, edge_index, return_attention_weights=True)
    conv.train()
    torch.manual_seed(5)
    out, (edges_train, alpha) = conv(x, edge_index, return_attention_weights=True)
    torch.manual_seed(5)
    again, (_, alpha_again) = conv(x, edge_index, return_attention_weights=True)
    assert torch.equal(out, again) and torch.equal(alpha, alpha_again)
    assert not torch.equal(conv(x, edge_index), out)  # a fresh mask per call
    assert torch.equal(edges, edges_train)

    kept = alpha != 0
    rate = float(kept.float().mean())
    assert abs(rate - (1 - p)) < 0.03, rate  # E' x heads = 13000 draws: 0.03 is > 6 standard deviations
    torch.testing.assert_close(alpha[kept], alpha_eval[kept] / (1 - p), rtol=1e-5, atol=1e-7)

    # the output is sum_j alpha_ji h_j with that alpha (PyG's propagate), and so are its gradients
    h = conv.lin(x).view(n, heads, 3)
    recomputed = torch.zeros_like(h).index_add_(0, edges[1], alpha.unsqueeze(-1) * h[edges[0]]).reshape(n, -1)
    _close("output from alpha", out, recomputed)
    cotangent = randn(*out.shape, seed=19)
    fused = torch.autograd.grad((out * cotangent).sum(), list(conv.parameters()), retain_graph=True)
    composed = torch.autograd.grad((recomputed * cotangent).sum(), list(conv.parameters()))
    for name, a, b in zip([k for k, _ in conv.named_parameters()], fused, composed):
        _close(f"grad of {name}", a, b)


# ---------------------------------------------------------------- what is not supported


@pytest.mark.parametrize("make, name, error", [
    (lambda: fast_nn.GCNConv(4, 4, flow="target_to_source"), "flow", ValueError),
    (lambda: fast_nn.GCNConv(4, 4, aggr="mean"), "aggr", ValueError),
    (lambda: fast_nn.GCNConv(4, 4, node_dim=0), "node_dim", ValueError),
    (lambda: fast_nn.GCNConv(4, 4, aggr_kwargs={}), "aggr_kwargs", TypeError),
    (lambda: fast_nn.GCNConv(4, 4, colour=1), "colour", TypeError),
    (lambda: fast_nn.GCNConv(-1, 4), "in_channels", ValueError),
    (lambda: fast_nn.GCNConv(4, 4, normalize=False, add_self_loops=True), "add_self_loops", ValueError),
    (lambda: fast_nn.GCNConv(4, 4, improved=1), "improved", TypeError),
    (lambda: fast_nn.SAGEConv(4, 4, aggr=["mean", "max"]), "aggr", ValueError),
    (lambda: fast_nn.SAGEConv(4, 4, aggr="lstm"), "aggr", ValueError),
    (lambda: fast_nn.SAGEConv(4, 4, aggr=pyg_nn.aggr.MeanAggregation()), "aggr", ValueError),
    (lambda: fast_nn.SAGEConv((4, 6), 4), "in_channels", ValueError),
    (lambda: fast_nn.SAGEConv(4, 4, project=1), "project", TypeError),
    (lambda: fast_nn.GATConv(4, 4, edge_dim=3), "edge_dim", ValueError),
    (lambda: fast_nn.GATConv(4, 4, fill_value=0.0), "fill_value", ValueError),
    (lambda: fast_nn.GATConv(4, 4, residual=True), "residual", ValueError),
    (lambda: fast_nn.GATConv((4, 4), 4), "in_channels", ValueError),
    (lambda: fast_nn.GATConv(4, 4, dropout=1.0), "dropout", ValueError),
    (lambda: fast_nn.GATConv(4, 4, heads=0), "heads", ValueError),
    (lambda: fast_nn.GINConv(torch.nn.Linear(4, 4), train_eps=1), "train_eps", TypeError),
    (lambda: fast_nn.GINConv(torch.nn.Linear(4, 4), aggr="max"), "aggr", ValueError),
    (lambda: fast_nn.GINConv(None), "nn", TypeError),
])
def test_unsupported_constructor_arguments_are_named(make, name, error):
    with pytest.raises(error, match=name):
        make()


def test_pyg_defaults_passed_explicitly_are_accepted():
    fast_nn.GCNConv(4, 4, aggr="add", flow="source_to_target", node_dim=-2, decomposed_layers=1)
    fast_nn.GATConv(4, 4, edge_dim=None, fill_value="mean", residual=False, aggr="add")
    fast_nn.SAGEConv(4, 4, aggr="mean", flow="source_to_target")
    fast_nn.GINConv(torch.nn.Linear(4, 4), aggr="add")


@pytest.mark.filterwarnings("ignore:Sparse:UserWarning")
def test_unsupported_forward_inputs_are_named():
    edge_index, n = random_graph(seed=20)
    x = randn(n, 4, seed=21)
    adjacency = torch.sparse_coo_tensor(edge_index.flip(0), torch.ones(edge_index.shape[1], device=DEVICE), (n, n))
    convs = [fast_nn.GCNConv(4, 4), fast_nn.SAGEConv(4, 4), fast_nn.GATConv(4, 4),
             fast_nn.GINConv(torch.nn.Linear(4, 4))]
    for conv in convs:
        conv = conv.to(DEVICE)
        for bad in (adjacency, adjacency.to_sparse_csr(), object()):
            with pytest.raises(TypeError, match="edge_index"):
                conv(x, bad)
        with pytest.raises(TypeError, match="x"):
            conv((x, x[:5]), edge_index)
        with pytest.raises(ValueError, match="in_channels|x"):
            conv(x[:, :3], edge_index) if not isinstance(conv, fast_nn.GINConv) else conv(x[:, :3].t(), edge_index)
    for conv in convs[1:]:
        with pytest.raises(ValueError, match="size"):
            conv(x, edge_index, size=(n, n)) if not isinstance(conv, fast_nn.GATConv) else \
                conv(x, edge_index, None, (n, n))
    with pytest.raises(ValueError, match="edge_attr"):
        convs[2](x, edge_index, torch.ones(edge_index.shape[1], 2, device=DEVICE))
