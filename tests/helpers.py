"""Helpers shared by the test files, written once: seeded inputs, losses and gradients under a
backend, the tolerance rule against a float64 truth, and which backends can run an op here.

Imported after tests/conftest.py has set TRITON_INTERPRET (pytest loads conftest first).
"""

from __future__ import annotations

import os

import torch
from torch.utils._pytree import tree_leaves, tree_map

import sslfast
from sslfast import _dispatch

DEVICE = os.environ.get("SSLFAST_TEST_DEVICE", "cpu")
DEVICE_TYPE = torch.device(DEVICE).type
# The floor of the tolerance rule (docs/ARCHITECTURE.md, "Tests"), relative to the truth's magnitude.
FLOORS = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-2}


def runnable_backends(device_type, op):
    """Backends that can run ``op`` on this machine for this device type (reference always can)."""
    return [b for b in ("reference", "native", "triton") if _dispatch.why_not(b, op, device_type) is None]


def fast_backends(op, device_type=DEVICE_TYPE):
    """The kernel backends (not the reference) that can run ``op`` here."""
    return [b for b in runnable_backends(device_type, op) if b != "reference"]


def namespaces(op, device_type=DEVICE_TYPE):
    """The ``torch.ops`` namespaces with a kernel of ``op`` runnable here: sslfast (native),
    sslfast_triton (Triton)."""
    return [{"native": "sslfast", "triton": "sslfast_triton"}[b] for b in fast_backends(op, device_type)]


def interpreted(backend):
    """Triton under its CPU interpreter: slow, so it gets the small shapes."""
    return backend == "triton" and DEVICE_TYPE == "cpu"


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randn(*shape, dtype=torch.float64, seed=0, scale=1.0, requires_grad=False, device=None):
    """Normal values drawn in float64 from a CPU generator seeded with ``seed`` (the same numbers
    on every device and in every dtype), scaled, then cast to ``dtype`` on ``device`` (DEVICE)."""
    t = torch.randn(*shape, generator=gen(seed), dtype=torch.float64) * scale
    return t.to(DEVICE if device is None else device, dtype).requires_grad_(requires_grad)


def loss_and_grads(fn, *inputs, backend="auto"):
    """``fn(*inputs)`` (a scalar loss) under ``backend`` and the gradients of every input that
    requires grad, on fresh leaves."""
    leaves = [x.detach().clone().requires_grad_(x.requires_grad) for x in inputs]
    with sslfast.use_backend(backend):
        loss = fn(*leaves)
    loss.backward()
    return loss.detach(), [x.grad for x in leaves if x.requires_grad]


def outputs(value):
    """The tensors of an op's result (a tensor, or a nested tuple / list of them; None dropped)."""
    return [t for t in tree_leaves(value) if isinstance(t, torch.Tensor)]


def to_float64(inputs):
    """Every floating-point tensor of a (nested) input structure in float64: the truth's inputs."""
    return tree_map(lambda v: v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v, inputs)


def outputs_and_grads(fn, inputs, grads=(), backend="auto", upstream=None, copy=False):
    """Run ``fn(inputs)`` (``inputs``: a dict) under ``backend``, with fresh leaves for the names in
    ``grads`` (``copy``: fresh copies of every tensor, for ops that write their inputs); backpropagate
    through the outputs that require grad.

    Upstream gradients: ``upstream`` (output index -> tensor, cast to each output's dtype) or, when
    None, 1 for a scalar and seeded normals otherwise. Returns (outputs, gradients of the ``grads``
    inputs in order, zeros where unused, the upstream used)."""
    fresh = tree_map(lambda v: v.detach().clone() if copy and isinstance(v, torch.Tensor) else v, inputs)
    for name in grads:
        fresh[name] = fresh[name].detach().requires_grad_(True)
    with sslfast.use_backend(backend):
        outs = outputs(fn(fresh))
    if upstream is None:
        upstream = {k: torch.ones_like(o) if o.dim() == 0 else randn(*o.shape, seed=1000 + k).to(o)
                    for k, o in enumerate(outs) if o.requires_grad}
    pairs = [(o, upstream[k].to(o)) for k, o in enumerate(outs) if k in upstream and o.requires_grad]
    leaves = [fresh[name] for name in grads]
    found = [None] * len(leaves)
    if pairs and leaves:
        found = torch.autograd.grad([o for o, _ in pairs], leaves, [u for _, u in pairs], allow_unused=True)
    gradients = [torch.zeros_like(x) if g is None else g for g, x in zip(found, leaves)]
    return [o.detach() for o in outs], gradients, upstream


