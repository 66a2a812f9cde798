"""Fakes of the masking ops (kernels: csrc/cpu/masking.cpp, sslfast/triton/masking.py)."""

from __future__ import annotations

import torch

from .common import empty, scalar


def fakes(widen: bool) -> dict:
    def random_masking(x, noise, pos_embed, len_keep, prefix, int32_indices):
        n, _, d = x.shape
        length = noise.shape[1]
        return (x.new_empty((n, prefix + len_keep, d)), x.new_empty((n, length)),
                x.new_empty((n, length), dtype=torch.int32 if int32_indices else torch.int64))

    def random_masking_bwd(grad_visible, ids_restore, prefix):
        n, _, d = grad_visible.shape
        return grad_visible.new_empty((n, prefix + ids_restore.shape[1], d))

    def unshuffle(x_visible, ids_restore, mask_token, pos_embed, prefix):
        n, _, d = x_visible.shape
        return x_visible.new_empty((n, prefix + ids_restore.shape[1], d))

    def unshuffle_bwd(grad_out, ids_restore, len_keep, prefix):
        n, _, d = grad_out.shape
        return grad_out.new_empty((n, prefix + len_keep, d)), grad_out.new_empty((d,))

    def loss(pred, imgs, mask, p, norm_pix, l1):
        return scalar(pred)

    return {
        "random_masking": random_masking,
        "unshuffle": unshuffle,
        "masked_patch_loss": loss,
        "random_masking_fwd": random_masking,
        "random_masking_bwd": random_masking_bwd,
        "unshuffle_fwd": unshuffle,
        "unshuffle_bwd": unshuffle_bwd,
        "masked_patch_loss_fwd": loss,
        "masked_patch_loss_bwd": lambda g, pred, imgs, mask, p, norm_pix, l1: empty(pred),
    }
