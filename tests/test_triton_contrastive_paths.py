"""The Triton contrastive kernels' internal paths, each against the float64 reference: the
G + matmul backward (D > 256 on GPUs; forced here at small D), its row chunks, the guarded
fallback of the fixed-shift forwards, MoCo's fold and SigLIP's gradients from the forward."""

import pytest
import torch
import torch.nn.functional as F

import sslfast
from sslfast.reference import contrastive as reference

from conftest import DEVICE

pytestmark = pytest.mark.skipif(not sslfast.triton.AVAILABLE or not sslfast._dispatch.triton_can_run(
    torch.device(DEVICE).type), reason="Triton cannot run here")


def randn(*shape, dtype=torch.float64, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(DEVICE, dtype)


def grads_of(fn, inputs, backend):
    leaves = [x.detach().clone().requires_grad_(x.requires_grad) for x in inputs]
    with sslfast.use_backend(backend):
        loss = fn(*leaves)
    loss.backward()
    return [loss.detach()] + [x.grad for x in leaves if x.requires_grad]


def assert_matches_reference(fn, ref_fn, inputs, dtype):
    got = grads_of(fn, inputs, "triton")
    truth = grads_of(ref_fn, [x.detach().double().requires_grad_(x.requires_grad) for x in inputs], "reference")
    tol = dict(rtol=1e-9, atol=1e-11) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-5)
    for g, t in zip(got, truth):
        torch.testing.assert_close(g.double(), t, **tol)


