"""Fused contrastive losses: NT-Xent (SimCLR / DCL / GRACE), InfoNCE (MoCo, SimCSE), CLIP, SigLIP.

Each public function validates its inputs, picks a backend (``sslfast.use_backend``) and calls
the registered core op (``torch.ops.sslfast.*`` for C++, ``torch.ops.sslfast_triton.*`` for
Triton). The core ops never build the N x M logits: they stream score tiles through an online
logsumexp and recompute the tiles in backward. Semantics: DESIGN.md and ``sslfast.reference``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _backend, _native
from ..reference import contrastive as reference
from . import _validate as check

__all__ = ["nt_xent", "info_nce", "clip_loss", "siglip_loss"]

# The C++ extension has CPU kernels for this family; on GPUs the family runs in Triton.
_NATIVE_DEVICES = _native.devices(has_cuda_kernel=False)


def _core_ops(backend):
    return torch.ops.sslfast if backend == "native" else torch.ops.sslfast_triton


def _kernel_input(backend, t):
    """The C++ CPU kernels compute in float32/float64: half inputs are widened for them, before
    normalization, so no half-precision rounding happens on the way in."""
    if backend == "native" and t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    return t.contiguous()


def nt_xent(z1, z2, temperature=0.5, *, normalize=True, exclude_positive=False):
    """SimCLR NT-Xent over the 2N views ``cat(z1, z2)``; a float32 (float64 for float64) scalar.

    Row i's positive is row (i + N) mod 2N; its denominator is every other row, positive
    included, unless ``exclude_positive=True`` (DCL). Mean over the 2N rows.
    """
    check.embeddings("z1", z1)
    check.embeddings("z2", z2)
    check.same_device_and_dtype([("z1", z1), ("z2", z2)])
    check.same_shape("z2", z2, "z1", z1)
    temperature = check.positive_float("temperature", temperature)
    backend = _backend.resolve("nt_xent", z1.device.type, _NATIVE_DEVICES)
    if backend == "reference":
        return reference.nt_xent(z1, z2, temperature, normalize=normalize,
                                 exclude_positive=bool(exclude_positive))
    z = torch.cat([_kernel_input(backend, z1), _kernel_input(backend, z2)], dim=0)
    if normalize:
        z = F.normalize(z, dim=1)
    loss, _ = _core_ops(backend).nt_xent_fwd(z.contiguous(), temperature, bool(exclude_positive))
    return loss


def info_nce(query, key, temperature=0.07, queue=None, *, normalize=True, in_batch_negatives=True):
    """InfoNCE: the positive of query i is key i; negatives are the other keys (when
    ``in_batch_negatives``) and every row of ``queue`` (MoCo; it gets no gradient)."""
    check.embeddings("query", query)
    check.embeddings("key", key)
    check.same_device_and_dtype([("query", query), ("key", key)])
    check.same_shape("key", key, "query", query)
    if queue is not None:
        check.embeddings("queue", queue)
        check.same_device_and_dtype([("query", query), ("queue", queue)])
        check.same_dim("queue", queue, "query", query)
    temperature = check.positive_float("temperature", temperature)
    backend = _backend.resolve("info_nce", query.device.type, _NATIVE_DEVICES)
    if backend == "reference":
        return reference.info_nce(query, key, temperature, queue, normalize=normalize,
                                  in_batch_negatives=bool(in_batch_negatives))
    query, key = _kernel_input(backend, query), _kernel_input(backend, key)
    if queue is not None:
        queue = _kernel_input(backend, queue.detach())
    if normalize:
        query, key = F.normalize(query, dim=1), F.normalize(key, dim=1)
        queue = None if queue is None else F.normalize(queue, dim=1)
    # MoCo on the C++ CPU kernel: fold the queue's share of dq into the forward pass when the
    # backward will need it (see _contrastive_schema).
    fold = (backend == "native" and queue is not None and not in_batch_negatives
            and torch.is_grad_enabled() and query.requires_grad)
    loss, _, _ = _core_ops(backend).info_nce_fwd(query.contiguous(), key.contiguous(), queue,
                                                 temperature, bool(in_batch_negatives), fold)
    return loss


def _check_pair(image, text, logit_scale, logit_bias, bias_required):
    check.embeddings("image", image)
    check.embeddings("text", text)
    check.same_device_and_dtype([("image", image), ("text", text)])
    check.same_shape("text", text, "image", image)
    check.scalar_tensor("logit_scale", logit_scale, "image", image)
    if logit_bias is None:
        if bias_required:
            raise TypeError("logit_bias must be a tensor, got None")
    else:
        check.scalar_tensor("logit_bias", logit_bias, "image", image)


def clip_loss(image, text, logit_scale, logit_bias=None):
    """open_clip ``ClipLoss``: (CE(image -> text) + CE(text -> image)) / 2 over
    logits = logit_scale * image @ text.T (+ logit_bias). ``logit_scale`` is already
    exponentiated and gets a gradient; no normalization inside."""
    _check_pair(image, text, logit_scale, logit_bias, bias_required=False)
    backend = _backend.resolve("clip_loss", image.device.type, _NATIVE_DEVICES)
    if backend == "reference":
        return reference.clip_loss(image, text, logit_scale, logit_bias)
    loss, _, _ = _core_ops(backend).clip_loss_fwd(
        _kernel_input(backend, image), _kernel_input(backend, text), logit_scale, logit_bias)
    return loss


def siglip_loss(image, text, logit_scale, logit_bias):
    """open_clip ``SigLipLoss``: -sum(logsigmoid(z * (s * x_i . y_j + b))) / N with
    z = +1 on the diagonal, -1 elsewhere."""
    _check_pair(image, text, logit_scale, logit_bias, bias_required=True)
    backend = _backend.resolve("siglip_loss", image.device.type, _NATIVE_DEVICES)
    if backend == "reference":
        return reference.siglip_loss(image, text, logit_scale, logit_bias)
    # On the C++ CPU kernel the forward also returns the gradients when one is needed (one pass
    # over the score tiles instead of two; see _contrastive_schema).
    with_grads = backend == "native" and torch.is_grad_enabled() and any(
        t.requires_grad for t in (image, text, logit_scale, logit_bias))
    return _core_ops(backend).siglip_loss_fwd(
        _kernel_input(backend, image), _kernel_input(backend, text), logit_scale, logit_bias, with_grads)[0]
