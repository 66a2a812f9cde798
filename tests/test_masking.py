"""Masking family: every runnable backend vs the reference given the same noise (exact for the
gathers), gradients (gradcheck in float64), opcheck, compile, determinism, distributions of the
mask generators, bounds safety and bad input."""

import math
import re

import pytest
import torch

import sslfast
from sslfast.ops import masking as masking_ops
from sslfast.reference import masking as reference

from conftest import DEVICE, runnable_backends

BACKENDS = runnable_backends(torch.device(DEVICE).type, "random_masking")
FAST_BACKENDS = [b for b in BACKENDS if b != "reference"]
DTYPES = [torch.float64, torch.float32, torch.bfloat16]
# (N, prefix, L, D): L = 1, 2, odd, and ViT's 196 patches + a cls token (197 tokens).
MASK_SHAPES = [(2, 0, 1, 3), (3, 0, 2, 5), (2, 1, 7, 4), (2, 1, 196, 6)]
SMALL_MASK_SHAPES = [(2, 0, 1, 3), (3, 0, 2, 5), (2, 1, 7, 4), (1, 1, 196, 3)]
# (N, C, H, W, p)
LOSS_SHAPES = [(1, 1, 2, 2, 2), (2, 3, 8, 12, 4), (3, 3, 32, 16, 8)]
SMALL_LOSS_SHAPES = [(1, 1, 2, 2, 2), (2, 3, 8, 12, 4)]


def mask_shapes(backend):
    return SMALL_MASK_SHAPES if backend == "triton" and DEVICE == "cpu" else MASK_SHAPES


def loss_shapes(backend):
    return SMALL_LOSS_SHAPES if backend == "triton" and DEVICE == "cpu" else LOSS_SHAPES


