"""Triton kernels of the masking family: random_masking, unshuffle, masked_patch_loss.

Registered as ``torch.ops.sslfast_triton.*`` with the schemas, fakes and autograd of
``csrc/schema.cpp``; the math is ``sslfast.reference.masking``.

* ``_rank_kernel``: the rank of each patch in its sample's noise order (ties by index, NaN last:
  torch's stable sort), counted by comparison against all L noises -- no sort, and the rank *is*
  ids_restore; the shuffle order is its scatter (a permutation: one writer per slot).
* ``_gather_rows_kernel``: one program per (output row, D block) copies a source row chosen by an
  index (or the mask token / zeros when the index is outside [0, keep)), adding pos_embed.
  It serves random_masking's gather, unshuffle, and random_masking's backward.
* ``_masked_patch_loss_*``: one program per patch reads its p x p x C pixels straight from the
  NCHW image (no patchified copy), normalizes, and writes the patch's loss contribution or its
  gradient row; unmasked patches load nothing. Per-patch partials are summed by torch in a
  fixed order: two runs are bitwise equal.
Offsets are int64; every index is clamped or masked before it addresses memory.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from . import register


def loss_dtype(t):
    return torch.float64 if t.dtype == torch.float64 else torch.float32


@triton.jit
def _rank_kernel(noise_ptr, restore_ptr, shuffle_ptr, mask_ptr, L, keep,
                 BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr):
    s = tl.program_id(0).to(tl.int64)
    i = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    i_ok = i < L
    u_i = tl.load(noise_ptr + s * L + i, mask=i_ok, other=0.0)
    nan_i = u_i != u_i
    rank = tl.zeros((BLOCK_I,), tl.int64)
    for j0 in range(0, L, BLOCK_J):
        j = j0 + tl.arange(0, BLOCK_J)
        j_ok = j < L
        u_j = tl.load(noise_ptr + s * L + j, mask=j_ok, other=0.0)
        nan_j = u_j != u_j
        a = u_j[None, :]
        b = u_i[:, None]
        earlier = j[None, :] < i[:, None]
        both_nan = nan_j[None, :] & nan_i[:, None]
        no_nan = (~nan_j[None, :]) & (~nan_i[:, None])
        before = (no_nan & ((a < b) | ((a == b) & earlier))) | (both_nan & earlier) \
            | ((~nan_j[None, :]) & nan_i[:, None])
        before = before & j_ok[None, :]
        rank += tl.sum(before.to(tl.int64), axis=1)
    tl.store(restore_ptr + s * L + i, rank.to(restore_ptr.dtype.element_ty), mask=i_ok)
    tl.store(mask_ptr + s * L + i, (rank >= keep).to(mask_ptr.dtype.element_ty), mask=i_ok)
    safe_rank = tl.minimum(tl.maximum(rank, 0), L - 1)
    tl.store(shuffle_ptr + s * L + safe_rank, i.to(tl.int64), mask=i_ok)


@triton.jit
def _splat(flag, BLOCK: tl.constexpr):
    # A scalar condition as a [BLOCK] mask (the interpreter rejects scalar-broadcast load masks).
    return (tl.zeros([BLOCK], tl.int32) + flag.to(tl.int32)) != 0


@triton.jit
def _row_source(idx_ptr, rows, rows_ok, row_count, P, L, keep):
    """For rows (s, j) of a [N, row_count] layout: (sample, j, source patch slot, valid):
    j < P is a prefix row (its own slot); else r = idx[s, j - P], valid when 0 <= r < keep.
    The slot is clamped into range, so it is always a safe address."""
    s = rows // row_count
    j = rows % row_count
    r = tl.load(idx_ptr + s * L + tl.minimum(tl.maximum(j - P, 0), L - 1), mask=rows_ok, other=0).to(tl.int64)
    is_prefix = j < P
    valid = rows_ok & (is_prefix | ((r >= 0) & (r < keep)))
    slot = tl.where(is_prefix, j, P + tl.minimum(tl.maximum(r, 0), tl.maximum(keep - 1, 0)))
    return s, j, slot, valid


@triton.jit
def _gather_rows_kernel(src_ptr, idx_ptr, token_ptr, pos_ptr, out_ptr, n_out, out_rows, src_rows, P, L, keep,
                        D, HAS_TOKEN: tl.constexpr, HAS_POS: tl.constexpr, POS_AT_SOURCE: tl.constexpr,
                        ADD_DTYPE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """out[s, j] = src[s, j] (j < P) or src[s, P + idx[s, j - P]] when 0 <= idx < keep, else the
    token (zeros without one); + pos of the source row (random_masking) or of j (unshuffle)."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    rows_ok = rows < n_out
    s, j, slot, valid = _row_source(idx_ptr, rows, rows_ok, out_rows, P, L, keep)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    d_ok = (d < D)[None, :]
    val = tl.load(src_ptr + (s * src_rows + slot)[:, None] * D + d[None, :], mask=valid[:, None] & d_ok, other=0.0)
    if HAS_TOKEN:
        token = tl.load(token_ptr + d, mask=d < D, other=0.0)
        val = tl.where(valid[:, None], val, token[None, :])
    if HAS_POS:
        pos_row = slot if POS_AT_SOURCE else j
        pos = tl.load(pos_ptr + pos_row[:, None] * D + d[None, :], mask=rows_ok[:, None] & d_ok, other=0.0)
        # half inputs add in fp32 and round once, as torch does
        val = (val.to(ADD_DTYPE) + pos.to(ADD_DTYPE)).to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + rows[:, None] * D + d[None, :], val, mask=rows_ok[:, None] & d_ok)


