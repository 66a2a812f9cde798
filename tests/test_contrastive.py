"""Contrastive losses: every runnable backend vs the float64 reference, vs independent formulas
of lightly / MoCo / open_clip written here, gradients, opcheck, compile, determinism, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

import sslfast
from sslfast.reference import contrastive as reference

from conftest import DEVICE, runnable_backends

BACKENDS = runnable_backends(torch.device(DEVICE).type, "nt_xent")
FAST_BACKENDS = [b for b in BACKENDS if b != "reference"]
# The Triton interpreter is slow on CPU: it gets the smaller shapes.
SHAPES = [(1, 1), (3, 7), (129, 130)]
SMALL_SHAPES = [(1, 1), (3, 7), (65, 130)]  # 65 x 130: several 32-row blocks, two D chunks
DTYPES = ([torch.float64, torch.float32, torch.bfloat16, torch.float16] if DEVICE == "cpu"
          else [torch.float32, torch.bfloat16, torch.float16])


def shapes_for(backend):
    return SMALL_SHAPES if (backend == "triton" and DEVICE == "cpu") else SHAPES


def randn(*shape, dtype=torch.float32, scale=1.0, requires_grad=True, seed=None):
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    t = torch.randn(*shape, generator=generator, dtype=torch.float64) * scale
    return t.to(DEVICE, dtype).requires_grad_(requires_grad)


def loss_and_grads(fn, *inputs, backend="auto"):
    """Loss and the gradients of every input that requires grad, under ``backend``."""
    leaves = [x.detach().clone().requires_grad_(x.requires_grad) for x in inputs]
    with sslfast.use_backend(backend):
        loss = fn(*leaves)
    loss.backward()
    return loss.detach(), [x.grad for x in leaves if x.requires_grad]


def assert_within_eager_error(got, eager, truth, floor):
    """DESIGN.md tolerance rule: error vs float64 <= 2x eager's error in the same dtype + floor."""
    for g, e, t in zip(got, eager, truth):
        t = t.double()
        err = (g.double() - t).abs().max().item()
        eager_err = (e.double() - t).abs().max().item()
        bound = 2 * eager_err + floor * (1 + t.abs().max().item())
        assert err <= bound, f"error {err:.3e} > bound {bound:.3e} (eager error {eager_err:.3e})"


def check_against_reference(public_fn, reference_fn, inputs, backend, dtype):
    got_loss, got_grads = loss_and_grads(public_fn, *inputs, backend=backend)
    eager_loss, eager_grads = loss_and_grads(reference_fn, *inputs)
    truth_inputs = [x.detach().double().requires_grad_(x.requires_grad) for x in inputs]
    truth_loss, truth_grads = loss_and_grads(reference_fn, *truth_inputs)
    floor = {torch.float64: 1e-12, torch.float32: 1e-5}.get(dtype, 2e-2)
    assert got_loss.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert got_loss.dim() == 0
    assert_within_eager_error([got_loss] + got_grads, [eager_loss] + eager_grads,
                              [truth_loss] + truth_grads, floor)