def randn(*shape, dtype=torch.float64, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(*shape, generator=g, dtype=torch.float64).to(DEVICE, dtype)
    return t.requires_grad_(requires_grad)


def rand_noise(n, length, seed, ties=True):
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(n, length, generator=g)
    if ties and length > 3:  # exact ties must break by position, as torch's stable sort
        noise[:, 1] = noise[:, 3]
    return noise.to(DEVICE)


def assert_equal_or_close(got, want, dtype):
    if dtype in (torch.float32, torch.float64):
        assert torch.equal(got, want), (got - want).abs().max()
    else:  # the Triton interpreter's bf16 conversions may differ from torch's by a few ulps
        torch.testing.assert_close(got, want, rtol=2e-2, atol=1e-2)


# ---------------------------------------------------------------- random_masking / unshuffle


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_pos", [False, True])
def test_random_masking_and_unshuffle_match_reference(backend, dtype, with_pos):
    for case, (n, prefix, length, d) in enumerate(mask_shapes(backend)):
        for ratio in {1: (0.0,), 2: (0.5, 0.0)}.get(length, (0.75, 0.5)):
            x = randn(n, prefix + length, d, dtype=dtype, seed=case, requires_grad=True)
            pos = randn(1, prefix + length, d, dtype=dtype, seed=10 + case, requires_grad=True) \
                if with_pos else None
            token = randn(1, 1, d, dtype=dtype, seed=20 + case, requires_grad=True)
            noise = rand_noise(n, length, seed=case)
            index_dtype = torch.int32 if case % 2 else torch.int64
            with sslfast.use_backend(backend):
                vis, mask, ids = sslfast.random_masking(x, ratio, pos_embed=pos, num_prefix_tokens=prefix,
                                                        noise=noise, index_dtype=index_dtype)
                full = sslfast.unshuffle(vis, ids, token, pos_embed=pos, num_prefix_tokens=prefix)
            want_vis, want_mask, want_ids = reference.random_masking(
                x, ratio, pos_embed=pos, num_prefix_tokens=prefix, noise=noise, index_dtype=index_dtype)
            want_full = reference.unshuffle(want_vis, want_ids, token, pos_embed=pos, num_prefix_tokens=prefix)
            keep = reference.len_keep(length, ratio)
            assert vis.shape == (n, prefix + keep, d) and ids.dtype == index_dtype
            assert torch.equal(ids, want_ids) and torch.equal(mask, want_mask)
            assert mask.dtype == dtype
            assert_equal_or_close(vis, want_vis, dtype)
            assert_equal_or_close(full, want_full, dtype)
            # gradients through both ops, vs the reference's autograd
            g = randn(*full.shape, dtype=dtype, seed=30 + case)
            leaves = [t for t in (x, pos, token) if t is not None]
            got = torch.autograd.grad(full, leaves, g)
            want = torch.autograd.grad(want_full, leaves, g)
            for a, b in zip(got, want):
                if dtype == torch.bfloat16:
                    torch.testing.assert_close(a.double(), b.double(), rtol=2e-2, atol=4e-2 * n)
                else:
                    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_inverse_permutation_and_mask_properties(backend):
    n, prefix, length, d = 4, 1, 49, 3
    x = randn(n, prefix + length, d, seed=1)
    gen = torch.Generator(device=DEVICE).manual_seed(5)
    with sslfast.use_backend(backend):
        vis, mask, ids = sslfast.random_masking(x, 0.75, generator=gen, num_prefix_tokens=prefix)
        token = torch.full((d,), float("inf"), device=DEVICE, dtype=x.dtype)
        full = sslfast.unshuffle(vis, ids, token, num_prefix_tokens=prefix)
    keep = reference.len_keep(length, 0.75)
    assert torch.equal(ids.sort(dim=1).values, torch.arange(length, device=DEVICE).expand(n, length))
    assert torch.equal(mask, (ids >= keep).to(mask.dtype))
    assert torch.equal(mask.sum(dim=1), torch.full((n,), float(length - keep), device=DEVICE, dtype=x.dtype))
    kept = (mask == 0).unsqueeze(-1)
    assert torch.equal(torch.where(kept, full[:, prefix:], x[:, prefix:]), x[:, prefix:])
    assert torch.isinf(full[:, prefix:][~kept.expand(-1, -1, d)]).all()
    assert torch.equal(full[:, :prefix], x[:, :prefix])


def test_random_masking_uniform_over_positions():
    """Each position is masked with probability ~ (L - keep) / L; counts are exact per row."""
    n, length = 4000, 10
    x = torch.zeros(n, length, 1, device=DEVICE)
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    _, mask, ids = sslfast.random_masking(x, 0.6, generator=gen)
    assert torch.equal(mask.sum(1), torch.full((n,), 6.0, device=DEVICE))
    freq = mask.mean(0)
    assert (freq - 0.6).abs().max() < 0.04, freq
    # every rank is equally likely at every position
    first = (ids == 0).float().mean(0)
    assert (first - 0.1).abs().max() < 0.03, first


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_seeded_and_deterministic(backend):
    n, length, d = 3, 37, 8
    x = randn(n, length, d, seed=2, requires_grad=True)
    token = randn(d, seed=3, requires_grad=True)
    imgs = randn(n, 3, 4, 4 * length, seed=4)

    def run(seed):
        gen = torch.Generator(device=DEVICE).manual_seed(seed)
        with sslfast.use_backend(backend):
            vis, mask, ids = sslfast.random_masking(x, 0.7, generator=gen)
            full = sslfast.unshuffle(vis, ids, token)
            loss = sslfast.masked_patch_loss(full[..., :1].expand(n, length, 48) * full.sum(-1, keepdim=True),
                                             imgs, mask, 4)
        grads = torch.autograd.grad(loss, (x, token))
        return (vis, mask, ids, loss) + grads

    first, second, other = run(7), run(7), run(8)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[2], other[2])


