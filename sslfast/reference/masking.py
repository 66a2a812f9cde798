"""Eager-PyTorch spec of the masking family (MAE ``models_mae.py``, SimMIM, VideoMAE, BERT, GraphMAE).

Every function takes its random draws explicitly or from a ``torch.Generator`` through
:func:`draw_noise`, so a fused backend given the same draws must produce the same masks.
Ties in the noise are broken by position (stable argsort), NaN sorts last, as ``torch.sort``.
"""

from __future__ import annotations

import torch


def len_keep(num_patches: int, mask_ratio: float) -> int:
    """MAE: ``int(L * (1 - mask_ratio))``."""
    return int(num_patches * (1 - mask_ratio))


def draw_noise(batch: int, num_patches: int, *, device=None, generator=None) -> torch.Tensor:
    """The per-sample uniform noise MAE sorts: float32 [N, L] from ``generator``."""
    return torch.rand(batch, num_patches, device=device, generator=generator, dtype=torch.float32)


def _pos(pos_embed, x):
    return pos_embed.reshape(1, x.shape[1], x.shape[2]).to(x.dtype)


def random_masking(x, mask_ratio, *, generator=None, pos_embed=None, num_prefix_tokens=0,
                   noise=None, index_dtype=torch.int64):
    """MAE ``random_masking`` on the patch tokens ``x[:, num_prefix_tokens:]``.

    Returns ``(x_visible [N, P + len_keep, D], mask [N, L] (1 = masked, x.dtype),
    ids_restore [N, L])``; prefix tokens stay first, unshuffled. ``pos_embed`` ([1, P + L, D] or
    [P + L, D]) is added to every token before the gather.
    """
    n, total, d = x.shape
    p = num_prefix_tokens
    length = total - p
    keep = len_keep(length, mask_ratio)
    if noise is None:
        noise = draw_noise(n, length, device=x.device, generator=generator)
    if pos_embed is not None:
        x = x + _pos(pos_embed, x)
    ids_shuffle = torch.argsort(noise, dim=1, stable=True)
    ids_restore = torch.argsort(ids_shuffle, dim=1, stable=True)
    ids_keep = ids_shuffle[:, :keep]
    patches = x[:, p:]
    x_masked = torch.gather(patches, 1, ids_keep.unsqueeze(-1).repeat(1, 1, d))
    x_visible = torch.cat([x[:, :p], x_masked], dim=1)
    mask = torch.ones(n, length, device=x.device, dtype=x.dtype)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return x_visible, mask, ids_restore.to(index_dtype)


def unshuffle(x_visible, ids_restore, mask_token, *, pos_embed=None, num_prefix_tokens=0):
    """MAE decoder input: visible tokens back in original order, ``mask_token`` elsewhere,
    prefix tokens first; ``pos_embed`` ([1, P + L, D] or [P + L, D]) added to every token."""
    n, _, d = x_visible.shape
    p = num_prefix_tokens
    length = ids_restore.shape[1]
    keep = x_visible.shape[1] - p
    mask_tokens = mask_token.reshape(1, 1, d).to(x_visible.dtype).expand(n, length - keep, d)
    x_ = torch.cat([x_visible[:, p:], mask_tokens], dim=1)
    x_ = torch.gather(x_, 1, ids_restore.long().unsqueeze(-1).repeat(1, 1, d))
    out = torch.cat([x_visible[:, :p], x_], dim=1)
    if pos_embed is not None:
        out = out + _pos(pos_embed, out)
    return out


def patchify(imgs, patch_size):
    """MAE ``patchify``: [N, C, H, W] -> [N, L, p * p * C], feature order (p_row, p_col, c)."""
    n, c, h, w = imgs.shape
    p = patch_size
    x = imgs.reshape(n, c, h // p, p, w // p, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(n, (h // p) * (w // p), p * p * c)


def masked_patch_loss(pred, imgs, mask, patch_size, *, norm_pix=True, loss="l2"):
    """MAE ``forward_loss`` (``loss="l2"``) or SimMIM's L1 reconstruction loss (``loss="l1"``).

    ``norm_pix``: each target patch normalized by its mean and unbiased variance (eps 1e-6).
    l2: sum over patches of mask * mean((pred - target)^2) / sum(mask).
    l1: sum over patches of mask * sum|pred - target| / (sum(mask) * p * p + 1e-5) / C, i.e.
    SimMIM's pixel-mask normalization with the patch mask upsampled to pixels.
    """
    target = patchify(imgs, patch_size)
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    if loss == "l2":
        per_patch = ((pred - target) ** 2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum()
    channels = imgs.shape[1]
    per_patch = (pred - target).abs().sum(dim=-1)
    return (per_patch * mask).sum() / (mask.sum() * patch_size * patch_size + 1e-5) / channels


def bert_mask_tokens(input_ids, mask_token_id, mlm_probability, special_tokens_mask, draws, random_ids):
    """transformers ``DataCollatorForLanguageModeling.torch_mask_tokens`` given its random draws:
    ``draws`` [3, *shape] uniforms (selection, 80% replace, 50% of the rest random) and
    ``random_ids`` (the random replacement ids). Returns ``(inputs, labels)``."""
    selected = draws[0] < mlm_probability
    if special_tokens_mask is not None:
        selected = selected & ~special_tokens_mask.bool()
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))
    replaced = selected & (draws[1] < 0.8)
    randomized = selected & ~replaced & (draws[2] < 0.5)
    inputs = torch.where(replaced, torch.full_like(input_ids, mask_token_id), input_ids)
    inputs = torch.where(randomized, random_ids, inputs)
    return inputs, labels


def node_mask(x, mask_rate, mask_token, noise):
    """GraphMAE ``encoding_mask_noise`` (no noise branch) given the permutation's noise:
    perm = argsort(noise); the first ``int(mask_rate * num_nodes)`` nodes of perm are masked."""
    num_nodes = x.shape[0]
    num_mask = int(mask_rate * num_nodes)
    perm = torch.argsort(noise, stable=True)
    mask_nodes, keep_nodes = perm[:num_mask], perm[num_mask:]
    is_masked = torch.zeros(num_nodes, dtype=torch.bool, device=x.device)
    is_masked = is_masked.scatter(0, mask_nodes, True)
    token = mask_token.reshape(1, -1).to(x.dtype)
    x_masked = torch.where(is_masked.unsqueeze(1), token, x)
    return x_masked, mask_nodes, keep_nodes
