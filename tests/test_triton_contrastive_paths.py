"""The Triton contrastive kernels' internal paths, each against the float64 reference: the
G + matmul backward (D > 256 on GPUs; forced here at small D), its row chunks, the guarded
fallback of the fixed-shift forwards, MoCo's fold and SigLIP's gradients from the forward."""

import pytest
import torch
import torch.nn.functional as F

import sslfast
from sslfast.reference import contrastive as reference

from helpers import DEVICE, loss_and_grads, randn

pytestmark = pytest.mark.skipif(not sslfast.triton.AVAILABLE or not sslfast._dispatch.triton_can_run(
    torch.device(DEVICE).type), reason="Triton cannot run here")


def grads_of(fn, inputs, backend):
    loss, grads = loss_and_grads(fn, *inputs, backend=backend)
    return [loss] + grads


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


# ------------------------------------------------------------------------------------- SupCon

def supcon_labels(n, kind, seed):
    """Labels of one test batch: several classes with a class of one member (an anchor without
    positives), or every row in one class (pairwise: anchors without negatives)."""
    if kind == "same":
        return torch.full((n,), 7, dtype=torch.int64, device=DEVICE)
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g) * 1000 - 2000  # negative and large values too
    labels[5] = 123456789  # the only member of its class
    return labels.to(DEVICE)


def supcon_case(pairwise, labels, temperature=0.2, normalize=True):
    return (lambda f: sslfast.supcon(f, labels, temperature, normalize=normalize, pairwise=pairwise),
            lambda f: reference.supcon(f, labels, temperature, normalize=normalize, pairwise=pairwise))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("pairwise", [False, True])
def test_supcon_paths(monkeypatch, dtype, fused, pairwise):
    """Both backward paths: fused (one launch, W = G + G^T) and G + matmul in row chunks (forced
    at D = 40, ~16-row chunks). Several classes with a singleton, then one class for all rows."""
    from sslfast.triton import contrastive as tk
    if not fused:
        monkeypatch.setattr(tk, "_FUSED_MAX_D", 0)
        monkeypatch.setattr(tk, "_G_CHUNK_BYTES", 16 * 70 * (8 if dtype == torch.float64 else 4))
    features = randn(70, 40 if not fused else 24, seed=80).to(dtype).requires_grad_()
    for kind in ("classes", "same"):
        fn, ref_fn = supcon_case(pairwise, supcon_labels(70, kind, 81))
        assert_matches_reference(fn, ref_fn, [features], dtype)


@pytest.mark.parametrize("pairwise", [False, True])
def test_supcon_fallback_and_online_paths(pairwise):
    """T = 0.2 with one row far from unit norm: the self-score shift cannot hold its block's rows
    (the combine flags them, the fallback redoes them); T = 0.02: 2/T past the shift's range, the
    per-row online forward. Every row's lse and the loss against the reference."""
    labels = supcon_labels(70, "classes", 82)
    features = F.normalize(randn(70, 12, seed=83), dim=1)
    # s_ii = 36 / T: its row block's shift, far above that block's sums. In the last row block:
    # the triangle's column parts of an earlier block would reach every row.
    features[67] *= 6.0
    for temperature, normalize in ((0.2, False), (0.02, True)):
        z = F.normalize(features, dim=1) if normalize else features
        loss, lse, stats = torch.ops.sslfast_triton.supcon_fwd(z, labels, temperature, pairwise)
        logits = z @ z.T / temperature
        masked = labels[:, None] == labels[None, :] if pairwise else torch.eye(70, dtype=torch.bool, device=DEVICE)
        torch.testing.assert_close(lse, torch.logsumexp(logits.masked_fill(masked, float("-inf")), 1),
                                   rtol=1e-12, atol=1e-12)
        want = reference.supcon(z, labels, temperature, normalize=False, pairwise=pairwise)
        # scores up to 180: summation order alone moves the loss by ~1e-12 relative
        torch.testing.assert_close(loss, want, rtol=1e-10, atol=1e-12)
    from sslfast.triton import contrastive as tk
    classes, _ = tk._label_classes(labels, features)
    aux = tuple(features.new_zeros((slots, 70)) for slots in tk._part_slots(features, 70))
    row_part, col_part, _, row_frame, shifts = tk._shifted_forward(
        tk._SUPCON, features, features, tk._device_scalar(5.0, features), None, 0, False, labels=classes,
        negatives_only=pairwise, aux=aux)
    _, flags = tk._combine(row_part, row_frame, col_part, shifts)
    # the fallback did the work, and only there: the other blocks' shift (1/T) holds their rows
    assert flags[64:].tolist() == [1] * 6 and flags[:64].sum() == 0


def test_supcon_row_stats_match_the_cpp_kernels():
    """The Triton ops' outputs are the C++ contract: (loss, lse, row_stats) and the gradient equal
    sslfast::supcon_fwd / supcon_bwd (CPU) in float64, int32 labels included."""
    if not sslfast._native.AVAILABLE:
        pytest.skip("no C++ extension")
    z = F.normalize(randn(45, 10, seed=84), dim=1)
    g = torch.tensor(-0.7, dtype=torch.float64, device=DEVICE)
    for labels in (supcon_labels(45, "classes", 85), supcon_labels(45, "classes", 85).int(),
                   supcon_labels(45, "same", 0)):
        for pairwise in (False, True):
            got = torch.ops.sslfast_triton.supcon_fwd(z, labels, 0.3, pairwise)
            want = torch.ops.sslfast.supcon_fwd(z.cpu(), labels.cpu(), 0.3, pairwise)
            for a, b in zip(got, want):
                torch.testing.assert_close(a.cpu(), b, rtol=1e-12, atol=1e-12)
            dz = torch.ops.sslfast_triton.supcon_bwd(g, z, labels, *got[1:], 0.3, pairwise)
            dz_cpp = torch.ops.sslfast.supcon_bwd(g.cpu(), z.cpu(), labels.cpu(), *want[1:], 0.3, pairwise)
            torch.testing.assert_close(dz.cpu(), dz_cpp, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("pairwise", [False, True])
def test_supcon_with_view_labels_is_nt_xent(pairwise):
    """labels = cat(arange(N), arange(N)): each row's one positive is its other view, so both
    SupCon forms are NT-Xent (loss and gradients, float64)."""
    z1, z2 = randn(30, 16, seed=86).requires_grad_(), randn(30, 16, seed=87).requires_grad_()
    labels = torch.cat([torch.arange(30), torch.arange(30)]).to(DEVICE)
    with sslfast.use_backend("triton"):
        got = sslfast.supcon(torch.cat([z1, z2]), labels, 0.3, pairwise=pairwise)
        got_grads = torch.autograd.grad(got, [z1, z2])
        want = sslfast.nt_xent(z1, z2, 0.3)
        want_grads = torch.autograd.grad(want, [z1, z2])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)