# ---------------------------------------------------------------- masked_patch_loss


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", ["l2", "l1"])
@pytest.mark.parametrize("norm_pix", [True, False])
def test_masked_patch_loss_matches_reference(backend, dtype, loss, norm_pix):
    for case, (n, c, h, w, p) in enumerate(loss_shapes(backend)):
        length, features = (h // p) * (w // p), p * p * c
        pred = randn(n, length, features, dtype=dtype, seed=case, requires_grad=True)
        imgs = randn(n, c, h, w, dtype=dtype, seed=10 + case) * 3 + 1
        mask = (rand_noise(n, length, seed=20 + case, ties=False) < 0.6).to(dtype)
        mask[0, 0] = 1  # at least one masked patch
        with sslfast.use_backend(backend):
            got = sslfast.masked_patch_loss(pred, imgs, mask, p, norm_pix=norm_pix, loss=loss)
        (got_grad,) = torch.autograd.grad(got, pred)
        assert got.dim() == 0 and got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)

        def ref(pr, im):
            return reference.masked_patch_loss(pr, im, mask.to(pr.dtype), p, norm_pix=norm_pix, loss=loss)

        eager = ref(pred, imgs)
        (eager_grad,) = torch.autograd.grad(eager, pred)
        truth_pred = pred.detach().double().requires_grad_()
        truth = ref(truth_pred, imgs.double())
        (truth_grad,) = torch.autograd.grad(truth, truth_pred)
        floor = {torch.float64: 1e-12, torch.float32: 1e-5}.get(dtype, 2e-2)
        for g, e, t in ((got, eager, truth), (got_grad, eager_grad, truth_grad)):
            err = (g.double() - t).abs().max().item()
            bound = 2 * (e.double() - t).abs().max().item() + floor * (1 + t.abs().max().item())
            assert err <= bound, (backend, dtype, case, err, bound)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_masked_patch_loss_skips_unmasked_patches(backend):
    """Unmasked patches are never read and get exactly zero gradient; NaN in a masked one -> NaN."""
    pred = randn(2, 6, 48, seed=1, requires_grad=True)
    imgs = randn(2, 3, 8, 12, seed=2)
    mask = torch.tensor([[1, 0, 1, 0, 0, 1], [0, 0, 0, 1, 0, 0]], dtype=torch.float64, device=DEVICE)
    poisoned = imgs.clone()
    poisoned[0, :, 0:4, 4:8] = float("nan")  # patch 1 of sample 0: unmasked
    with sslfast.use_backend(backend):
        loss = sslfast.masked_patch_loss(pred, poisoned, mask, 4)
        (grad,) = torch.autograd.grad(loss, pred)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        assert torch.equal(grad[mask == 0], torch.zeros_like(grad[mask == 0]))
        poisoned[0, 1, 0, 0] = float("nan")  # patch 0 of sample 0: masked
        assert torch.isnan(sslfast.masked_patch_loss(pred, poisoned, mask, 4))


@pytest.mark.skipif(DEVICE != "cpu" or "native" not in BACKENDS, reason="CPU allocator probe")
def test_native_loss_never_patchifies():
    from sslfast.bench.harness import measure_peak_mib

    pred = randn(16, 196, 768, dtype=torch.float32, seed=1, requires_grad=True)  # 9.2 MiB
    imgs = randn(16, 3, 224, 224, dtype=torch.float32, seed=2)
    mask = (rand_noise(16, 196, seed=3, ties=False) < 0.75).float()
    assert measure_peak_mib(lambda: sslfast.masked_patch_loss(pred, imgs, mask, 16)) < 1.0

    def fwd_bwd():
        torch.autograd.grad(sslfast.masked_patch_loss(pred, imgs, mask, 16), pred)

    assert measure_peak_mib(fwd_bwd) < 9.2 + 1.0  # the gradient itself + O(N * L) scratch


@pytest.mark.skipif(DEVICE != "cpu" or "native" not in BACKENDS, reason="CPU thread-count check")
def test_native_independent_of_thread_count():
    pred = randn(4, 49, 192, dtype=torch.float32, seed=1, requires_grad=True)
    imgs = randn(4, 3, 56, 56, dtype=torch.float32, seed=2)
    mask = (rand_noise(4, 49, seed=3, ties=False) < 0.75).float()
    threads = torch.get_num_threads()
    results = []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            loss = sslfast.masked_patch_loss(pred, imgs, mask, 8)
            results.append((loss,) + torch.autograd.grad(loss, pred))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*results))