@triton.jit
def _scatter_rows_kernel(grad_ptr, idx_ptr, out_ptr, n_rows, total, vis_rows, P, L, keep, D,
                         BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """grad_visible[s, P + idx[s, i]] = grad_out[s, P + i] for kept i; prefix rows copied."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    rows_ok = rows < n_rows
    s, j, slot, valid = _row_source(idx_ptr, rows, rows_ok, total, P, L, keep)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    ok = valid[:, None] & (d < D)[None, :]
    val = tl.load(grad_ptr + rows[:, None] * D + d[None, :], mask=ok, other=0.0)
    tl.store(out_ptr + (s * vis_rows + slot)[:, None] * D + d[None, :], val, mask=ok)


@triton.jit
def _token_grad_kernel(grad_ptr, idx_ptr, partial_ptr, total, P, L, keep, D, BLOCK_R: tl.constexpr,
                       BLOCK_D: tl.constexpr):
    """partial[s] = sum over the mask-token positions of sample s of grad_out (fixed order)."""
    s = tl.program_id(0).to(tl.int64)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    d_ok = d < D
    acc = tl.zeros((BLOCK_D,), partial_ptr.dtype.element_ty)
    for i0 in range(0, L, BLOCK_R):
        i = i0 + tl.arange(0, BLOCK_R)
        i_ok = i < L
        r = tl.load(idx_ptr + s * L + i, mask=i_ok, other=0).to(tl.int64)
        is_token = i_ok & ((r < 0) | (r >= keep))
        g = tl.load(grad_ptr + (s * total + P + i)[:, None] * D + d[None, :],
                    mask=is_token[:, None] & d_ok[None, :], other=0.0)
        acc += tl.sum(g.to(partial_ptr.dtype.element_ty), axis=0)
    tl.store(partial_ptr + s * D + d, acc, mask=d_ok)


@triton.jit
def _load_target(imgs_ptr, patch, f, f_ok, m, C, H, W, p, patches_w, patches, F, NORM_PIX: tl.constexpr,
                 ACC: tl.constexpr, BLOCK_F: tl.constexpr):
    s = patch // patches
    cell = patch % patches
    hi = cell // patches_w
    wi = cell % patches_w
    pi = f // (p * C)
    qi = (f // C) % p
    c = f % C
    offs = ((s * C + c) * H + hi * p + pi) * W + wi * p + qi
    ok = f_ok & _splat(m != 0, BLOCK_F)
    t = tl.load(imgs_ptr + offs, mask=ok, other=0.0).to(ACC)
    if NORM_PIX:
        mean = tl.sum(t, axis=0) / F
        diff = tl.where(f_ok, t - mean, 0.0)
        var = tl.sum(diff * diff, axis=0) / (F - 1)
        t = diff / tl.sqrt(var + 1e-6)
    return t, ok


@triton.jit
def _masked_patch_loss_fwd_kernel(pred_ptr, imgs_ptr, mask_ptr, contrib_ptr, C, H, W, p, patches_w, patches,
                                  F, NORM_PIX: tl.constexpr, L1: tl.constexpr, BLOCK_F: tl.constexpr):
    patch = tl.program_id(0).to(tl.int64)
    ACC = contrib_ptr.dtype.element_ty
    m = tl.load(mask_ptr + patch).to(ACC)
    f = tl.arange(0, BLOCK_F).to(tl.int64)
    f_ok = f < F
    t, ok = _load_target(imgs_ptr, patch, f, f_ok, m, C, H, W, p, patches_w, patches, F, NORM_PIX, ACC, BLOCK_F)
    pr = tl.load(pred_ptr + patch * F + f, mask=ok, other=0.0).to(ACC)
    e = tl.where(ok, pr - t, 0.0)
    if L1:
        per_patch = tl.sum(tl.abs(e), axis=0)
    else:
        per_patch = tl.sum(e * e, axis=0) / F
    tl.store(contrib_ptr + patch, tl.where(m != 0, m * per_patch, 0.0))


@triton.jit
def _masked_patch_loss_bwd_kernel(pred_ptr, imgs_ptr, mask_ptr, scale_ptr, grad_ptr, C, H, W, p, patches_w,
                                  patches, F, NORM_PIX: tl.constexpr, L1: tl.constexpr,
                                  BLOCK_F: tl.constexpr):
    patch = tl.program_id(0).to(tl.int64)
    ACC = scale_ptr.dtype.element_ty
    m = tl.load(mask_ptr + patch).to(ACC)
    f = tl.arange(0, BLOCK_F).to(tl.int64)
    f_ok = f < F
    t, ok = _load_target(imgs_ptr, patch, f, f_ok, m, C, H, W, p, patches_w, patches, F, NORM_PIX, ACC, BLOCK_F)
    pr = tl.load(pred_ptr + patch * F + f, mask=ok, other=0.0).to(ACC)
    e = pr - t
    w = tl.load(scale_ptr) * m
    if L1:
        sign = tl.where(e > 0, 1.0, tl.where(e < 0, -1.0, 0.0)).to(ACC)
        g = w * tl.where(e != e, e, sign)
    else:
        g = (w * 2.0 / F) * e
    g = tl.where(ok, g, 0.0)
    tl.store(grad_ptr + patch * F + f, g.to(grad_ptr.dtype.element_ty), mask=f_ok)


_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def _blocks(d):
    """(BLOCK_R, BLOCK_D): ~4K elements per program on GPUs; the interpreter runs each program in
    Python, so there fewer, larger programs."""
    block_d = min(triton.next_power_of_2(max(d, 1)), 1024)
    budget = 1 << 14 if _INTERPRETED else 1 << 12
    return max(1, min(64, budget // block_d)), block_d


def _gather(src, idx, token, pos, out_rows, prefix, keep, pos_at_source=False):
    n, src_rows, d = src.shape
    length = idx.shape[1]
    out = src.new_empty((n, out_rows, d))
    if out.numel() == 0:
        return out
    block_r, block_d = _blocks(d)
    grid = (triton.cdiv(n * out_rows, block_r), triton.cdiv(d, block_d))
    _gather_rows_kernel[grid](src, idx, token if token is not None else src,
                              pos if pos is not None else src, out, n * out_rows, out_rows, src_rows, prefix,
                              length, keep, d, HAS_TOKEN=token is not None, HAS_POS=pos is not None,
                              POS_AT_SOURCE=pos_at_source,
                              ADD_DTYPE=tl.float64 if src.dtype == torch.float64 else tl.float32,
                              BLOCK_R=block_r, BLOCK_D=block_d)
    return out


def _pos(pos_embed, x):
    return None if pos_embed is None else pos_embed.to(x.dtype).contiguous()


def random_masking_fwd(x, noise, pos_embed, len_keep, num_prefix_tokens, int32_indices):
    x, noise = x.contiguous(), noise.contiguous()
    n, total, _ = x.shape
    length = total - num_prefix_tokens
    ids_restore = x.new_empty((n, length), dtype=torch.int32 if int32_indices else torch.int64)
    # The interpreter mis-converts int1 -> bfloat16 stores: there the mask goes through float32.
    mask_dtype = torch.float32 if (_INTERPRETED and x.dtype == torch.bfloat16) else x.dtype
    mask = x.new_empty((n, length), dtype=mask_dtype)
    ids_shuffle = x.new_empty((n, length), dtype=torch.int64)
    if n and length:
        block = min(triton.next_power_of_2(length), 64)
        _rank_kernel[(n, triton.cdiv(length, block))](noise, ids_restore, ids_shuffle, mask, length,
                                                     len_keep, BLOCK_I=block, BLOCK_J=block)
    # ids_shuffle holds every index in [0, L): all gathered rows are valid (keep = L below).
    visible = _gather(x, ids_shuffle, None, _pos(pos_embed, x), num_prefix_tokens + len_keep,
                      num_prefix_tokens, length, pos_at_source=True)
    return visible, mask.to(x.dtype), ids_restore


def random_masking_bwd(grad_visible, ids_restore, num_prefix_tokens):
    grad_visible = grad_visible.contiguous()
    keep = grad_visible.shape[1] - num_prefix_tokens
    return _gather(grad_visible, ids_restore.contiguous(), None, None,
                   num_prefix_tokens + ids_restore.shape[1], num_prefix_tokens, keep)


def unshuffle_fwd(x_visible, ids_restore, mask_token, pos_embed, num_prefix_tokens):
    x_visible = x_visible.contiguous()
    keep = x_visible.shape[1] - num_prefix_tokens
    token = mask_token.to(x_visible.dtype).contiguous().reshape(-1)
    return _gather(x_visible, ids_restore.contiguous(), token, _pos(pos_embed, x_visible),
                   num_prefix_tokens + ids_restore.shape[1], num_prefix_tokens, keep)


def unshuffle_bwd(grad_out, ids_restore, len_keep, num_prefix_tokens):
    grad_out, ids_restore = grad_out.contiguous(), ids_restore.contiguous()
    n, total, d = grad_out.shape
    length = ids_restore.shape[1]
    vis_rows = num_prefix_tokens + len_keep
    grad_visible = torch.zeros((n, vis_rows, d), dtype=grad_out.dtype, device=grad_out.device)
    partial = torch.zeros((n, d), dtype=loss_dtype(grad_out), device=grad_out.device)
    if n and d and total:
        block_r, block_d = _blocks(d)
        _scatter_rows_kernel[(triton.cdiv(n * total, block_r), triton.cdiv(d, block_d))](
            grad_out, ids_restore, grad_visible, n * total, total, vis_rows, num_prefix_tokens, length,
            len_keep, d, BLOCK_R=block_r, BLOCK_D=block_d)
        if length:
            _token_grad_kernel[(n, triton.cdiv(d, block_d))](
                grad_out, ids_restore, partial, total, num_prefix_tokens, length, len_keep, d,
                BLOCK_R=block_r, BLOCK_D=block_d)
    return grad_visible, partial.sum(dim=0).to(grad_out.dtype)


def _loss_geometry(imgs, patch_size):
    n, c, h, w = imgs.shape
    return n, c, h, w, w // patch_size, (h // patch_size) * (w // patch_size), patch_size * patch_size * c


def _denominator(mask, patch_size, channels, l1):
    msum = mask.to(torch.float64).sum()
    return (msum * (patch_size * patch_size) + 1e-5) * channels if l1 else msum


def masked_patch_loss_fwd(pred, imgs, mask, patch_size, norm_pix, l1):
    pred, imgs, mask = pred.contiguous(), imgs.contiguous(), mask.to(loss_dtype(pred)).contiguous()
    n, c, h, w, pw, patches, f = _loss_geometry(imgs, patch_size)
    contrib = torch.zeros(n * patches, dtype=loss_dtype(pred), device=pred.device)
    if n * patches:
        _masked_patch_loss_fwd_kernel[(n * patches,)](
            pred, imgs, mask, contrib, c, h, w, patch_size, pw, patches, f, NORM_PIX=bool(norm_pix),
            L1=bool(l1), BLOCK_F=triton.next_power_of_2(f))
    total = contrib.to(torch.float64).sum()
    return (total / _denominator(mask, patch_size, c, l1)).to(loss_dtype(pred))


def masked_patch_loss_bwd(grad_loss, pred, imgs, mask, patch_size, norm_pix, l1):
    pred, imgs, mask = pred.contiguous(), imgs.contiguous(), mask.to(loss_dtype(pred)).contiguous()
    n, c, h, w, pw, patches, f = _loss_geometry(imgs, patch_size)
    scale = (grad_loss.to(torch.float64).reshape(()) / _denominator(mask, patch_size, c, l1)).to(
        loss_dtype(pred))
    grad = torch.empty_like(pred)
    if n * patches:
        _masked_patch_loss_bwd_kernel[(n * patches,)](
            pred, imgs, mask, scale, grad, c, h, w, patch_size, pw, patches, f, NORM_PIX=bool(norm_pix),
            L1=bool(l1), BLOCK_F=triton.next_power_of_2(f))
    return grad


register({
    "random_masking_fwd": random_masking_fwd,
    "random_masking_bwd": random_masking_bwd,
    "unshuffle_fwd": unshuffle_fwd,
    "unshuffle_bwd": unshuffle_bwd,
    "masked_patch_loss_fwd": masked_patch_loss_fwd,
    "masked_patch_loss_bwd": masked_patch_loss_bwd,
})
