"""Fused patch / token masking for masked modeling (MAE, SimMIM, VideoMAE): ``random_masking``,
``unshuffle`` and ``masked_patch_loss``.

Each function checks its arguments, asks the op table for the backend and makes one call of the
registered op (autograd in csrc/autograd/masking.cpp). The randomness is drawn from a
``torch.Generator`` on the tensor's device first, so a seed fixes the masks and every backend sorts
the same noise. No host sync, no boolean indexing: every output shape follows from the input
shapes and Python scalars. The mask generators (BEiT, VideoMAE, SimMIM, wav2vec2, BERT, GraphMAE)
are compositions of torch ops: ``sslfast.functional.masks``.

Set ``SSLFAST_DEBUG=1`` (or ``sslfast.ops.masking.DEBUG = True``) to check that ``ids_restore``
is a permutation in ``unshuffle``: that check reads values and syncs, so it is off by default.
"""

from __future__ import annotations

import os

import torch

from .. import _dispatch
from ..reference import masking as reference
from . import _validate as check

__all__ = ["random_masking", "unshuffle", "masked_patch_loss"]

DEBUG = os.environ.get("SSLFAST_DEBUG", "0") == "1"


def _pos_embed(pos_embed, tokens, x, x_name):
    if pos_embed is None:
        return None
    check.tensor("pos_embed", pos_embed)
    check.same_device("pos_embed", pos_embed, x_name, x)
    d = x.shape[2]
    if tuple(pos_embed.shape) not in ((1, tokens, d), (tokens, d)):
        raise ValueError(f"pos_embed must have shape (1, {tokens}, {d}) or ({tokens}, {d}), "
                         f"got {tuple(pos_embed.shape)}")
    return pos_embed


def _check_permutation(ids_restore):
    """Debug mode only (syncs): every row of ids_restore is a permutation of 0..L-1."""
    length = ids_restore.shape[1]
    expected = torch.arange(length, device=ids_restore.device, dtype=ids_restore.dtype)
    if not bool((ids_restore.sort(dim=1).values == expected).all()):
        raise ValueError("ids_restore must be a permutation of 0..L-1 in every row")


def random_masking(x, mask_ratio, *, generator=None, pos_embed=None, num_prefix_tokens=0,
                   noise=None, index_dtype=torch.int64):
    """MAE ``random_masking``: keep ``int(L * (1 - mask_ratio))`` random patch tokens per sample.

    ``x``: [N, P + L, D] with ``num_prefix_tokens`` = P leading (cls / register) tokens that are
    always kept, first. Returns ``(x_visible [N, P + len_keep, D], mask [N, L] (1 = masked,
    x.dtype), ids_restore [N, L] (index_dtype))``. ``pos_embed`` ([1, P + L, D] or [P + L, D])
    is added on the fly. ``noise`` ([N, L] float) replaces the draw from ``generator``.
    Under ``torch.compile(fullgraph=True)`` use the default generator or pass ``noise``: dynamo
    cannot trace ``torch.rand(generator=...)``.
    """
    check.tensor("x", x, ndim=3)
    mask_ratio = check.fraction("mask_ratio", mask_ratio)
    n, tokens, _ = x.shape
    prefix = check.integer("num_prefix_tokens", num_prefix_tokens, 0, max(tokens - 1, 0))
    length = tokens - prefix
    if length < 1:
        raise ValueError(f"x must have at least one patch token after {prefix} prefix tokens, "
                         f"got shape {tuple(x.shape)}")
    keep = reference.len_keep(length, mask_ratio)
    if keep < 1:
        raise ValueError(f"mask_ratio {mask_ratio} keeps zero of the {length} patch tokens")
    if index_dtype not in check.INDEX_DTYPES:
        raise TypeError(f"index_dtype must be torch.int32 or torch.int64, got {index_dtype}")
    pos_embed = _pos_embed(pos_embed, tokens, x, "x")
    if noise is None:
        noise = reference.draw_noise(n, length, device=x.device, generator=check.generator("generator", generator, x))
    else:
        check.tensor("noise", noise, ndim=2)
        check.same_device("noise", noise, "x", x)
        if noise.shape != (n, length):
            raise ValueError(f"noise must have shape ({n}, {length}), got {tuple(noise.shape)}")
        if noise.dtype not in (torch.float32, torch.float64):
            noise = noise.float()
    ops = _dispatch.ops_for("random_masking", x)
    if ops is None:
        return reference.random_masking(x, mask_ratio, pos_embed=pos_embed, num_prefix_tokens=prefix,
                                        noise=noise, index_dtype=index_dtype)
    return ops.random_masking(x, noise, pos_embed, keep, prefix, index_dtype == torch.int32)