# ---------------------------------------------------------------- gradcheck, opcheck, compile


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_gradcheck(backend):
    """float64 gradcheck of every differentiable core op (Triton in fast mode, random projections:
    the interpreter then needs a handful of calls, not one per input element)."""
    ops = torch.ops.sslfast if backend == "native" else torch.ops.sslfast_triton
    fast = backend == "triton" and DEVICE == "cpu"
    n, prefix, length, d = 2, 1, 5, 3
    x = randn(n, prefix + length, d, seed=1, requires_grad=True)
    pos = randn(prefix + length, d, seed=2, requires_grad=True)
    noise = rand_noise(n, length, seed=3)
    assert torch.autograd.gradcheck(lambda a, b: ops.random_masking(a, noise, b, 2, prefix, False)[0],
                                    (x, pos), fast_mode=fast)
    vis = randn(n, prefix + 2, d, seed=4, requires_grad=True)
    ids = torch.argsort(noise, dim=1).argsort(dim=1)
    token = randn(d, seed=5, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, t, b: ops.unshuffle(a, ids, t, b, prefix), (vis, token, pos),
                                    fast_mode=fast)
    pred = randn(2, 6, 12, seed=6, requires_grad=True)
    imgs = randn(2, 3, 4, 6, seed=7)
    mask = torch.tensor([[1, 0, 1, 1, 0, 1], [0, 1, 0, 1, 0, 0]], dtype=torch.float64, device=DEVICE)
    for norm_pix, l1 in ((True, False), (False, True)):
        assert torch.autograd.gradcheck(lambda a: ops.masked_patch_loss(a, imgs, mask, 2, norm_pix, l1),
                                        (pred,), fast_mode=fast)


def core_op_cases(ops):
    n, prefix, length, d = 2, 1, 5, 3
    x = randn(n, prefix + length, d, dtype=torch.float32, seed=1, requires_grad=True)
    pos = randn(1, prefix + length, d, dtype=torch.float32, seed=2, requires_grad=True)
    noise = rand_noise(n, length, seed=3)
    ids = torch.argsort(noise, dim=1).argsort(dim=1)
    vis = randn(n, prefix + 2, d, dtype=torch.float32, seed=4, requires_grad=True)
    token = randn(d, dtype=torch.float32, seed=5, requires_grad=True)
    full = randn(n, prefix + length, d, dtype=torch.float32, seed=6)
    pred = randn(2, 6, 48, dtype=torch.float32, seed=7, requires_grad=True)
    imgs = randn(2, 3, 8, 12, dtype=torch.float32, seed=8)
    mask = torch.tensor([[1, 0, 1, 1, 0, 1], [0, 1, 0, 1, 0, 0]], dtype=torch.float32, device=DEVICE)
    return [
        (ops.random_masking, (x, noise, pos, 2, prefix, False)),
        (ops.unshuffle, (vis, ids, token, pos, prefix)),
        (ops.masked_patch_loss, (pred, imgs, mask, 4, True, False)),
        (ops.random_masking_fwd, (x, noise, pos, 2, prefix, False)),
        (ops.random_masking_fwd, (x, noise, None, 3, prefix, True)),
        (ops.random_masking_bwd, (vis.detach(), ids, prefix)),
        (ops.unshuffle_fwd, (vis, ids, token, pos, prefix)),
        (ops.unshuffle_bwd, (full, ids, 2, prefix)),
        (ops.masked_patch_loss_fwd, (pred, imgs, mask, 4, True, False)),
        (ops.masked_patch_loss_fwd, (pred, imgs, mask, 4, False, True)),
        (ops.masked_patch_loss_bwd, (torch.tensor(1.5, device=DEVICE), pred.detach(), imgs, mask, 4, True, False)),
    ]


def namespaces():
    return (["sslfast"] if "native" in BACKENDS else []) + (["sslfast_triton"] if "triton" in BACKENDS else [])