# ---------------------------------------------------------------- parity with the reference


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("exclude_positive", [False, True])
@pytest.mark.parametrize("temperature", [0.5, 0.01])
def test_nt_xent_matches_reference(backend, dtype, exclude_positive, temperature):
    for n, d in shapes_for(backend):
        if n == 1 and exclude_positive:
            continue  # DCL with one pair has an empty denominator
        z1, z2 = randn(n, d, dtype=dtype, seed=1), randn(n, d, dtype=dtype, seed=2)
        check_against_reference(
            lambda a, b: sslfast.nt_xent(a, b, temperature, exclude_positive=exclude_positive),
            lambda a, b: reference.nt_xent(a, b, temperature, exclude_positive=exclude_positive),
            [z1, z2], backend, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("in_batch", [True, False])
@pytest.mark.parametrize("queue_rows", [0, 50])
def test_info_nce_matches_reference(backend, dtype, in_batch, queue_rows):
    for n, d in shapes_for(backend):
        query, key = randn(n, d, dtype=dtype, seed=3), randn(n, d, dtype=dtype, seed=4)
        queue = randn(queue_rows, d, dtype=dtype, requires_grad=False, seed=5) if queue_rows else None
        check_against_reference(
            lambda q, k: sslfast.info_nce(q, k, 0.07, queue, in_batch_negatives=in_batch),
            lambda q, k: reference.info_nce(q, k, 0.07, None if queue is None else queue.to(q.dtype),
                                            in_batch_negatives=in_batch),
            [query, key], backend, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_clip_loss_matches_reference(backend, dtype, with_bias):
    for n, d in shapes_for(backend):
        image = randn(n, d, dtype=dtype, scale=d ** -0.5, seed=6)
        text = randn(n, d, dtype=dtype, scale=d ** -0.5, seed=7)
        scale = torch.tensor(30.0, device=DEVICE, requires_grad=True)
        inputs = [image, text, scale]
        if with_bias:
            inputs.append(torch.tensor(-2.0, device=DEVICE, requires_grad=True))
        check_against_reference(sslfast.clip_loss, reference.clip_loss, inputs, backend, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_siglip_loss_matches_reference(backend, dtype):
    for n, d in shapes_for(backend):
        image = randn(n, d, dtype=dtype, scale=d ** -0.5, seed=8)
        text = randn(n, d, dtype=dtype, scale=d ** -0.5, seed=9)
        scale = torch.tensor(10.0, device=DEVICE, requires_grad=True)
        bias = torch.tensor(-10.0, device=DEVICE, requires_grad=True)
        check_against_reference(sslfast.siglip_loss, reference.siglip_loss, [image, text, scale, bias], backend, dtype)


# ---------------------------------------------------------------- independent formulas


def lightly_ntxent(out0, out1, temperature):
    """lightly.loss.NTXentLoss (no memory bank), as lightly writes it."""
    out0, out1 = F.normalize(out0, dim=1), F.normalize(out1, dim=1)
    n = out0.shape[0]
    diag = torch.eye(n, dtype=torch.bool, device=out0.device)
    logits_00 = (out0 @ out0.T / temperature)[~diag].view(n, -1)
    logits_11 = (out1 @ out1.T / temperature)[~diag].view(n, -1)
    logits_01, logits_10 = out0 @ out1.T / temperature, out1 @ out0.T / temperature
    logits = torch.cat([torch.cat([logits_01, logits_00], 1), torch.cat([logits_10, logits_11], 1)], 0)
    labels = torch.arange(n, device=out0.device).repeat(2)
    return F.cross_entropy(logits, labels)


def moco_v2(q, k, queue, temperature):
    """MoCo v2: logits [l_pos, l_neg] / T with label 0 (queue rows are normalized keys)."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    l_pos = torch.einsum("nc,nc->n", q, k)[:, None]
    l_neg = torch.einsum("nc,kc->nk", q, queue)
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def simcse(q, k, temperature):
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    return F.cross_entropy(q @ k.T / temperature, torch.arange(q.shape[0], device=q.device))


def open_clip_loss(image, text, logit_scale):
    logits_per_image = logit_scale * image @ text.T
    logits_per_text = logit_scale * text @ image.T
    labels = torch.arange(image.shape[0], device=image.device)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def open_clip_siglip(image, text, logit_scale, logit_bias):
    logits = logit_scale * image @ text.T + logit_bias
    n = image.shape[0]
    eye = torch.eye(n, device=image.device, dtype=image.dtype)
    labels = 2 * eye - 1
    return -F.logsigmoid(labels * logits).sum() / n


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_independent_formulas(backend):
    n, d = (9, 12) if backend == "triton" else (65, 40)
    f64 = dict(dtype=torch.float64)
    z1, z2 = randn(n, d, **f64, seed=10), randn(n, d, **f64, seed=11)
    queue = F.normalize(randn(70, d, **f64, requires_grad=False, seed=12), dim=1)
    image, text = randn(n, d, **f64, scale=0.2, seed=13), randn(n, d, **f64, scale=0.2, seed=14)
    scale = torch.tensor(20.0, dtype=torch.float64, device=DEVICE, requires_grad=True)
    bias = torch.tensor(-5.0, dtype=torch.float64, device=DEVICE, requires_grad=True)
    cases = [
        (lambda a, b: sslfast.nt_xent(a, b, 0.2), lambda a, b: lightly_ntxent(a, b, 0.2), [z1, z2]),
        (lambda a, b: sslfast.info_nce(a, b, 0.07, queue, in_batch_negatives=False),
         lambda a, b: moco_v2(a, b, queue, 0.07), [z1, z2]),
        (lambda a, b: sslfast.info_nce(a, b, 0.05), lambda a, b: simcse(a, b, 0.05), [z1, z2]),
        (sslfast.clip_loss, open_clip_loss, [image, text, scale]),
        (sslfast.siglip_loss, open_clip_siglip, [image, text, scale, bias]),
    ]
    for ours, theirs, inputs in cases:
        loss, grads = loss_and_grads(ours, *inputs, backend=backend)
        expected_loss, expected_grads = loss_and_grads(theirs, *inputs)
        torch.testing.assert_close(loss, expected_loss, rtol=1e-10, atol=1e-10)
        for g, e in zip(grads, expected_grads):
            torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-10)


# ---------------------------------------------------------------- autograd machinery


def gradcheck_cases():
    f64 = dict(dtype=torch.float64)
    z1, z2 = randn(3, 5, **f64, seed=20), randn(3, 5, **f64, seed=21)
    queue = randn(4, 5, **f64, requires_grad=False, seed=22)
    scale = torch.tensor(3.0, dtype=torch.float64, device=DEVICE, requires_grad=True)
    bias = torch.tensor(-1.0, dtype=torch.float64, device=DEVICE, requires_grad=True)
    return {
        "nt_xent": (lambda a, b: sslfast.nt_xent(a, b, 0.3), (z1, z2)),
        "nt_xent_dcl": (lambda a, b: sslfast.nt_xent(a, b, 0.3, exclude_positive=True), (z1, z2)),
        "info_nce": (lambda a, b: sslfast.info_nce(a, b, 0.2, queue), (z1, z2)),
        "info_nce_moco": (lambda a, b: sslfast.info_nce(a, b, 0.2, queue, in_batch_negatives=False), (z1, z2)),
        "clip": (sslfast.clip_loss, (z1, z2, scale, bias)),
        "siglip": (sslfast.siglip_loss, (z1, z2, scale, bias)),
    }


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("case", list(gradcheck_cases().keys()))
def test_gradcheck(backend, case):
    fn, inputs = gradcheck_cases()[case]
    with sslfast.use_backend(backend):
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7)


def core_op_cases(ops, fold=False):
    """(op, args) for every core op, inputs already normalized as the public functions pass them.
    ``fold``: also InfoNCE's MoCo folding (the C++ CPU kernel only)."""
    z = F.normalize(randn(6, 5, seed=30).detach(), dim=1).requires_grad_()
    q = F.normalize(randn(3, 5, seed=31).detach(), dim=1).requires_grad_()
    k = F.normalize(randn(3, 5, seed=32).detach(), dim=1).requires_grad_()
    queue = F.normalize(randn(4, 5, requires_grad=False, seed=33), dim=1)
    scale = torch.tensor(4.0, device=DEVICE, requires_grad=True)
    bias = torch.tensor(-1.0, device=DEVICE, requires_grad=True)
    g = torch.tensor(1.5, device=DEVICE)
    _, lse = ops.nt_xent_fwd(z, 0.5, False)
    _, q_lse, empty = ops.info_nce_fwd(q, k, queue, 0.1, True, False)
    _, row_lse, col_lse = ops.clip_loss_fwd(q, k, scale, bias)
    folding = []
    if fold:
        _, m_lse, folded = ops.info_nce_fwd(q, k, queue, 0.1, False, True)
        folding = [(ops.info_nce_fwd, (q, k, queue, 0.1, False, True)),
                   (ops.info_nce_bwd, (g, q.detach(), k.detach(), queue, m_lse.detach(), folded.detach(), 0.1,
                                       False)),
                   (ops.siglip_loss_fwd, (q, k, scale, bias, True))]
    return folding + [
        (ops.nt_xent_fwd, (z, 0.5, False)),
        (ops.nt_xent_fwd, (z, 0.5, True)),
        (ops.nt_xent_bwd, (g, z.detach(), lse.detach(), 0.5, False)),
        (ops.info_nce_fwd, (q, k, queue, 0.1, True, False)),
        (ops.info_nce_fwd, (q, k, None, 0.1, True, False)),
        (ops.info_nce_bwd, (g, q.detach(), k.detach(), queue, q_lse.detach(), empty.detach(), 0.1, True)),
        (ops.clip_loss_fwd, (q, k, scale, bias)),
        (ops.clip_loss_fwd, (q, k, scale, None)),
        (ops.clip_loss_bwd, (g, q.detach(), k.detach(), scale.detach(), bias.detach(),
                             row_lse.detach(), col_lse.detach())),
        (ops.siglip_loss_fwd, (q, k, scale, bias, False)),
        (ops.siglip_loss_bwd, (g, q.detach(), k.detach(), scale.detach(), bias.detach())),
    ]


def namespaces():
    names = []
    if "native" in BACKENDS:
        names.append("sslfast")
    if "triton" in BACKENDS:
        names.append("sslfast_triton")
    return names


@pytest.mark.parametrize("namespace", namespaces())
def test_opcheck(namespace):
    for op, args in core_op_cases(getattr(torch.ops, namespace), fold=namespace == "sslfast"):
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_compile_fullgraph(backend):
    torch._dynamo.reset()
    z1, z2 = randn(7, 6, seed=40), randn(7, 6, seed=41)
    queue = randn(5, 6, requires_grad=False, seed=42)
    scale = torch.tensor(8.0, device=DEVICE, requires_grad=True)
    bias = torch.tensor(-2.0, device=DEVICE, requires_grad=True)

    def all_losses(a, b, s, c):
        return (sslfast.nt_xent(a, b, 0.5) + sslfast.info_nce(a, b, 0.1, queue)
                + sslfast.clip_loss(a, b, s, c) + sslfast.siglip_loss(a, b, s, c))

    with sslfast.use_backend(backend):
        expected, expected_grads = loss_and_grads(all_losses, z1, z2, scale, bias, backend=backend)
        compiled = torch.compile(all_losses, fullgraph=True)
        got, got_grads = loss_and_grads(compiled, z1, z2, scale, bias, backend=backend)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    for g, e in zip(got_grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_deterministic(backend):
    n, d = (40, 24) if backend == "triton" else (700, 64)
    z1, z2 = randn(n, d, seed=50), randn(n, d, seed=51)
    scale = torch.tensor(10.0, device=DEVICE, requires_grad=True)
    bias = torch.tensor(-3.0, device=DEVICE, requires_grad=True)
    for fn, inputs in [(lambda a, b: sslfast.nt_xent(a, b, 0.1), (z1, z2)),
                       (lambda a, b: sslfast.info_nce(a, b, 0.1, b[: n // 2].detach()), (z1, z2)),
                       (sslfast.clip_loss, (z1, z2, scale, bias)),
                       (sslfast.siglip_loss, (z1, z2, scale, bias))]:
        first = loss_and_grads(fn, *inputs, backend=backend)
        second = loss_and_grads(fn, *inputs, backend=backend)
        assert torch.equal(first[0], second[0])
        assert all(torch.equal(a, b) for a, b in zip(first[1], second[1]))


@pytest.mark.skipif(DEVICE != "cpu" or "native" not in BACKENDS, reason="CPU thread-count check")
def test_native_cpu_independent_of_thread_count():
    z1, z2 = randn(600, 48, seed=60), randn(600, 48, seed=61)
    previous = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(loss_and_grads(lambda a, b: sslfast.nt_xent(a, b, 0.2), z1, z2, backend="native"))
    finally:
        torch.set_num_threads(previous)
    for loss, grads in results[1:]:
        assert torch.equal(loss, results[0][0])
        assert all(torch.equal(a, b) for a, b in zip(grads, results[0][1]))


# ---------------------------------------------------------------- numerics at the edges


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_large_logits_do_not_overflow(backend):
    # temperature 0.01 on normalized rows: logits up to 100, exp(100) overflows float32
    z1 = randn(33, 16, seed=70)
    z2 = (z1.detach() + 0.01 * randn(33, 16, requires_grad=False, seed=71)).requires_grad_()
    loss, grads = loss_and_grads(lambda a, b: sslfast.nt_xent(a, b, 0.01), z1, z2, backend=backend)
    truth, truth_grads = loss_and_grads(lambda a, b: reference.nt_xent(a, b, 0.01),
                                        z1.double(), z2.double())
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)
    torch.testing.assert_close(loss.double(), truth, rtol=1e-4, atol=1e-4)
    scale = torch.tensor(1000.0, device=DEVICE)
    loss = sslfast.clip_loss(z1.detach(), z2.detach(), scale)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_nan_row_gives_nan_loss(backend):
    z1, z2 = randn(5, 4, requires_grad=False, seed=80), randn(5, 4, requires_grad=False, seed=81)
    z1[2, 1] = float("nan")
    scale, bias = torch.tensor(5.0, device=DEVICE), torch.tensor(-1.0, device=DEVICE)
    with sslfast.use_backend(backend):
        assert torch.isnan(sslfast.nt_xent(z1, z2))
        assert torch.isnan(sslfast.info_nce(z1, z2, 0.1, z2))
        assert torch.isnan(sslfast.clip_loss(z1, z2, scale, bias))
        assert torch.isnan(sslfast.siglip_loss(z1, z2, scale, bias))


@pytest.mark.skipif(DEVICE != "cpu" or "native" not in BACKENDS, reason="CPU allocation profile")
def test_native_never_builds_the_logits():
    # 2N = 4096 rows: the N x N float32 logits alone would be 64 MiB.
    z1, z2 = randn(2048, 64, seed=90), randn(2048, 64, seed=91)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        with sslfast.use_backend("native"):
            sslfast.nt_xent(z1, z2, 0.5).backward()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    assert 0 < peak < 8 * 2 ** 20, f"peak extra memory {peak / 2**20:.1f} MiB"


# ---------------------------------------------------------------- bad input and backend choice


def test_bad_input_names_the_argument():
    z = torch.randn(4, 8)
    scale = torch.tensor(1.0)
    with pytest.raises(ValueError, match="z2"):
        sslfast.nt_xent(z, torch.randn(5, 8))
    with pytest.raises(ValueError, match="z2"):
        sslfast.nt_xent(z, torch.randn(4, 9))
    with pytest.raises(ValueError, match="z1.*2-D"):
        sslfast.nt_xent(torch.randn(4), z)
    with pytest.raises(TypeError, match="z1.*floating"):
        sslfast.nt_xent(torch.ones(4, 8, dtype=torch.long), z)
    with pytest.raises(ValueError, match="temperature"):
        sslfast.nt_xent(z, z, 0.0)
    with pytest.raises(ValueError, match="temperature"):
        sslfast.nt_xent(z, z, float("nan"))
    with pytest.raises(ValueError, match="temperature"):
        sslfast.info_nce(z, z, -1.0)
    with pytest.raises(ValueError, match="z1.*at least one row"):
        sslfast.nt_xent(torch.randn(0, 8), torch.randn(0, 8))
    with pytest.raises(ValueError, match="queue.*D = 8"):
        sslfast.info_nce(z, z, 0.1, torch.randn(10, 7))
    with pytest.raises(ValueError, match="key"):
        sslfast.info_nce(z, torch.randn(3, 8))
    with pytest.raises(ValueError, match="text"):
        sslfast.clip_loss(z, torch.randn(5, 8), scale)
    with pytest.raises(ValueError, match="logit_scale"):
        sslfast.clip_loss(z, z, torch.ones(2))
    with pytest.raises(TypeError, match="logit_bias"):
        sslfast.siglip_loss(z, z, scale, None)
    with pytest.raises(TypeError, match="z2.*dtype"):
        sslfast.nt_xent(z, z.double())
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="z2.*cuda"):
            sslfast.nt_xent(z, z.cuda())


def test_core_ops_reject_bad_input_too():
    if "native" not in BACKENDS:
        pytest.skip("native backend not built")
    with pytest.raises(RuntimeError, match="z must hold 2N rows"):
        torch.ops.sslfast.nt_xent_fwd(torch.randn(3, 4), 0.5, False)
    with pytest.raises(RuntimeError, match="lse must have shape"):
        torch.ops.sslfast.nt_xent_bwd(torch.tensor(1.0), torch.randn(4, 4), torch.randn(3), 0.5, False)
    with pytest.raises(RuntimeError, match="image must be floating point"):
        torch.ops.sslfast.clip_loss_fwd(torch.ones(4, 4, dtype=torch.long), torch.randn(4, 4), torch.tensor(1.0), None)


def test_backend_choice():
    z = torch.randn(4, 8)
    with pytest.raises(ValueError, match="backend must be one of"):
        sslfast.set_backend("cuda-magic")
    with sslfast.use_backend("reference"):
        assert sslfast.get_backend() == "reference"
        expected = reference.nt_xent(z, z, 0.5)
        assert torch.equal(sslfast.nt_xent(z, z, 0.5), expected)
    assert sslfast.get_backend() == "auto"


def test_forced_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with sslfast.use_backend("triton"), pytest.raises(RuntimeError, match="backend 'triton' cannot run"):
        sslfast.nt_xent(torch.randn(4, 8), torch.randn(4, 8))


def test_half_inputs_on_native_cpu():
    if "native" not in BACKENDS or DEVICE != "cpu":
        pytest.skip("native CPU backend")
    z1, z2 = randn(20, 16, dtype=torch.bfloat16, seed=95), randn(20, 16, dtype=torch.bfloat16, seed=96)
    loss, grads = loss_and_grads(lambda a, b: sslfast.nt_xent(a, b), z1, z2, backend="native")
    truth, _ = loss_and_grads(lambda a, b: reference.nt_xent(a, b), z1.double(), z2.double())
    assert loss.dtype == torch.float32 and grads[0].dtype == torch.bfloat16
    torch.testing.assert_close(loss.double(), truth, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- modules


def test_modules_match_functions():
    z1, z2 = randn(6, 5, seed=100), randn(6, 5, seed=101)
    assert torch.equal(sslfast.nn.NTXentLoss(0.3)(z1, z2), sslfast.nt_xent(z1, z2, 0.3))
    assert torch.equal(sslfast.nn.NTXentLoss(0.3, exclude_positive=True)(z1, z2),
                       sslfast.nt_xent(z1, z2, 0.3, exclude_positive=True))
    assert torch.equal(sslfast.nn.InfoNCELoss(0.2)(z1, z2, z2[:3]), sslfast.info_nce(z1, z2, 0.2, z2[:3]))
    clip = sslfast.nn.ClipLoss(learn_scale=True).to(DEVICE)
    loss = clip(z1, z2)
    loss.backward()
    assert clip.log_scale.grad is not None
    torch.testing.assert_close(loss, sslfast.clip_loss(z1, z2, torch.tensor(1 / 0.07, device=DEVICE)))
    siglip = sslfast.nn.SigLipLoss().to(DEVICE)
    siglip(z1, z2).backward()
    assert siglip.log_scale.grad is not None and siglip.bias.grad is not None
    assert math.isclose(siglip.log_scale.exp().item(), 10.0, rel_tol=1e-6)
    with pytest.raises(TypeError, match="logit_scale"):
        sslfast.nn.ClipLoss()(z1, z2)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_sanitize_contrastive_kernels_once(backend):
    """Every contrastive kernel once at ragged sizes (partial tiles, D not a multiple of any
    block): the subset `make gpu-check` runs under compute-sanitizer (-k sanitize)."""
    z1, z2 = randn(37, 19, seed=110), randn(37, 19, seed=111)
    queue = randn(23, 19, requires_grad=False, seed=112)
    scale = torch.tensor(7.0, device=DEVICE, requires_grad=True)
    bias = torch.tensor(-1.0, device=DEVICE, requires_grad=True)
    with sslfast.use_backend(backend):
        losses = [sslfast.nt_xent(z1, z2, 0.2), sslfast.nt_xent(z1, z2, 0.2, exclude_positive=True),
                  sslfast.info_nce(z1, z2, 0.1, queue), sslfast.info_nce(z1, z2, 0.1, queue, in_batch_negatives=False),
                  sslfast.clip_loss(z1, z2, scale, bias), sslfast.clip_loss(z1, z2, scale),
                  sslfast.siglip_loss(z1, z2, scale, bias)]
        torch.stack(losses).sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in (z1, z2, scale, bias))


@pytest.mark.skipif(not sslfast.triton.AVAILABLE, reason="triton not installed")
def test_gpu_tile_configs_keep_fp64_apart(monkeypatch):
    """On GPUs fp64 has no tl.dot: its launches must get only the small fp64 tiles, and no other
    dtype may be handed those (the config lists the autotuner prunes per launch)."""
    tk = sslfast.triton.contrastive
    monkeypatch.setattr(tk, "_INTERPRETED", False)
    for kind in tk._KINDS:
        configs = tk._tile_configs(kind)
        fp64 = tk._prune(configs, {}, ACC_DTYPE=tk.tl.float64, D_PAD=128)
        assert [c.kwargs["D_CLASS"] for c in fp64] == [0]
        assert fp64[0].kwargs["BLOCK_M"] * fp64[0].kwargs["BLOCK_N"] <= 32 * 32
        for d_pad in (64, 128, 256, 512):
            kept = tk._prune(configs, {}, ACC_DTYPE=tk.tl.float32, D_PAD=d_pad)
            assert kept and all(c.kwargs["D_CLASS"] == (128 if d_pad <= 128 else 256) for c in kept)


@pytest.mark.skipif("native" not in BACKENDS, reason="native CPU backend")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_moco_folded_backward_matches_the_recompute(dtype):
    """info_nce_fwd(fold_queue_grad=True) (what sslfast.info_nce asks of the C++ kernel for MoCo
    when the query needs a gradient): the same loss and lse to the bit, and the backward from the
    folded sum equals the one that recomputes the queue tiles. 700 queue rows: three column blocks,
    so the running maximum moves and the folded sum is rescaled."""
    ops = torch.ops.sslfast
    q = F.normalize(randn(37, 24, dtype=dtype, requires_grad=False, seed=60), dim=1)
    k = F.normalize(randn(37, 24, dtype=dtype, requires_grad=False, seed=61), dim=1)
    queue = F.normalize(randn(700, 24, dtype=dtype, requires_grad=False, seed=62), dim=1)
    loss, lse, empty = ops.info_nce_fwd(q, k, queue, 0.05, False, False)
    loss_f, lse_f, folded = ops.info_nce_fwd(q, k, queue, 0.05, False, True)
    assert empty.numel() == 0 and folded.shape == q.shape
    assert torch.equal(loss, loss_f) and torch.equal(lse, lse_f)
    probs = torch.exp(q.double() @ queue.double().T / 0.05 - lse.double()[:, None])  # P, queue columns
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(folded.double(), probs @ queue.double(), **tol)
    g = torch.tensor(1.3, dtype=dtype, device=DEVICE)
    dq, dk = ops.info_nce_bwd(g, q, k, queue, lse, empty, 0.05, False)
    dq_f, dk_f = ops.info_nce_bwd(g, q, k, queue, lse_f, folded, 0.05, False)
    torch.testing.assert_close(dq_f, dq, **tol)
    assert torch.equal(dk_f, dk)
    # the public function folds exactly when the query needs a gradient
    with sslfast.use_backend("native"):
        qg, kg = q.clone().requires_grad_(), k.clone().requires_grad_()
        sslfast.info_nce(qg, kg, 0.05, queue, normalize=False, in_batch_negatives=False).backward(g)
    torch.testing.assert_close(qg.grad, dq_f, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="fold_queue_grad needs a queue"):
        ops.info_nce_fwd(q, k, queue, 0.05, True, True)
    with pytest.raises(RuntimeError, match="folded must have the shape"):
        ops.info_nce_bwd(g, q, k, queue, lse, folded[:3], 0.05, False)


@pytest.mark.skipif("native" not in BACKENDS, reason="native CPU backend")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_siglip_gradients_from_the_forward_match_the_backward_op(dtype):
    """siglip_loss_fwd(with_grads=True): the gradients for an upstream 1 equal siglip_loss_bwd's to
    the bit (same tiles, same weights), the loss equals the plain forward's to rounding, and the
    public function's gradients (which take this path) are those, scaled by the upstream gradient.
    n = 300: several row and column blocks, so the per-tile loss slots and the diagonal move."""
    ops = torch.ops.sslfast
    image = F.normalize(randn(300, 20, dtype=dtype, requires_grad=False, seed=70), dim=1)
    text = F.normalize(randn(300, 20, dtype=dtype, requires_grad=False, seed=71), dim=1)
    scale = torch.tensor(10.0, dtype=dtype, device=DEVICE)
    bias = torch.tensor(-10.0, dtype=dtype, device=DEVICE)
    loss, *none = ops.siglip_loss_fwd(image, text, scale, bias, False)
    loss_g, *grads = ops.siglip_loss_fwd(image, text, scale, bias, True)
    assert all(t.numel() == 0 for t in none)
    tol = dict(rtol=1e-12, atol=0) if dtype == torch.float64 else dict(rtol=1e-5, atol=0)
    torch.testing.assert_close(loss_g, loss, **tol)
    expected = ops.siglip_loss_bwd(torch.tensor(1.0, dtype=dtype), image, text, scale, bias)
    for got, want in zip(grads, expected):
        assert torch.equal(got, want)
    upstream = 0.75
    leaves = [t.clone().requires_grad_() for t in (image, text, scale, bias)]
    with sslfast.use_backend("native"):
        (upstream * sslfast.siglip_loss(*leaves)).backward()
    for leaf, g in zip(leaves, grads):
        torch.testing.assert_close(leaf.grad, upstream * g, rtol=0, atol=0)
