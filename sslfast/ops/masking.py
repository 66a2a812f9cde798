"""Fused patch / token masking for masked modeling: MAE, SimMIM, VideoMAE, BERT, wav2vec2, GraphMAE.

``random_masking``, ``unshuffle`` and ``masked_patch_loss`` validate, pick a backend and call a
registered core op (``torch.ops.sslfast.*`` C++, ``torch.ops.sslfast_triton.*`` Triton); the
randomness is drawn from a ``torch.Generator`` on the tensor's device first, so a seed fixes the
masks and every backend sorts the same noise. No host sync, no boolean indexing: every output
shape follows from the input shapes and Python scalars.

The mask generators (``block_mask``, ``tube_mask``, ``simmim_mask``, ``span_mask``, ``bert_mask_tokens``,
``node_mask``) are sync-free compositions of torch ops with static shapes (no fused kernel yet).

Set ``SSLFAST_DEBUG=1`` (or ``sslfast.ops.masking.DEBUG = True``) to check that ``ids_restore``
is a permutation in ``unshuffle``: that check reads values and syncs, so it is off by default.
"""

from __future__ import annotations

import math
import numbers
import os

import torch

from .. import _backend, _native
from ..reference import masking as reference
from . import _validate as check
from ._masking_schema import loss_dtype

__all__ = ["random_masking", "unshuffle", "masked_patch_loss", "block_mask", "tube_mask", "simmim_mask",
           "span_mask", "bert_mask_tokens", "node_mask"]

_NATIVE_DEVICES = _native.devices(has_cuda_kernel=False)
DEBUG = os.environ.get("SSLFAST_DEBUG", "0") == "1"
INDEX_DTYPES = (torch.int32, torch.int64)


def _core_ops(backend):
    return torch.ops.sslfast if backend == "native" else torch.ops.sslfast_triton


# ---------------------------------------------------------------------------------- validation