@pytest.mark.parametrize("namespace", namespaces())
def test_opcheck(namespace):
    for op, args in core_op_cases(getattr(torch.ops, namespace)):
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_compile_fullgraph(backend):
    torch._dynamo.reset()
    n, prefix, length, d = 2, 1, 6, 48
    x = randn(n, prefix + length, d, dtype=torch.float32, seed=1, requires_grad=True)
    pos = randn(1, prefix + length, d, dtype=torch.float32, seed=2, requires_grad=True)
    token = randn(1, 1, d, dtype=torch.float32, seed=3, requires_grad=True)
    imgs = randn(n, 3, 8, 12, dtype=torch.float32, seed=4)
    noise = rand_noise(n, length, seed=5)

    def mae_step(x, pos, token):
        vis, mask, ids = sslfast.random_masking(x, 0.5, pos_embed=pos, num_prefix_tokens=prefix, noise=noise)
        full = sslfast.unshuffle(vis * 2, ids, token, pos_embed=pos, num_prefix_tokens=prefix)
        return sslfast.masked_patch_loss(full[:, prefix:], imgs, mask, 4)

    with sslfast.use_backend(backend):
        expected = mae_step(x, pos, token)
        expected_grads = torch.autograd.grad(expected, (x, pos, token))
        got = torch.compile(mae_step, fullgraph=True)(x, pos, token)
        got_grads = torch.autograd.grad(got, (x, pos, token))
    torch.testing.assert_close(got, expected)
    for g, e in zip(got_grads, expected_grads):
        torch.testing.assert_close(g, e)
    # the noise drawn inside the compiled graph (default generator)
    with sslfast.use_backend(backend):
        vis, mask, ids = torch.compile(lambda t: sslfast.random_masking(t, 0.5, num_prefix_tokens=prefix),
                                       fullgraph=True)(x.detach())
    assert vis.shape == (n, prefix + 3, d) and torch.equal(mask.sum(1), torch.full((n,), 3.0, device=DEVICE))
    assert torch.equal(ids.sort(dim=1).values, torch.arange(length, device=DEVICE).expand(n, length))


# ---------------------------------------------------------------- bounds safety, bad input


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_out_of_range_ids_are_safe(backend):
    """Indices outside [0, keep) select the mask token: no out-of-bounds access on any input."""
    vis = randn(2, 3, 4, seed=1, requires_grad=True)
    token = randn(4, seed=2, requires_grad=True)
    ids = torch.tensor([[0, 99, -5, 2, 1], [1 << 40, 2, 0, -1, 1]], device=DEVICE)
    with sslfast.use_backend(backend):
        full = sslfast.unshuffle(vis, ids, token)
    want = reference.unshuffle(vis, ids.clamp(0, 4).masked_fill((ids < 0) | (ids >= 3), 4), token)
    torch.testing.assert_close(full, want)
    full.sum().backward()
    assert torch.isfinite(vis.grad).all() and torch.isfinite(token.grad).all()


def test_debug_mode_checks_the_permutation(monkeypatch):
    vis, token = randn(1, 2, 3, seed=1), randn(3, seed=2)
    ids = torch.tensor([[0, 0, 1]], device=DEVICE)
    sslfast.unshuffle(vis, ids, token)  # off by default: no sync, no check
    monkeypatch.setattr(masking_ops, "DEBUG", True)
    with pytest.raises(ValueError, match="ids_restore must be a permutation"):
        sslfast.unshuffle(vis, ids, token)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_nan_propagates(backend):
    x = randn(2, 5, 3, seed=1)
    x[:, :, 1] = float("nan")
    with sslfast.use_backend(backend):
        vis, _, _ = sslfast.random_masking(x, 0.4, noise=rand_noise(2, 5, seed=2))
    assert torch.isnan(vis[:, :, 1]).all() and torch.isfinite(vis[:, :, 0]).all()


