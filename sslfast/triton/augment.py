"""Triton kernels of the augmentation ops, registered for ``torch.ops.sslfast_triton.*``.

``augment_images_fwd``: one program per BLOCK output pixels: the sample's box and flip, the two
bilinear taps per axis (PyTorch's align_corners=False indices, in fp32 / fp64), four gathers, and
the in-kernel normal (the Philox stream of the diffusion kernels) when noise is asked. Boxes are
clamped to the image, so no input can make a load leave it. Its backward (gradients to images are
rare: the inputs are data) is the resampling's adjoint as two batched matmuls with the per-sample
interpolation matrices: deterministic, no atomics. ``drop_mask_fwd``: the SplitMix64 keep
decision of kernels/random.h per entry or column. ``ema_``: torch's multi-tensor apply kernels.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..reference.augment import _taps
from . import register
from .diffusion import _key, _philox_normal4

_BLOCK = 256


@triton.jit
def _hash_uniform(seed, index):
    """kernels/random.h's hash_uniform: SplitMix64 of seed * golden + (index + 1) * mix1, top 24 bits."""
    z = seed.to(tl.uint64) * 0x9E3779B97F4A7C15 + (index.to(tl.uint64) + 1) * 0xBF58476D1CE4E5B9
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB
    z = z ^ (z >> 31)
    return (z >> 40).to(tl.float32) * 5.9604644775390625e-08


@triton.jit
def _bilinear_tap(dst, extent, size, ACC: tl.constexpr):
    scale = extent.to(ACC) / size
    src = tl.maximum(scale * (dst.to(ACC) + 0.5) - 0.5, 0.0)
    lo = tl.minimum(src.to(tl.int64), extent - 1)
    hi = lo + (lo < extent - 1).to(tl.int64)
    return lo, hi, src - lo.to(ACC)


@triton.jit
def _augment_kernel(img_ptr, box_ptr, flip_ptr, key_ptr, out_ptr, C, H, W, OH, OW, n, groups, noise_std,
                    NOISE: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = i < n
    x = i % OW
    y = (i // OW) % OH
    plane = i // (OH * OW)
    b = plane // C
    top = tl.minimum(tl.maximum(tl.load(box_ptr + 4 * b, mask=ok, other=0), 0), H - 1)
    left = tl.minimum(tl.maximum(tl.load(box_ptr + 4 * b + 1, mask=ok, other=0), 0), W - 1)
    h = tl.minimum(tl.maximum(tl.load(box_ptr + 4 * b + 2, mask=ok, other=1), 1), H - top)
    w = tl.minimum(tl.maximum(tl.load(box_ptr + 4 * b + 3, mask=ok, other=1), 1), W - left)
    flip = tl.load(flip_ptr + b, mask=ok, other=0) != 0
    y0, y1, wy = _bilinear_tap(y, h, OH, ACC)
    x0, x1, wx = _bilinear_tap(tl.where(flip, OW - 1 - x, x), w, OW, ACC)
    base = img_ptr + plane * H * W + top * W + left
    a = tl.load(base + y0 * W + x0, mask=ok, other=0.0).to(ACC)
    c = tl.load(base + y0 * W + x1, mask=ok, other=0.0).to(ACC)
    d = tl.load(base + y1 * W + x0, mask=ok, other=0.0).to(ACC)
    e = tl.load(base + y1 * W + x1, mask=ok, other=0.0).to(ACC)
    v = (1.0 - wy) * ((1.0 - wx) * a + wx * c) + wy * ((1.0 - wx) * d + wx * e)
    if NOISE:
        z0, z1, z2, z3 = _philox_normal4(key_ptr, i % groups)
        k = i // groups
        eps = tl.where(k == 0, z0, tl.where(k == 1, z1, tl.where(k == 2, z2, z3)))
        v += noise_std * eps.to(ACC)
    tl.store(out_ptr + i, v.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _drop_mask_kernel(x_ptr, out_ptr, n, columns, seed, p, PER_COLUMN: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = i < n
    index = i % columns if PER_COLUMN else i
    keep = _hash_uniform(seed, index) >= p
    v = tl.load(x_ptr + i, mask=ok, other=0.0)
    # x * 0 where dropped, as the reference: NaN and inf give NaN. Multiplied in fp32: Triton's
    # interpreter turns a bf16 NaN * 0 into 0.
    zeroed = (v.to(tl.float32) * 0.0).to(v.dtype)
    tl.store(out_ptr + i, tl.where(keep, v, zeroed), mask=ok)


def _acc(x):
    return tl.float64 if x.dtype == torch.float64 else tl.float32


def augment_images_fwd(images, boxes, flips, noise_std, seed, generator, out_height, out_width):
    images = images.contiguous()
    batch, channels, height, width = images.shape
    out = images.new_empty((batch, channels, out_height, out_width))
    n = out.numel()
    if n:
        key = _key(images, seed, generator) if noise_std else boxes
        _augment_kernel[(triton.cdiv(n, _BLOCK),)](
            images, boxes.to(torch.int64).contiguous(), flips.to(torch.uint8).contiguous(), key, out, channels,
            height, width, out_height, out_width, n, (n + 3) // 4, float(noise_std), NOISE=bool(noise_std),
            ACC=_acc(images), BLOCK=_BLOCK)
    return out


def _interpolation(start, extent, size, full, reverse, dtype):
    """[B, size, full] matrices of the bilinear resampling along one axis (the kernels' taps)."""
    lo, hi, w = _taps(extent, size, dtype)
    if reverse is not None:  # mirrored output: row x takes output row size - 1 - x's taps
        flip_idx = torch.arange(size - 1, -1, -1, device=lo.device)
        lo, hi, w = (torch.where(reverse[:, None], t[:, flip_idx], t) for t in (lo, hi, w))
    matrix = torch.zeros((start.shape[0], size, full), dtype=dtype, device=start.device)
    matrix.scatter_add_(2, (start[:, None] + lo)[..., None], (1 - w)[..., None])
    matrix.scatter_add_(2, (start[:, None] + hi)[..., None], w[..., None])
    return matrix


def augment_images_bwd(grad, boxes, flips, height, width):
    acc = torch.float64 if grad.dtype == torch.float64 else torch.float32
    out_height, out_width = grad.shape[2], grad.shape[3]
    top, left, h, w = boxes.to(torch.int64).unbind(1)
    rows = _interpolation(top, h, out_height, height, None, acc)
    cols = _interpolation(left, w, out_width, width, flips.to(torch.bool), acc)
    # out = R_y X R_x^T per plane, so grad_X = R_y^T G R_x
    grad_images = torch.matmul(torch.matmul(rows.transpose(1, 2)[:, None], grad.to(acc)), cols[:, None])
    return grad_images.to(grad.dtype)


def drop_mask_fwd(x, p, seed, per_column):
    x = x.contiguous()
    out = torch.empty_like(x)
    n = x.numel()
    if n:
        columns = x.shape[-1] if per_column else n
        _drop_mask_kernel[(triton.cdiv(n, _BLOCK),)](x, out, n, max(columns, 1), int(seed), float(p),
                                                     PER_COLUMN=bool(per_column), BLOCK=_BLOCK)
    return out


def ema_(targets, sources, momentum):
    torch._foreach_mul_(targets, momentum)
    torch._foreach_add_(targets, sources, alpha=1.0 - momentum)


register({
    "augment_images_fwd": augment_images_fwd,
    "augment_images_bwd": augment_images_bwd,
    "drop_mask_fwd": drop_mask_fwd,
    "ema_": ema_,
})
