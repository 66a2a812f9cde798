"""Contrastive losses, what is particular to them: the independent formulas of lightly / MoCo /
open_clip written here, numerics at the edges, the C++ kernels' memory and thread-count contracts,
their internal paths, backend choice and the modules. The contract every op keeps (parity with the
float64 reference, gradcheck, opcheck, compile, determinism, NaN, bad input): test_contract.py."""

import functools
import math

import pytest
import torch
import torch.nn.functional as F

import sslfast
from sslfast.reference import contrastive as reference

import helpers
from helpers import DEVICE, fast_backends, loss_and_grads, runnable_backends

BACKENDS = runnable_backends(torch.device(DEVICE).type, "nt_xent")
FAST_BACKENDS = fast_backends("nt_xent")
randn = functools.partial(helpers.randn, dtype=torch.float32, requires_grad=True)


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


# ---------------------------------------------------------------- autograd machinery, thread counts


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


# ---------------------------------------------------------------- backend choice


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