def test_bad_input_names_the_argument():
    x = randn(2, 5, 4)

    def ids(*shape):
        return torch.zeros(*shape, dtype=torch.long, device=DEVICE)

    def ones(*shape):
        return torch.ones(*shape, device=DEVICE)

    cases = [
        (lambda: sslfast.random_masking(x, 1.0), ValueError, "mask_ratio"),
        (lambda: sslfast.random_masking(x, -0.1), ValueError, "mask_ratio"),
        (lambda: sslfast.random_masking(x, "0.5"), TypeError, "mask_ratio"),
        (lambda: sslfast.random_masking(x[:, :1], 0.5), ValueError, "keeps zero"),
        (lambda: sslfast.random_masking(x[0], 0.5), ValueError, "x must be 3-D"),
        (lambda: sslfast.random_masking(x.long(), 0.5), TypeError, "x must be a floating"),
        (lambda: sslfast.random_masking(x, 0.5, num_prefix_tokens=5), ValueError, "num_prefix_tokens"),
        (lambda: sslfast.random_masking(x, 0.5, pos_embed=randn(1, 4, 4)), ValueError, "pos_embed"),
        (lambda: sslfast.random_masking(x, 0.5, noise=torch.rand(2, 4, device=DEVICE)), ValueError,
         "noise must have shape"),
        (lambda: sslfast.random_masking(x, 0.5, index_dtype=torch.int16), TypeError, "index_dtype"),
        (lambda: sslfast.random_masking(x, 0.5, generator=1), TypeError, "generator"),
        (lambda: sslfast.unshuffle(x, torch.zeros(2, 4, device=DEVICE), x[0, 0]), TypeError, "ids_restore"),
        (lambda: sslfast.unshuffle(x, ids(3, 5), x[0, 0]), ValueError, "ids_restore"),
        (lambda: sslfast.unshuffle(x, ids(2, 4), x[0, 0]), ValueError, "x_visible"),
        (lambda: sslfast.unshuffle(x, ids(2, 5), x[0, 0, :3]), ValueError, "mask_token"),
        (lambda: sslfast.masked_patch_loss(randn(1, 4, 12), randn(1, 3, 4, 5), torch.ones(1, 4, device=DEVICE), 2),
         ValueError, "not divisible by patch_size"),
        (lambda: sslfast.masked_patch_loss(randn(1, 4, 11), randn(1, 3, 4, 4), torch.ones(1, 4, device=DEVICE), 2),
         ValueError, "pred must have shape"),
        (lambda: sslfast.masked_patch_loss(randn(1, 4, 12), randn(1, 3, 4, 4), torch.ones(1, 3, device=DEVICE), 2),
         ValueError, "mask must have shape"),
        (lambda: sslfast.masked_patch_loss(randn(1, 4, 12), randn(1, 3, 4, 4).float(), ones(1, 4), 2),
         TypeError, "imgs has dtype"),
        (lambda: sslfast.masked_patch_loss(randn(1, 4, 12), randn(1, 3, 4, 4), torch.ones(1, 4, device=DEVICE), 0),
         ValueError, "patch_size"),
        (lambda: sslfast.masked_patch_loss(randn(1, 4, 12), randn(1, 3, 4, 4), ones(1, 4), 2, loss="l3"),
         ValueError, "loss"),
        (lambda: sslfast.tube_mask(2, 4, 3, 3, 1.5), ValueError, "mask_ratio"),
        (lambda: sslfast.block_mask(2, 4, 4, 17), ValueError, "num_masking_patches"),
        (lambda: sslfast.block_mask(2, 4, 4, 8, min_aspect=0), ValueError, "min_aspect"),
        (lambda: sslfast.simmim_mask(2, 100, 32), ValueError, "input_size"),
        (lambda: sslfast.span_mask(2, 10, 0.5, 11), ValueError, "mask_length"),
        (lambda: sslfast.bert_mask_tokens(torch.zeros(2, 3), 1, 10), TypeError, "input_ids"),
        (lambda: sslfast.bert_mask_tokens(torch.zeros(2, 3, dtype=torch.long), 10, 10), ValueError,
         "mask_token_id"),
        (lambda: sslfast.node_mask(x[0], 0.5, randn(3)), ValueError, "mask_token"),
    ]
    for fn, error, text in cases:
        with pytest.raises(error, match=re.escape(text)):
            fn()