def cases(n, d, seed, dtype):
    z1, z2 = randn(n, d, seed=seed).to(dtype), randn(n, d, seed=seed + 1).to(dtype)
    queue = F.normalize(randn(45, d, seed=seed + 2), dim=1).to(dtype)
    image = F.normalize(randn(n, d, seed=seed + 3), dim=1).to(dtype)
    text = F.normalize(randn(n, d, seed=seed + 4), dim=1).to(dtype)
    scale = torch.tensor(14.0, dtype=torch.float64, device=DEVICE)
    bias = torch.tensor(-3.0, dtype=torch.float64, device=DEVICE)
    return [
        ("nt_xent", lambda a, b: sslfast.nt_xent(a, b, 0.3), lambda a, b: reference.nt_xent(a, b, 0.3), [z1, z2]),
        ("dcl", lambda a, b: sslfast.nt_xent(a, b, 0.3, exclude_positive=True),
         lambda a, b: reference.nt_xent(a, b, 0.3, exclude_positive=True), [z1, z2]),
        ("info_nce", lambda a, b: sslfast.info_nce(a, b, 0.1, queue),
         lambda a, b: reference.info_nce(a, b, 0.1, queue.to(a.dtype)), [z1, z2]),
        ("moco", lambda a, b: sslfast.info_nce(a, b, 0.1, queue, in_batch_negatives=False),
         lambda a, b: reference.info_nce(a, b, 0.1, queue.to(a.dtype), in_batch_negatives=False), [z1, z2]),
        ("clip", sslfast.clip_loss, reference.clip_loss, [image, text, scale.requires_grad_(), bias.requires_grad_()]),
        ("siglip", sslfast.siglip_loss, reference.siglip_loss,
         [image, text, scale.clone().requires_grad_(), bias.clone().requires_grad_()]),
    ]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_grad_weight_path_in_row_chunks(monkeypatch, dtype):
    """The cuBLAS backward: G written per chunk of rows, then dA = G B and dB += G^T A. Forced
    at D = 40 with chunks of ~16 rows (70 rows: five chunks, the last one short)."""
    from sslfast.triton import contrastive as tk
    monkeypatch.setattr(tk, "_FUSED_MAX_D", 0)
    monkeypatch.setattr(tk, "_G_CHUNK_BYTES", 16 * 200 * (8 if dtype == torch.float64 else 4))
    for name, fn, ref_fn, inputs in cases(35, 40, 1, dtype):
        for x in inputs:
            x.requires_grad_(True)
        assert_matches_reference(fn, ref_fn, inputs, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_path(dtype):
    for name, fn, ref_fn, inputs in cases(37, 24, 11, dtype):
        for x in inputs:
            x.requires_grad_(True)
        assert_matches_reference(fn, ref_fn, inputs, dtype)


def test_fixed_shift_fallback_rows():
    """CLIP's forward shifts each row block by its largest positive. Rows and columns whose sums
    that cannot hold are redone with per-row maxima: rows far from unit norm (exp overflows past
    the shift), and a scale of 100 with a row whose positive is far below its block's."""
    ops = torch.ops.sslfast_triton
    image = F.normalize(randn(70, 16, seed=30), dim=1)
    text = F.normalize(randn(70, 16, seed=31), dim=1)
    image[3] *= 40.0  # S up to 100 * 40: the shifted exponentials overflow
    text[10] = -image[10]  # positive 100 * (-1): 200 below the block's shift
    scale = torch.tensor(100.0, dtype=torch.float64, device=DEVICE)
    bias = torch.tensor(-7.0, dtype=torch.float64, device=DEVICE)
    loss, row_lse, col_lse = ops.clip_loss_fwd(image, text, scale, bias)
    logits = scale * image @ text.T + bias
    torch.testing.assert_close(row_lse, torch.logsumexp(logits, 1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(col_lse, torch.logsumexp(logits, 0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss, reference.clip_loss(image, text, scale, bias), rtol=1e-12, atol=1e-12)
    # the fallback is what fixed them: without it those rows would be inf / underflowed
    from sslfast.triton import contrastive as tk
    row_part, col_part, _, row_frame, shifts = tk._shifted_forward(tk._CLIP, image, text, scale, bias, 0, False)
    _, row_flags = tk._combine(row_part, row_frame, None, shifts)
    _, col_flags = tk._combine(None, None, col_part, shifts)
    assert row_flags[3] == 1 and row_flags[10] == 1 and col_flags.sum() >= 1
    assert row_flags.sum() < 70  # the others kept the one-exponential result


@pytest.mark.parametrize("temperature", [0.5, 0.02])
def test_nt_xent_shift_and_online_paths(temperature):
    """1/T = 2: the upper-triangle fixed-shift forward; 1/T = 50: the per-row online forward."""
    z = F.normalize(randn(70, 12, seed=40), dim=1)
    loss, lse = torch.ops.sslfast_triton.nt_xent_fwd(z, temperature, False)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    torch.testing.assert_close(lse, torch.logsumexp(logits, 1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("fused", [True, False])
def test_moco_fold_on_triton(monkeypatch, dtype, fused):
    """info_nce_fwd(fold_queue_grad=True): folded = P_queue @ queue (in the kernel when D <= 256,
    else P through the G path), the loss and lse as without folding, the backward from it equal to
    the recomputing one."""
    from sslfast.triton import contrastive as tk
    if not fused:
        monkeypatch.setattr(tk, "_FUSED_MAX_D", 0)
    ops = torch.ops.sslfast_triton
    q = F.normalize(randn(37, 24, seed=60), dim=1).to(dtype)
    k = F.normalize(randn(37, 24, seed=61), dim=1).to(dtype)
    queue = F.normalize(randn(100, 24, seed=62), dim=1).to(dtype)
    loss, lse, empty = ops.info_nce_fwd(q, k, queue, 0.05, False, False)
    loss_f, lse_f, folded = ops.info_nce_fwd(q, k, queue, 0.05, False, True)
    assert empty.numel() == 0 and folded.shape == q.shape
    assert torch.equal(loss, loss_f) and torch.equal(lse, lse_f)
    tol = dict(rtol=1e-11, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    probs = torch.exp(q.double() @ queue.double().T / 0.05 - lse.double()[:, None])
    torch.testing.assert_close(folded.double(), probs @ queue.double(), **tol)
    g = torch.tensor(1.3, dtype=dtype, device=DEVICE)
    dq, dk = ops.info_nce_bwd(g, q, k, queue, lse, empty, 0.05, False)
    dq_f, dk_f = ops.info_nce_bwd(g, q, k, queue, lse, folded, 0.05, False)
    torch.testing.assert_close(dq_f, dq, **tol)
    torch.testing.assert_close(dk_f, dk, **tol)
    with pytest.raises(RuntimeError, match="fold_queue_grad needs a queue"):
        ops.info_nce_fwd(q, k, queue, 0.05, True, True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_siglip_gradients_from_the_forward(dtype):
    ops = torch.ops.sslfast_triton
    image = F.normalize(randn(70, 20, seed=70), dim=1).to(dtype)
    text = F.normalize(randn(70, 20, seed=71), dim=1).to(dtype)
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