def _max_error(a, b):
    """max |a - b| over the entries, NaN where both are NaN counted as equal (a float)."""
    err = torch.dist(a, b, float("inf")).item()
    if err != err:  # NaN somewhere
        both = torch.isnan(a) & torch.isnan(b)
        err = torch.dist(a.masked_fill(both, 0), b.masked_fill(both, 0), float("inf")).item()
    return err


def assert_within_eager_error(got, eager, truth, floor, what=""):
    """The tolerance rule of docs/ARCHITECTURE.md, per tensor: the error vs the float64 truth is at
    most twice eager PyTorch's error in the same dtype, plus ``floor`` relative to the truth's magnitude.
    Tensors or equally long lists of them; NaN where the truth is NaN passes, NaN elsewhere fails."""
    if isinstance(got, torch.Tensor):
        got, eager, truth = [got], [eager], [truth]
    assert len(got) == len(eager) == len(truth), (len(got), len(eager), len(truth))
    for k, (g, e, t) in enumerate(zip(got, eager, truth)):
        assert g.shape == t.shape, f"{what}[{k}]: shape {tuple(g.shape)} != {tuple(t.shape)}"
        if not t.numel():
            continue
        t = t.double()
        err, eager_err = _max_error(g.double(), t), _max_error(e.double(), t)
        scale = torch.linalg.vector_norm(t, float("inf")).item()
        if scale != scale:
            scale = torch.linalg.vector_norm(t.masked_fill(torch.isnan(t), 0), float("inf")).item()
        bound = 2 * eager_err + floor * (1 + scale)
        assert err <= bound, f"{what}[{k}]: error {err:.3e} > bound {bound:.3e} (eager error {eager_err:.3e})"


# ---------------------------------------------------------------- masking


def rand_noise(n, length, seed, ties=True):
    """MAE's [N, L] uniform noise, seeded; with ``ties``, exact ties that must break by position
    (torch's stable sort)."""
    noise = torch.rand(n, length, generator=gen(seed))
    if ties and length > 3:
        noise[:, 1] = noise[:, 3]
    return noise.to(DEVICE)


# ---------------------------------------------------------------- diffusion


def per_sample_t(batch, seed=0, high=1000):
    """Seeded per-sample timesteps [batch] in [0, high)."""
    return torch.randint(0, high, (batch,), generator=gen(seed)).to(DEVICE)


def schedule(kind="linear", **kwargs):
    """A NoiseSchedule on DEVICE with diffusers' parameters for ``kind``."""
    from sslfast import diffusion as D

    params = {"linear": (1e-4, 0.02), "scaled_linear": (0.00085, 0.012), "squaredcos_cap_v2": (1e-4, 0.02)}[kind]
    return D.NoiseSchedule(1000, kind, *params, device=DEVICE, **kwargs)


# ---------------------------------------------------------------- graphs


def random_edges(n, e, seed=0):
    return torch.randint(0, n, (2, e), generator=gen(seed)).to(DEVICE) if n else \
        torch.zeros(2, 0, dtype=torch.long, device=DEVICE)


def special_edges():
    """Isolated nodes (0 and 9), self loops, duplicate edges, a node with many in-edges."""
    src = [1, 2, 3, 3, 3, 4, 5, 5, 6, 7, 8, 8, 2, 1]
    dst = [2, 2, 3, 5, 5, 4, 1, 6, 6, 8, 7, 7, 6, 6]
    return torch.tensor([src, dst], device=DEVICE), 10


def hub_edges(n=20000, hub_degree=None, seed=3):
    """Power-law-like: node 0 receives hub_degree edges, node 1 sends hub_degree, plus noise
    (default hub_degree: 5 HUB_DEGREE + 37, a hub of many chunks)."""
    from sslfast.graph import HUB_DEGREE

    hub_degree = HUB_DEGREE * 5 + 37 if hub_degree is None else hub_degree
    g = gen(seed)
    into = torch.stack([torch.randint(0, n, (hub_degree,), generator=g), torch.zeros(hub_degree, dtype=torch.long)])
    out = torch.stack([torch.ones(hub_degree, dtype=torch.long), torch.randint(0, n, (hub_degree,), generator=g)])
    noise = torch.randint(0, n, (2, 3 * n), generator=g)
    return torch.cat([into, out, noise], dim=1).to(DEVICE), n


GRAPHS = {
    "random": lambda: (random_edges(37, 200, seed=1), 37),
    "special": special_edges,
    "no_edges": lambda: (torch.zeros(2, 0, dtype=torch.long, device=DEVICE), 5),
}
