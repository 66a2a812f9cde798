"""Masking family, what is particular to it: permutation and mask properties, distributions of the
drawn masks and of the mask generators (BEiT, VideoMAE, SimMIM, wav2vec2, BERT, GraphMAE), the loss
reading masked patches only, memory and thread counts, bounds safety, the debug check, the module.
The contract every op keeps (parity with the float64 reference, gradcheck, opcheck, compile,
determinism, NaN, bad input): test_contract.py."""

import math
import re

import pytest
import torch

import sslfast
from sslfast.ops import masking as masking_ops
from sslfast.reference import masking as reference

from helpers import DEVICE, fast_backends, rand_noise, randn, runnable_backends

BACKENDS = runnable_backends(torch.device(DEVICE).type, "random_masking")
FAST_BACKENDS = fast_backends("random_masking")


# ---------------------------------------------------------------- random_masking / unshuffle


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


# ---------------------------------------------------------------- masked_patch_loss


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


# ---------------------------------------------------------------- compile


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_compile_draws_the_noise_in_the_graph(backend):
    """Under torch.compile(fullgraph=True) the noise is drawn inside the graph (default generator):
    still a permutation, still len_keep kept per row."""
    torch._dynamo.reset()
    n, prefix, length, d = 2, 1, 6, 48
    x = randn(n, prefix + length, d, dtype=torch.float32, seed=1)
    with sslfast.use_backend(backend):
        vis, mask, ids = torch.compile(lambda t: sslfast.random_masking(t, 0.5, num_prefix_tokens=prefix),
                                       fullgraph=True)(x)
    assert vis.shape == (n, prefix + 3, d) and torch.equal(mask.sum(1), torch.full((n,), 3.0, device=DEVICE))
    assert torch.equal(ids.sort(dim=1).values, torch.arange(length, device=DEVICE).expand(n, length))


# ---------------------------------------------------------------- bounds safety, debug mode, bad input


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


def test_mask_generators_bad_input():
    """The mask generators (compositions of torch ops, not kernel ops) name the bad argument; the
    kernel ops' bad inputs: test_contract.py."""
    x = randn(2, 5, 4)
    cases = [
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