def _ratio(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return float(value)


def _int(name, value, low, high=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def _same_device(name, value, like_name, like):
    if value.device != like.device:
        raise ValueError(f"{name} is on {value.device} but {like_name} is on {like.device}")


def _pos_embed(pos_embed, tokens, x, x_name):
    if pos_embed is None:
        return None
    check.tensor("pos_embed", pos_embed)
    _same_device("pos_embed", pos_embed, x_name, x)
    d = x.shape[2]
    if tuple(pos_embed.shape) not in ((1, tokens, d), (tokens, d)):
        raise ValueError(f"pos_embed must have shape (1, {tokens}, {d}) or ({tokens}, {d}), "
                         f"got {tuple(pos_embed.shape)}")
    return pos_embed


def _generator(generator, device):
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != torch.device(device).type:
            raise ValueError(f"generator is on {generator.device} but the input is on {device}")
    return generator


def _check_permutation(ids_restore):
    """Debug mode only (syncs): every row of ids_restore is a permutation of 0..L-1."""
    length = ids_restore.shape[1]
    expected = torch.arange(length, device=ids_restore.device, dtype=ids_restore.dtype)
    if not bool((ids_restore.sort(dim=1).values == expected).all()):
        raise ValueError("ids_restore must be a permutation of 0..L-1 in every row")


# ---------------------------------------------------------------------------------- MAE ops


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
    mask_ratio = _ratio("mask_ratio", mask_ratio)
    n, tokens, d = x.shape
    prefix = _int("num_prefix_tokens", num_prefix_tokens, 0, tokens - 1 if tokens else 0)
    length = tokens - prefix
    if length < 1:
        raise ValueError(f"x must have at least one patch token after {prefix} prefix tokens, "
                         f"got shape {tuple(x.shape)}")
    keep = reference.len_keep(length, mask_ratio)
    if keep < 1:
        raise ValueError(f"mask_ratio {mask_ratio} keeps zero of the {length} patch tokens")
    if index_dtype not in INDEX_DTYPES:
        raise TypeError(f"index_dtype must be torch.int32 or torch.int64, got {index_dtype}")
    pos_embed = _pos_embed(pos_embed, tokens, x, "x")
    if noise is None:
        noise = reference.draw_noise(n, length, device=x.device,
                                     generator=_generator(generator, x.device))
    else:
        check.tensor("noise", noise, ndim=2)
        _same_device("noise", noise, "x", x)
        if tuple(noise.shape) != (n, length):
            raise ValueError(f"noise must have shape ({n}, {length}), got {tuple(noise.shape)}")
    backend = _backend.resolve("random_masking", x.device.type, _NATIVE_DEVICES)
    if backend == "reference":
        return reference.random_masking(x, mask_ratio, pos_embed=pos_embed, num_prefix_tokens=prefix,
                                        noise=noise, index_dtype=index_dtype)
    if noise.dtype not in (torch.float32, torch.float64):
        noise = noise.float()
    return _core_ops(backend).random_masking_fwd(
        x.contiguous(), noise.contiguous(), pos_embed, keep, prefix, index_dtype == torch.int32)


def unshuffle(x_visible, ids_restore, mask_token, *, pos_embed=None, num_prefix_tokens=0):
    """MAE decoder input in one pass: [N, P + L, D], visible tokens back at their original
    positions, ``mask_token`` (D elements, e.g. [1, 1, D]) elsewhere, prefix tokens first,
    ``pos_embed`` added to every token. Gradients reach x_visible, mask_token and pos_embed."""
    check.tensor("x_visible", x_visible, ndim=3)
    check.tensor("ids_restore", ids_restore, ndim=2, float_dtype=False)
    if ids_restore.dtype not in INDEX_DTYPES:
        raise TypeError(f"ids_restore must be int32 or int64, got dtype {ids_restore.dtype}")
    _same_device("ids_restore", ids_restore, "x_visible", x_visible)
    n, rows, d = x_visible.shape
    if ids_restore.shape[0] != n:
        raise ValueError(f"ids_restore must have {n} rows like x_visible, got {tuple(ids_restore.shape)}")
    prefix = _int("num_prefix_tokens", num_prefix_tokens, 0, rows)
    length = ids_restore.shape[1]
    if not 0 < rows - prefix <= length:
        raise ValueError(f"x_visible must hold between 1 and {length} patch tokens after {prefix} "
                         f"prefix tokens, got shape {tuple(x_visible.shape)}")
    check.tensor("mask_token", mask_token)
    _same_device("mask_token", mask_token, "x_visible", x_visible)
    if mask_token.numel() != d:
        raise ValueError(f"mask_token must have D = {d} elements, got shape {tuple(mask_token.shape)}")
    pos_embed = _pos_embed(pos_embed, prefix + length, x_visible, "x_visible")
    if DEBUG:
        _check_permutation(ids_restore)
    backend = _backend.resolve("unshuffle", x_visible.device.type, _NATIVE_DEVICES)
    if backend == "reference":
        return reference.unshuffle(x_visible, ids_restore, mask_token, pos_embed=pos_embed,
                                   num_prefix_tokens=prefix)
    if mask_token.dtype != x_visible.dtype:
        mask_token = mask_token.to(x_visible.dtype)
    return _core_ops(backend).unshuffle_fwd(x_visible.contiguous(), ids_restore.contiguous(),
                                            mask_token, pos_embed, prefix)


def masked_patch_loss(pred, imgs, mask, patch_size, *, norm_pix=True, loss="l2"):
    """MAE ``forward_loss`` (``loss="l2"``) or SimMIM's L1 (``loss="l1"``), patchify fused in.

    ``pred``: [N, L, p * p * C] in MAE's (p_row, p_col, c) order; ``imgs``: [N, C, H, W];
    ``mask``: [N, L], 1 where the patch was masked (only those are read). Returns a float32
    scalar (float64 for float64 inputs); the gradient goes to ``pred``.
    """
    check.tensor("pred", pred, ndim=3)
    check.tensor("imgs", imgs, ndim=4)
    check.tensor("mask", mask, ndim=2, float_dtype=False)
    check.same_device_and_dtype([("pred", pred), ("imgs", imgs)])
    _same_device("mask", mask, "pred", pred)
    if loss not in ("l2", "l1"):
        raise ValueError(f"loss must be 'l2' or 'l1', got {loss!r}")
    p = _int("patch_size", patch_size, 1)
    n, c, h, w = imgs.shape
    if h % p or w % p:
        raise ValueError(f"imgs size {h} x {w} is not divisible by patch_size {p}")
    patches, features = (h // p) * (w // p), p * p * c
    if tuple(pred.shape) != (n, patches, features):
        raise ValueError(f"pred must have shape ({n}, {patches}, {features}) for imgs "
                         f"{tuple(imgs.shape)} and patch_size {p}, got {tuple(pred.shape)}")
    if tuple(mask.shape) != (n, patches):
        raise ValueError(f"mask must have shape ({n}, {patches}), got {tuple(mask.shape)}")
    backend = _backend.resolve("masked_patch_loss", pred.device.type, _NATIVE_DEVICES)
    if backend == "reference":
        return reference.masked_patch_loss(pred, imgs, mask.to(pred.dtype), p, norm_pix=norm_pix,
                                           loss=loss).to(loss_dtype(pred))
    mask = mask.detach().to(loss_dtype(pred)).contiguous()
    return _core_ops(backend).masked_patch_loss_fwd(pred.contiguous(), imgs.detach().contiguous(), mask,
                                                    p, bool(norm_pix), loss == "l1")


# ---------------------------------------------------------------------------------- generators


def _rank(noise):
    """Rank of each entry along the last dim (stable argsort of the argsort): a permutation."""
    return torch.argsort(torch.argsort(noise, dim=-1, stable=True), dim=-1, stable=True)


def tube_mask(batch, frames, height, width, mask_ratio, *, generator=None, device=None):
    """VideoMAE ``TubeMaskingGenerator``: per sample one spatial mask with exactly
    ``int(mask_ratio * height * width)`` masked cells, repeated over ``frames``.
    Returns bool [batch, frames * height * width] (True = masked)."""
    batch = _int("batch", batch, 1)
    frames, height, width = (_int(k, v, 1) for k, v in
                             (("frames", frames), ("height", height), ("width", width)))
    mask_ratio = _ratio("mask_ratio", mask_ratio)
    per_frame = int(mask_ratio * height * width)
    noise = torch.rand(batch, height * width, generator=_generator(generator, device or "cpu"),
                       device=device)
    spatial = _rank(noise) < per_frame
    return spatial.unsqueeze(1).expand(batch, frames, height * width).reshape(batch, -1)


def simmim_mask(batch, input_size=192, mask_patch_size=32, model_patch_size=4, mask_ratio=0.6, *,
                generator=None, device=None):
    """SimMIM ``MaskGenerator``: ``ceil(cells * mask_ratio)`` of the (input / mask_patch)^2 cells
    masked, each upsampled to (mask_patch / model_patch)^2 model patches.
    Returns bool [batch, side, side] with side = input_size // model_patch_size."""
    batch = _int("batch", batch, 1)
    input_size = _int("input_size", input_size, 1)
    mask_patch_size = _int("mask_patch_size", mask_patch_size, 1)
    model_patch_size = _int("model_patch_size", model_patch_size, 1)
    mask_ratio = _ratio("mask_ratio", mask_ratio)
    if input_size % mask_patch_size:
        raise ValueError(f"input_size {input_size} is not divisible by mask_patch_size {mask_patch_size}")
    if mask_patch_size % model_patch_size:
        raise ValueError(f"mask_patch_size {mask_patch_size} is not divisible by model_patch_size "
                         f"{model_patch_size}")
    cells = input_size // mask_patch_size
    scale = mask_patch_size // model_patch_size
    count = int(math.ceil(cells * cells * mask_ratio))
    noise = torch.rand(batch, cells * cells, generator=_generator(generator, device or "cpu"),
                       device=device)
    coarse = (_rank(noise) < count).reshape(batch, cells, cells)
    return coarse.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)


def span_mask(batch, sequence_length, mask_prob, mask_length, min_masks=0, *, generator=None,
              device=None):
    """wav2vec2 ``_compute_mask_indices`` without an attention mask: ``num_spans = int(mask_prob *
    L / mask_length + eps)`` (eps ~ U[0, 1) drawn once per call, on device), at least
    ``min_masks``, capped as in transformers; span starts drawn without replacement from
    [0, L - mask_length]; spans may overlap. Returns bool [batch, L]."""
    batch = _int("batch", batch, 1)
    length = _int("sequence_length", sequence_length, 1)
    mask_length = _int("mask_length", mask_length, 1, length)
    min_masks = _int("min_masks", min_masks, 0)
    if isinstance(mask_prob, bool) or not isinstance(mask_prob, numbers.Real) or not 0 <= mask_prob <= 1:
        raise ValueError(f"mask_prob must be a number in [0, 1], got {mask_prob}")
    generator = _generator(generator, device or "cpu")
    starts = length - mask_length + 1
    eps = torch.rand((), generator=generator, device=device, dtype=torch.float64)
    num = torch.floor(mask_prob * length / mask_length + eps)
    num = torch.clamp(num, min=min_masks)
    num = torch.where(num * mask_length > length, torch.full_like(num, length // mask_length), num)
    num = torch.clamp(num, max=starts)
    noise = torch.rand(batch, starts, generator=generator, device=device)
    chosen = (_rank(noise) < num).to(torch.int32)
    # mask[t] = any chosen start s with t - mask_length < s <= t: a windowed count over starts.
    padded = torch.nn.functional.pad(chosen, (0, mask_length - 1))
    counts = torch.cumsum(padded, dim=1)
    window = counts - torch.nn.functional.pad(counts, (mask_length, 0))[:, :length]
    return window > 0


def bert_mask_tokens(input_ids, mask_token_id, vocab_size, mlm_probability=0.15,
                     special_tokens_mask=None, *, generator=None):
    """BERT masked-LM corruption (transformers ``DataCollatorForLanguageModeling``): each
    non-special token is selected with ``mlm_probability``; selected tokens become
    ``mask_token_id`` (80%), a uniform random id in [0, vocab_size) (10%) or stay (10%).
    Returns ``(inputs, labels)``, labels = original id where selected, -100 elsewhere."""
    check.tensor("input_ids", input_ids, float_dtype=False)
    if input_ids.dtype not in INDEX_DTYPES:
        raise TypeError(f"input_ids must be int32 or int64, got dtype {input_ids.dtype}")
    vocab_size = _int("vocab_size", vocab_size, 1)
    mask_token_id = _int("mask_token_id", mask_token_id, 0, vocab_size - 1)
    if isinstance(mlm_probability, bool) or not isinstance(mlm_probability, numbers.Real) \
            or not 0 <= mlm_probability <= 1:
        raise ValueError(f"mlm_probability must be a number in [0, 1], got {mlm_probability}")
    if special_tokens_mask is not None:
        check.tensor("special_tokens_mask", special_tokens_mask, float_dtype=False)
        if special_tokens_mask.shape != input_ids.shape:
            raise ValueError(f"special_tokens_mask must have shape {tuple(input_ids.shape)}, "
                             f"got {tuple(special_tokens_mask.shape)}")
        _same_device("special_tokens_mask", special_tokens_mask, "input_ids", input_ids)
    generator = _generator(generator, input_ids.device)
    draws = torch.rand((3,) + tuple(input_ids.shape), generator=generator, device=input_ids.device)
    random_ids = torch.randint(0, vocab_size, input_ids.shape, generator=generator,
                               device=input_ids.device, dtype=input_ids.dtype)
    return reference.bert_mask_tokens(input_ids, mask_token_id, mlm_probability, special_tokens_mask,
                                      draws, random_ids)


def node_mask(x, mask_rate, mask_token, *, generator=None):
    """GraphMAE ``encoding_mask_noise`` without the noise branch: ``int(mask_rate * num_nodes)``
    random nodes get their features replaced by ``mask_token`` (learnable, gets a gradient).
    Returns ``(x_masked, mask_nodes, keep_nodes)`` (int64 node indices, static lengths)."""
    check.tensor("x", x, ndim=2)
    mask_rate = _ratio("mask_rate", mask_rate)
    check.tensor("mask_token", mask_token)
    _same_device("mask_token", mask_token, "x", x)
    if mask_token.numel() != x.shape[1]:
        raise ValueError(f"mask_token must have {x.shape[1]} elements, got shape {tuple(mask_token.shape)}")
    noise = torch.rand(x.shape[0], generator=_generator(generator, x.device), device=x.device)
    return reference.node_mask(x, mask_rate, mask_token, noise)


def block_mask(batch, height, width, num_masking_patches, *, min_num_patches=4, max_num_patches=None,
               min_aspect=0.3, max_aspect=None, attempts=10, generator=None, device=None):
    """BEiT ``MaskingGenerator``: add random rectangles (area ~ U[min_num_patches, budget], aspect
    log-uniform in [min_aspect, 1 / min_aspect]) until ``num_masking_patches`` are masked; a
    rectangle is accepted when it adds between 1 and ``budget`` new patches (budget = what is
    still missing, capped by ``max_num_patches``); up to ``attempts`` tries per rectangle, stop
    when all fail. Batched and sync-free: the tries of one step are drawn together and the
    first accepted one wins (the order BEiT tries them in), and the loop runs its worst-case
    ``num_masking_patches`` steps with finished samples frozen. Returns bool [batch, H, W]."""
    batch = _int("batch", batch, 1)
    height, width = _int("height", height, 1), _int("width", width, 1)
    target = _int("num_masking_patches", num_masking_patches, 0, height * width)
    min_num = _int("min_num_patches", min_num_patches, 1)
    max_num = target if max_num_patches is None else _int("max_num_patches", max_num_patches, 1)
    attempts = _int("attempts", attempts, 1)
    if isinstance(min_aspect, bool) or not isinstance(min_aspect, numbers.Real) or min_aspect <= 0:
        raise ValueError(f"min_aspect must be a number > 0, got {min_aspect}")
    max_aspect = 1 / min_aspect if max_aspect is None else max_aspect
    log_lo, log_hi = math.log(min_aspect), math.log(max_aspect)
    generator = _generator(generator, device or "cpu")
    mask = torch.zeros(batch, height, width, dtype=torch.bool, device=device)
    count = torch.zeros(batch, dtype=torch.float32, device=device)
    active = torch.ones(batch, dtype=torch.bool, device=device)  # BEiT stops a sample at its first failed step
    rows = torch.arange(height, device=device).view(1, 1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, 1, width)
    for _ in range(target):
        budget = torch.clamp(target - count, max=max_num)  # [B]
        u = torch.rand(4, batch, attempts, generator=generator, device=device)
        area = min_num + u[0] * (budget[:, None] - min_num)
        aspect = torch.exp(log_lo + u[1] * (log_hi - log_lo))
        h = torch.round(torch.sqrt(area * aspect))
        w = torch.round(torch.sqrt(area / aspect))
        fits = (w < width) & (h < height)
        top = torch.floor(u[2] * (height - h + 1)).clamp(min=0)
        left = torch.floor(u[3] * (width - w + 1)).clamp(min=0)
        rect = ((rows >= top[..., None, None]) & (rows < (top + h)[..., None, None])
                & (cols >= left[..., None, None]) & (cols < (left + w)[..., None, None]))
        new = (rect & ~mask[:, None]).sum(dim=(2, 3)).float()
        accepted = fits & (new > 0) & (new <= budget[:, None]) & (active & (count < target))[:, None]
        first = torch.argmax(accepted.int(), dim=1)  # first accepted try (0 when none)
        chosen = accepted.any(dim=1)
        pick = rect[torch.arange(batch, device=device), first] & chosen[:, None, None]
        count = count + torch.where(chosen, new.gather(1, first[:, None]).squeeze(1), 0.0)
        mask = mask | pick
        active = active & chosen
    return mask
