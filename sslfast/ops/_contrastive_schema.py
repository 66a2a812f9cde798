"""Schemas, fake kernels and autograd formulas of the contrastive core ops.

Every backend that implements these ops (``sslfast::`` from the C++ extension, ``sslfast_triton::``
from ``sslfast/triton/contrastive.py``) uses the same schema and gets the same fake + autograd
registration from here, so the backends differ only in their kernels.

Core-op contract (inputs already normalized by the public functions when ``normalize=True``):
  * losses and per-row logsumexps come back in the accumulation dtype: float64 for float64
    inputs, float32 otherwise; gradients in the dtype of the input they belong to.
  * ``*_bwd`` ops take the saved logsumexps and recompute score tiles; never N x M memory.
  * ``info_nce_fwd(..., fold_queue_grad=True)`` (MoCo: a queue, no in-batch negatives) also
    returns ``folded`` = sum_m P_im queue_m [N, D], accumulated in the forward's pass over the
    queue, so that ``info_nce_bwd`` needs no second pass (three score-GEMM passes become two);
    otherwise ``folded`` is empty and the backward recomputes. Only the C++ CPU kernel folds: the
    public function asks for it there, when the query needs a gradient.
  * ``siglip_loss_fwd(..., with_grads=True)`` also returns the four gradients for an upstream
    gradient of 1 (SigLIP has no normalizer, so one pass over the tiles gives loss and gradients);
    the backward scales them and never runs ``siglip_loss_bwd``. Empty [0] tensors otherwise. Only
    the C++ CPU kernel does it; the public function asks there when an input needs a gradient.
"""

from __future__ import annotations

import torch

from . import _registry

