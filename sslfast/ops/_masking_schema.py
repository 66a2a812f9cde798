"""Schemas, fake kernels and autograd formulas of the masking core ops.

Both backends (``sslfast::`` from ``csrc/cpu/masking.cpp``, ``sslfast_triton::`` from
``sslfast/triton/masking.py``) share these, so they differ only in their kernels.

Core-op contract:
  * ``random_masking_fwd`` takes the noise it sorts (the public op draws it from the generator),
    so every backend and the reference agree exactly given the same noise.
  * ids_restore values outside [0, len_keep) select the mask token (unshuffle) or a zero
    gradient: any index tensor is safe to read; the permutation check lives in the public op.
  * ``masked_patch_loss_fwd`` returns a float32 scalar (float64 for float64 inputs); its
    backward gives a gradient to ``pred`` only (targets are data, the mask is not learned).
"""

from __future__ import annotations

import torch

from . import _registry

SCHEMAS = {
    "random_masking_fwd": "(Tensor x, Tensor noise, Tensor? pos_embed, int len_keep, "
                          "int num_prefix_tokens, bool int32_indices) -> (Tensor, Tensor, Tensor)",
    "random_masking_bwd": "(Tensor grad_visible, Tensor ids_restore, int num_prefix_tokens) -> Tensor",
    "unshuffle_fwd": "(Tensor x_visible, Tensor ids_restore, Tensor mask_token, Tensor? pos_embed, "
                     "int num_prefix_tokens) -> Tensor",
    "unshuffle_bwd": "(Tensor grad_out, Tensor ids_restore, int len_keep, int num_prefix_tokens) "
                     "-> (Tensor, Tensor)",
    "masked_patch_loss_fwd": "(Tensor pred, Tensor imgs, Tensor mask, int patch_size, bool norm_pix, "
                             "bool l1) -> Tensor",
    "masked_patch_loss_bwd": "(Tensor grad_loss, Tensor pred, Tensor imgs, Tensor mask, int patch_size, "
                             "bool norm_pix, bool l1) -> Tensor",
}


def loss_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _fakes():
    def random_masking_fwd(x, noise, pos_embed, len_keep, prefix, int32_indices):
        n, _, d = x.shape
        length = noise.shape[1]
        return (x.new_empty((n, prefix + len_keep, d)), x.new_empty((n, length)),
                x.new_empty((n, length), dtype=torch.int32 if int32_indices else torch.int64))

    def random_masking_bwd(grad_visible, ids_restore, prefix):
        n, _, d = grad_visible.shape
        return grad_visible.new_empty((n, prefix + ids_restore.shape[1], d))

    def unshuffle_fwd(x_visible, ids_restore, mask_token, pos_embed, prefix):
        n, _, d = x_visible.shape
        return x_visible.new_empty((n, prefix + ids_restore.shape[1], d))

    def unshuffle_bwd(grad_out, ids_restore, len_keep, prefix):
        n, _, d = grad_out.shape
        return grad_out.new_empty((n, prefix + len_keep, d)), grad_out.new_empty((d,))

    return {
        "random_masking_fwd": random_masking_fwd,
        "random_masking_bwd": random_masking_bwd,
        "unshuffle_fwd": unshuffle_fwd,
        "unshuffle_bwd": unshuffle_bwd,
        "masked_patch_loss_fwd": lambda pred, imgs, mask, p, norm_pix, l1: pred.new_empty(
            (), dtype=loss_dtype(pred)),
        "masked_patch_loss_bwd": lambda g, pred, imgs, mask, p, norm_pix, l1: torch.empty_like(pred),
    }


def _autograd(ops):
    def random_masking_setup(ctx, inputs, output):
        x, noise, pos_embed, len_keep, prefix, int32_indices = inputs
        ctx.mark_non_differentiable(output[1], output[2])
        ctx.save_for_backward(output[2])
        ctx.prefix = prefix
        ctx.pos_shape = None if pos_embed is None else pos_embed.shape
        ctx.pos_dtype = None if pos_embed is None else pos_embed.dtype

    def random_masking_backward(ctx, grad_visible, _grad_mask, _grad_ids):
        (ids_restore,) = ctx.saved_tensors
        grad_x = ops.random_masking_bwd(grad_visible.contiguous(), ids_restore, ctx.prefix)
        grad_pos = None
        if ctx.pos_shape is not None and ctx.needs_input_grad[2]:
            grad_pos = grad_x.sum(dim=0).reshape(ctx.pos_shape).to(ctx.pos_dtype)
        return grad_x, None, grad_pos, None, None, None

    def unshuffle_setup(ctx, inputs, output):
        x_visible, ids_restore, mask_token, pos_embed, prefix = inputs
        ctx.save_for_backward(ids_restore)
        ctx.len_keep = x_visible.shape[1] - prefix
        ctx.prefix = prefix
        ctx.token_shape, ctx.token_dtype = mask_token.shape, mask_token.dtype
        ctx.pos_shape = None if pos_embed is None else pos_embed.shape
        ctx.pos_dtype = None if pos_embed is None else pos_embed.dtype

    def unshuffle_backward(ctx, grad_out):
        (ids_restore,) = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_visible, grad_token = ops.unshuffle_bwd(grad_out, ids_restore, ctx.len_keep, ctx.prefix)
        grad_token = grad_token.reshape(ctx.token_shape).to(ctx.token_dtype)
        grad_pos = None
        if ctx.pos_shape is not None and ctx.needs_input_grad[3]:
            grad_pos = grad_out.sum(dim=0).reshape(ctx.pos_shape).to(ctx.pos_dtype)
        return grad_visible, None, grad_token, grad_pos, None

    def loss_setup(ctx, inputs, output):
        pred, imgs, mask, patch_size, norm_pix, l1 = inputs
        ctx.save_for_backward(pred, imgs, mask)
        ctx.args = (patch_size, norm_pix, l1)

    def loss_backward(ctx, grad_loss):
        pred, imgs, mask = ctx.saved_tensors
        grad_pred = ops.masked_patch_loss_bwd(grad_loss, pred, imgs, mask, *ctx.args)
        return grad_pred, None, None, None, None, None

    return {
        "random_masking_fwd": (random_masking_setup, random_masking_backward),
        "unshuffle_fwd": (unshuffle_setup, unshuffle_backward),
        "masked_patch_loss_fwd": (loss_setup, loss_backward),
    }


def register_fakes_and_autograd(namespace: str) -> None:
    """Register fake kernels for every op and autograd for every forward op of ``namespace``."""
    _registry.register_fakes_and_autograd(namespace, _fakes(), _autograd)