def test_module_matches_function():
    module = sslfast.nn.RandomMasking(0.75, num_prefix_tokens=1)
    x = randn(3, 17, 4, seed=1)
    got = module(x, generator=torch.Generator(device=DEVICE).manual_seed(3))
    want = sslfast.random_masking(x, 0.75, num_prefix_tokens=1,
                                  generator=torch.Generator(device=DEVICE).manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    module.mask_in_eval = False
    vis, mask, ids = module.eval()(x)
    assert torch.equal(vis, x) and not mask.any() and torch.equal(ids, torch.arange(16, device=DEVICE).expand(3, 16))


# ---------------------------------------------------------------- mask generators


def test_tube_mask_distribution():
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    mask = sslfast.tube_mask(3000, 4, 3, 3, 0.75, generator=gen, device=DEVICE)
    assert mask.shape == (3000, 36) and mask.dtype == torch.bool
    frames = mask.reshape(3000, 4, 9)
    assert torch.equal(frames, frames[:, :1].expand(-1, 4, -1))  # one spatial mask per tube
    assert torch.equal(frames[:, 0].sum(1), torch.full((3000,), 6, device=DEVICE))  # int(0.75 * 9)
    freq = frames[:, 0].float().mean(0)
    assert (freq - 6 / 9).abs().max() < 0.04


def test_simmim_mask_blocks():
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    mask = sslfast.simmim_mask(2000, 192, 32, 4, 0.6, generator=gen, device=DEVICE)
    assert mask.shape == (2000, 48, 48)
    cells = mask.reshape(2000, 6, 8, 6, 8)
    coarse = cells[:, :, 0, :, 0]
    assert torch.equal(cells, coarse[:, :, None, :, None].expand_as(cells))  # 8 x 8 blocks
    assert torch.equal(coarse.sum((1, 2)), torch.full((2000,), math.ceil(36 * 0.6), device=DEVICE))
    assert (coarse.float().mean(0) - 22 / 36).abs().max() < 0.05


def _hf_num_spans(length, mask_prob, mask_length, min_masks, eps):
    num = int(mask_prob * length / mask_length + eps)
    num = max(num, min_masks)
    if num * mask_length > length:
        num = length // mask_length
    if length - (mask_length - 1) < num:
        num = max(length - (mask_length - 1), 0)
    return num


def test_span_mask_semantics():
    length, mask_length, prob = 50, 10, 0.65
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    masks = torch.stack([sslfast.span_mask(64, length, prob, mask_length, min_masks=2, generator=gen,
                                           device=DEVICE) for _ in range(20)])
    assert masks.shape == (20, 64, length) and masks.dtype == torch.bool
    allowed = {_hf_num_spans(length, prob, mask_length, 2, eps) for eps in (0.0, 0.999)}
    for batch in masks:
        for row in batch:
            # every masked run is at least one span long (spans may overlap and merge)
            edges = torch.diff(torch.cat([torch.zeros(1, device=DEVICE), row.float(), torch.zeros(1, device=DEVICE)]))
            starts, ends = (edges == 1).nonzero().flatten(), (edges == -1).nonzero().flatten()
            assert ((ends - starts) >= mask_length).all()
            assert 1 <= len(starts) <= max(allowed)
    # span starts uniform over [0, L - mask_length]: coverage is symmetric about the middle
    cover = masks.float().mean((0, 1))
    torch.testing.assert_close(cover, cover.flip(0), atol=0.06, rtol=0)


def test_span_mask_min_masks_and_cap():
    gen = torch.Generator(device=DEVICE).manual_seed(1)
    assert sslfast.span_mask(8, 20, 0.0, 4, min_masks=2, generator=gen, device=DEVICE).sum(1).min() >= 4
    full = sslfast.span_mask(8, 12, 1.0, 5, generator=gen, device=DEVICE)
    assert full.shape == (8, 12) and full.sum(1).max() <= 12


def test_bert_mask_tokens_80_10_10():
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    ids = torch.randint(5, 1000, (200, 128), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = True
    inputs, labels = sslfast.bert_mask_tokens(ids, 3, 1000, 0.15, special, generator=gen)
    selected = labels != -100
    assert not selected[:, 0].any()
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(inputs[~selected], ids[~selected])
    assert abs(selected.float().mean().item() - 0.15 * 127 / 128) < 0.01
    replaced = (inputs == 3) & selected
    kept = (inputs == ids) & selected
    frac_replaced = replaced.sum().item() / selected.sum().item()
    frac_kept = kept.sum().item() / selected.sum().item()
    assert abs(frac_replaced - 0.8) < 0.02 and abs(frac_kept - 0.1) < 0.02


def test_node_mask_graphmae():
    x = randn(101, 8, seed=1, requires_grad=True)
    token = randn(1, 8, seed=2, requires_grad=True)
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    out, mask_nodes, keep_nodes = sslfast.node_mask(x, 0.5, token, generator=gen)
    assert mask_nodes.shape == (50,) and keep_nodes.shape == (51,)
    assert torch.equal(torch.cat([mask_nodes, keep_nodes]).sort().values, torch.arange(101, device=DEVICE))
    assert torch.equal(out[mask_nodes], token.expand(50, 8)) and torch.equal(out[keep_nodes], x[keep_nodes])
    out.sum().backward()
    assert torch.equal(token.grad, torch.full((1, 8), 50.0, device=DEVICE, dtype=token.dtype))
    assert torch.equal(x.grad[mask_nodes], torch.zeros(50, 8, device=DEVICE, dtype=x.dtype))
    again = sslfast.node_mask(x, 0.5, token, generator=torch.Generator(device=DEVICE).manual_seed(0))
    assert torch.equal(again[1], mask_nodes)


def test_block_mask_beit():
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    mask = sslfast.block_mask(96, 14, 14, 75, generator=gen, device=DEVICE)
    assert mask.shape == (96, 14, 14) and mask.dtype == torch.bool
    counts = mask.sum((1, 2))
    assert counts.max() <= 75 and counts.float().mean() > 0.95 * 75
    # blocks, not scattered patches: almost every masked patch has a masked 4-neighbour
    m = torch.nn.functional.pad(mask.float(), (1, 1, 1, 1))
    neighbours = m[:, :-2, 1:-1] + m[:, 2:, 1:-1] + m[:, 1:-1, :-2] + m[:, 1:-1, 2:]
    assert ((neighbours > 0) & mask).sum() >= 0.97 * mask.sum()
    freq = mask.float().mean(0)
    torch.testing.assert_close(freq.mean().item(), 75 / 196, atol=0.02, rtol=0)
    again = sslfast.block_mask(96, 14, 14, 75, generator=torch.Generator(device=DEVICE).manual_seed(0),
                               device=DEVICE)
    assert torch.equal(again, mask)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_sanitize_masking_kernels_once(backend):
    """Every masking kernel once, forward and backward, at small odd sizes (``make gpu-check``
    runs the tests named ``sanitize`` under compute-sanitizer): a cls token, pos_embed, L = 1,
    both index dtypes, both losses."""
    for case, (n, prefix, length, d) in enumerate([(3, 1, 7, 5), (2, 0, 1, 3)]):
        x = randn(n, prefix + length, d, dtype=torch.float32, seed=40 + case, requires_grad=True)
        pos = randn(1, prefix + length, d, dtype=torch.float32, seed=50 + case, requires_grad=True)
        token = randn(1, 1, d, dtype=torch.float32, seed=60 + case, requires_grad=True)
        index_dtype = torch.int32 if case else torch.int64
        with sslfast.use_backend(backend):
            vis, mask, ids = sslfast.random_masking(x, 0.5 if length > 1 else 0.0,
                                                    generator=torch.Generator(device=DEVICE).manual_seed(case),
                                                    pos_embed=pos, num_prefix_tokens=prefix,
                                                    index_dtype=index_dtype)
            full = sslfast.unshuffle(vis, ids, token, pos_embed=pos, num_prefix_tokens=prefix)
        full.sum().backward()
        assert x.grad is not None and token.grad is not None and pos.grad is not None
    imgs = randn(2, 3, 12, 8, dtype=torch.float32, seed=70)
    mask = (torch.arange(6, device=DEVICE) % 2).float().expand(2, 6).contiguous()
    for loss in ("l2", "l1"):
        pred = randn(2, 6, 48, dtype=torch.float32, seed=71, requires_grad=True)
        with sslfast.use_backend(backend):
            sslfast.masked_patch_loss(pred, imgs, mask, 4, loss=loss).backward()
        assert torch.isfinite(pred.grad).all()