SCHEMAS = {
    "nt_xent_fwd": "(Tensor z, float temperature, bool exclude_positive) -> (Tensor, Tensor)",
    "nt_xent_bwd": "(Tensor grad_loss, Tensor z, Tensor lse, float temperature, "
                   "bool exclude_positive) -> Tensor",
    "info_nce_fwd": "(Tensor query, Tensor key, Tensor? queue, float temperature, "
                    "bool in_batch_negatives, bool fold_queue_grad) -> (Tensor, Tensor, Tensor)",
    "info_nce_bwd": "(Tensor grad_loss, Tensor query, Tensor key, Tensor? queue, Tensor lse, "
                    "Tensor folded, float temperature, bool in_batch_negatives) -> (Tensor, Tensor)",
    "clip_loss_fwd": "(Tensor image, Tensor text, Tensor logit_scale, Tensor? logit_bias) "
                     "-> (Tensor, Tensor, Tensor)",
    "clip_loss_bwd": "(Tensor grad_loss, Tensor image, Tensor text, Tensor logit_scale, "
                     "Tensor? logit_bias, Tensor row_lse, Tensor col_lse) "
                     "-> (Tensor, Tensor, Tensor, Tensor)",
    "siglip_loss_fwd": "(Tensor image, Tensor text, Tensor logit_scale, Tensor logit_bias, bool with_grads) "
                       "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    "siglip_loss_bwd": "(Tensor grad_loss, Tensor image, Tensor text, Tensor logit_scale, "
                       "Tensor logit_bias) -> (Tensor, Tensor, Tensor, Tensor)",
}


def acc_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _scalar(like):
    return like.new_empty((), dtype=acc_dtype(like))


def _rows(like, n):
    return like.new_empty((n,), dtype=acc_dtype(like))


def _fakes():
    return {
        "nt_xent_fwd": lambda z, temperature, exclude_positive: (_scalar(z), _rows(z, z.shape[0])),
        "nt_xent_bwd": lambda g, z, lse, temperature, exclude_positive: torch.empty_like(z),
        "info_nce_fwd": lambda q, k, queue, temperature, in_batch, fold: (
            _scalar(q), _rows(q, q.shape[0]),
            q.new_empty(tuple(q.shape) if fold else (0,), dtype=acc_dtype(q))),
        "info_nce_bwd": lambda g, q, k, queue, lse, folded, temperature, in_batch: (
            torch.empty_like(q), torch.empty_like(k)),
        "clip_loss_fwd": lambda image, text, scale, bias: (
            _scalar(image), _rows(image, image.shape[0]), _rows(image, text.shape[0])),
        "clip_loss_bwd": lambda g, image, text, scale, bias, row_lse, col_lse: (
            torch.empty_like(image), torch.empty_like(text), torch.empty_like(scale),
            torch.empty_like(scale) if bias is None else torch.empty_like(bias)),
        "siglip_loss_fwd": lambda image, text, scale, bias, with_grads: (_scalar(image), *(
            (torch.empty_like(image), torch.empty_like(text), torch.empty_like(scale), torch.empty_like(bias))
            if with_grads else tuple(image.new_empty((0,)) for _ in range(4)))),
        "siglip_loss_bwd": lambda g, image, text, scale, bias: (
            torch.empty_like(image), torch.empty_like(text), torch.empty_like(scale),
            torch.empty_like(bias)),
    }


def _autograd(ops):
    """(setup_context, backward) per forward op, calling the matching ``*_bwd`` op of ``ops``."""

    def nt_xent_setup(ctx, inputs, output):
        z, temperature, exclude_positive = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(z, output[1])
        ctx.args = (temperature, exclude_positive)

    def nt_xent_backward(ctx, grad_loss, _grad_lse):
        z, lse = ctx.saved_tensors
        return ops.nt_xent_bwd(grad_loss, z, lse, *ctx.args), None, None

    def info_nce_setup(ctx, inputs, output):
        query, key, queue, temperature, in_batch, _fold = inputs
        ctx.mark_non_differentiable(output[1], output[2])
        ctx.save_for_backward(query, key, queue, output[1], output[2])
        ctx.args = (temperature, in_batch)

    def info_nce_backward(ctx, grad_loss, _grad_lse, _grad_folded):
        query, key, queue, lse, folded = ctx.saved_tensors
        grad_query, grad_key = ops.info_nce_bwd(grad_loss, query, key, queue, lse, folded, *ctx.args)
        return grad_query, grad_key, None, None, None, None

    def clip_setup(ctx, inputs, output):
        image, text, scale, bias = inputs
        ctx.mark_non_differentiable(output[1], output[2])
        ctx.save_for_backward(image, text, scale, bias, output[1], output[2])

    def clip_backward(ctx, grad_loss, _grad_row, _grad_col):
        image, text, scale, bias, row_lse, col_lse = ctx.saved_tensors
        grads = ops.clip_loss_bwd(grad_loss, image, text, scale, bias, row_lse, col_lse)
        return grads[0], grads[1], grads[2], (None if bias is None else grads[3])

    def siglip_setup(ctx, inputs, output):
        image, text, scale, bias, _with_grads = inputs
        ctx.mark_non_differentiable(*output[1:])
        ctx.from_forward = output[1].numel() > 0  # gradients for an upstream 1, from the forward
        ctx.save_for_backward(*(output[1:] if ctx.from_forward else (image, text, scale, bias)))

    def siglip_backward(ctx, grad_loss, *_unused):
        if ctx.from_forward:
            return tuple(grad_loss.to(g.dtype) * g for g in ctx.saved_tensors) + (None,)
        return tuple(ops.siglip_loss_bwd(grad_loss, *ctx.saved_tensors)) + (None,)

    return {
        "nt_xent_fwd": (nt_xent_setup, nt_xent_backward),
        "info_nce_fwd": (info_nce_setup, info_nce_backward),
        "clip_loss_fwd": (clip_setup, clip_backward),
        "siglip_loss_fwd": (siglip_setup, siglip_backward),
    }


def register_fakes_and_autograd(namespace: str) -> None:
    """Register fake kernels for every op and autograd for every forward op of ``namespace``."""
    _registry.register_fakes_and_autograd(namespace, _fakes(), _autograd)
