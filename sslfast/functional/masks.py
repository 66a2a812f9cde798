"""Mask generators for masked modeling: BEiT blocks, VideoMAE tubes, SimMIM, wav2vec2 spans, BERT
tokens, GraphMAE nodes.

These are compositions of torch ops, not fused kernels (the fused masking ops are in
``sslfast.ops.masking``): on the tensor's device, seeded by a ``torch.Generator``, static shapes,
no host sync, no boolean indexing.
"""

from __future__ import annotations

import math

import torch

from ..ops import _validate as check
from ..reference import masking as reference

__all__ = ["block_mask", "tube_mask", "simmim_mask", "span_mask", "bert_mask_tokens", "node_mask"]

_ratio = check.fraction
_int = check.integer


def _generator(generator, device):
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != torch.device(device if device is not None else "cpu").type:
            raise ValueError(f"generator is on {generator.device} but the output is on {device}")
    return generator



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
    mask_prob = check.fraction("mask_prob", mask_prob, closed=True)
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
    if input_ids.dtype not in check.INDEX_DTYPES:
        raise TypeError(f"input_ids must be int32 or int64, got dtype {input_ids.dtype}")
    vocab_size = _int("vocab_size", vocab_size, 1)
    mask_token_id = _int("mask_token_id", mask_token_id, 0, vocab_size - 1)
    mlm_probability = check.fraction("mlm_probability", mlm_probability, closed=True)
    if special_tokens_mask is not None:
        check.tensor("special_tokens_mask", special_tokens_mask, float_dtype=False)
        if special_tokens_mask.shape != input_ids.shape:
            raise ValueError(f"special_tokens_mask must have shape {tuple(input_ids.shape)}, "
                             f"got {tuple(special_tokens_mask.shape)}")
        check.same_device("special_tokens_mask", special_tokens_mask, "input_ids", input_ids)
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
    check.same_device("mask_token", mask_token, "x", x)
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
    min_aspect = check.positive_float("min_aspect", min_aspect)
    max_aspect = 1 / min_aspect if max_aspect is None else check.positive_float("max_aspect", max_aspect)
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
