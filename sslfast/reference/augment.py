"""Eager definitions of the augmentation ops: the spec the fused kernels are tested against.

``augment_images``: per sample, the box (top, left, height, width) of the image resampled to
out_height x out_width exactly as ``F.interpolate(crop, (out_height, out_width), mode="bilinear",
align_corners=False)`` (no
antialias), mirrored horizontally where ``flips``, plus ``noise_std`` times the in-kernel normal
stream (``philox_normal_like``). ``drop_mask``: x with entries (or columns) zeroed where the
counter-based uniform of their index is below p (``random.keep_mask``), not rescaled.
"""

from __future__ import annotations

import torch

from .diffusion import philox_normal_like
from .random import keep_mask


def _taps(extent, size, dtype):
    """PyTorch's bilinear source taps (align_corners=False) of output 0..size-1 over an input of
    ``extent`` [B] pixels: (lo, hi, weight of hi), each [B, size]."""
    scale = extent.to(dtype) / size
    dst = torch.arange(size, device=extent.device, dtype=dtype)
    src = (scale[:, None] * (dst + 0.5) - 0.5).clamp_min(0)
    lo = torch.minimum(src.to(torch.int64), extent[:, None] - 1)
    hi = lo + (lo < extent[:, None] - 1).to(torch.int64)
    return lo, hi, src - lo.to(dtype)


def augment_images(images, boxes, flips, noise_std=0.0, seed=0, out_height=None, out_width=None):
    batch, channels, height, width = images.shape
    out_height = height if out_height is None else out_height
    out_width = width if out_width is None else out_width
    compute = torch.float64 if images.dtype == torch.float64 else torch.float32
    x = images.to(compute)
    boxes = boxes.to(torch.int64)
    top, left, h, w = boxes.unbind(1)
    row_lo, row_hi, row_w = _taps(h, out_height, compute)
    col_lo, col_hi, col_w = _taps(w, out_width, compute)
    mirrored = flips.to(torch.bool)[:, None]
    reverse = torch.arange(out_width - 1, -1, -1, device=images.device)
    col_lo, col_hi, col_w = (torch.where(mirrored, t[:, reverse], t) for t in (col_lo, col_hi, col_w))
    b = torch.arange(batch, device=images.device)[:, None, None]

    def at(rows, cols):  # [B, out_height, out_width, C]
        return x.permute(0, 2, 3, 1)[b, (top[:, None] + rows)[:, :, None], (left[:, None] + cols)[:, None, :]]

    w1 = col_w[:, None, :, None]
    h1 = row_w[:, :, None, None]
    top_row = (1 - w1) * at(row_lo, col_lo) + w1 * at(row_lo, col_hi)
    bottom_row = (1 - w1) * at(row_hi, col_lo) + w1 * at(row_hi, col_hi)
    out = ((1 - h1) * top_row + h1 * bottom_row).permute(0, 3, 1, 2)
    if noise_std:
        out = out + noise_std * philox_normal_like(out, seed)
    return out.to(images.dtype)


def drop_mask(x, p, seed, per_column=False):
    count = x.shape[-1] if per_column else x.numel()
    keep = keep_mask(seed, count, float(torch.tensor(p, dtype=torch.float32)), device=x.device)
    return x * (keep if per_column else keep.reshape(x.shape)).to(x.dtype)