def unshuffle(x_visible, ids_restore, mask_token, *, pos_embed=None, num_prefix_tokens=0):
    """MAE decoder input in one pass: [N, P + L, D], visible tokens back at their original
    positions, ``mask_token`` (D elements, e.g. [1, 1, D]) elsewhere, prefix tokens first,
    ``pos_embed`` added to every token. Gradients reach x_visible, mask_token and pos_embed."""
    check.tensor("x_visible", x_visible, ndim=3)
    check.tensor("ids_restore", ids_restore, ndim=2, float_dtype=False)
    if ids_restore.dtype not in check.INDEX_DTYPES:
        raise TypeError(f"ids_restore must be int32 or int64, got dtype {ids_restore.dtype}")
    check.same_device("ids_restore", ids_restore, "x_visible", x_visible)
    n, rows, d = x_visible.shape
    if ids_restore.shape[0] != n:
        raise ValueError(f"ids_restore must have {n} rows like x_visible, got {tuple(ids_restore.shape)}")
    prefix = check.integer("num_prefix_tokens", num_prefix_tokens, 0, rows)
    length = ids_restore.shape[1]
    if not 0 < rows - prefix <= length:
        raise ValueError(f"x_visible must hold between 1 and {length} patch tokens after {prefix} "
                         f"prefix tokens, got shape {tuple(x_visible.shape)}")
    check.tensor("mask_token", mask_token)
    check.same_device("mask_token", mask_token, "x_visible", x_visible)
    if mask_token.numel() != d:
        raise ValueError(f"mask_token must have D = {d} elements, got shape {tuple(mask_token.shape)}")
    pos_embed = _pos_embed(pos_embed, prefix + length, x_visible, "x_visible")
    if DEBUG:
        _check_permutation(ids_restore)
    ops = _dispatch.ops_for("unshuffle", x_visible)
    if ops is None:
        return reference.unshuffle(x_visible, ids_restore, mask_token, pos_embed=pos_embed,
                                   num_prefix_tokens=prefix)
    return ops.unshuffle(x_visible, ids_restore, mask_token, pos_embed, prefix)


def masked_patch_loss(pred, imgs, mask, patch_size, *, norm_pix=True, loss="l2"):
    """MAE ``forward_loss`` (``loss="l2"``) or SimMIM's L1 (``loss="l1"``), patchify fused in.

    ``pred``: [N, L, p * p * C] in MAE's (p_row, p_col, c) order; ``imgs``: [N, C, H, W];
    ``mask``: [N, L], 1 where the patch was masked (only those are read). Returns a float32
    scalar (float64 for float64 inputs); the gradient goes to ``pred``.
    """
    check.tensor("pred", pred, ndim=3)
    check.tensor("imgs", imgs, ndim=4)
    check.tensor("mask", mask, ndim=2, float_dtype=False)
    check.same_device_and_dtype("imgs", imgs, "pred", pred)
    check.same_device("mask", mask, "pred", pred)
    if loss not in ("l2", "l1"):
        raise ValueError(f"loss must be 'l2' or 'l1', got {loss!r}")
    p = check.integer("patch_size", patch_size, 1)
    n, c, h, w = imgs.shape
    if h % p or w % p:
        raise ValueError(f"imgs size {h} x {w} is not divisible by patch_size {p}")
    patches, features = (h // p) * (w // p), p * p * c
    if pred.shape != (n, patches, features):
        raise ValueError(f"pred must have shape ({n}, {patches}, {features}) for imgs "
                         f"{tuple(imgs.shape)} and patch_size {p}, got {tuple(pred.shape)}")
    if mask.shape != (n, patches):
        raise ValueError(f"mask must have shape ({n}, {patches}), got {tuple(mask.shape)}")
    ops = _dispatch.ops_for("masked_patch_loss", pred)
    if ops is None:
        out = reference.masked_patch_loss(pred, imgs, mask.to(pred.dtype), p, norm_pix=norm_pix, loss=loss)
        return out.to(torch.float64 if pred.dtype == torch.float64 else torch.float32)
    return ops.masked_patch_loss(pred, imgs, mask, p, bool(norm_pix), loss == "l1")
