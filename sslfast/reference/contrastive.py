"""Eager-PyTorch contrastive losses: the executable spec every backend is tested against.

These build the full N x M logits on purpose: they are the obvious formulas, used as the
baseline in benchmarks and as ground truth (in float64) in tests (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _widen(logits):
    """Half-precision logits are reduced in float32; float32 / float64 stay as they are."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def nt_xent(z1, z2, temperature=0.5, *, normalize=True, exclude_positive=False):
    """SimCLR NT-Xent (lightly ``NTXentLoss`` without memory bank); DCL with exclude_positive."""
    z = torch.cat([z1, z2], dim=0)
    if normalize:
        z = F.normalize(z, dim=1)
    two_n = z.shape[0]
    n = two_n // 2
    logits = _widen(z @ z.T) / temperature
    rows = torch.arange(two_n, device=z.device)
    positive = (rows + n) % two_n
    excluded = rows[:, None] == rows[None, :]
    if exclude_positive:
        excluded = excluded | (positive[:, None] == rows[None, :])
    positive_logit = logits[rows, positive]
    lse = torch.logsumexp(logits.masked_fill(excluded, float("-inf")), dim=1)
    return (lse - positive_logit).mean()


def info_nce(query, key, temperature=0.07, queue=None, *, normalize=True, in_batch_negatives=True):
    """InfoNCE: positive of query i is key i; negatives are the other keys and every queue row."""
    if normalize:
        query = F.normalize(query, dim=1)
        key = F.normalize(key, dim=1)
        if queue is not None:
            queue = F.normalize(queue, dim=1)
    positive_logit = _widen((query * key).sum(dim=1)) / temperature
    parts = [positive_logit[:, None]]
    if in_batch_negatives:
        in_batch = _widen(query @ key.T) / temperature
        eye = torch.eye(query.shape[0], dtype=torch.bool, device=query.device)
        parts.append(in_batch.masked_fill(eye, float("-inf")))
    if queue is not None:
        parts.append(_widen(query @ queue.detach().T) / temperature)
    lse = torch.logsumexp(torch.cat(parts, dim=1), dim=1)
    return (lse - positive_logit).mean()


def clip_loss(image, text, logit_scale, logit_bias=None):
    """open_clip ``ClipLoss``: mean of the image->text and text->image cross entropies."""
    logits = logit_scale * (image @ text.T)
    if logit_bias is not None:
        logits = logits + logit_bias
    logits = _widen(logits)
    labels = torch.arange(image.shape[0], device=image.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def siglip_loss(image, text, logit_scale, logit_bias):
    """open_clip ``SigLipLoss``: -sum(logsigmoid(z * logits)) / N, z = +1 on the diagonal, -1 off."""
    logits = _widen(logit_scale * (image @ text.T) + logit_bias)
    n = image.shape[0]
    signs = 2 * torch.eye(n, device=image.device, dtype=logits.dtype) - 1
    return -F.logsigmoid(signs * logits).sum() / n


def supcon(features, labels, temperature=0.1, *, normalize=True, pairwise=False):
    """Supervised contrastive loss: row i's positives are the other rows with its label.

    ``pairwise=False``: Khosla et al. (SupContrast ``SupConLoss``, contrast_mode "all", the
    temperature / base_temperature factor 1): mean over anchors of -(mean over positives p of
    log softmax_{j != i}(s_ij) at p); anchors without positives contribute 0.
    ``pairwise=True``: pytorch-metric-learning ``NTXentLoss`` with labels: mean over positive
    pairs (i, p) of -log(e^s_ip / (e^s_ip + sum over i's negatives n of e^s_in)).
    """
    z = F.normalize(features, dim=1) if normalize else features
    n = z.shape[0]
    logits = _widen(z @ z.T) / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    same = labels[:, None] == labels[None, :]
    positive = same & ~self_mask
    if pairwise:
        negative_lse = torch.logsumexp(logits.masked_fill(same, float("-inf")), dim=1)
        per_pair = torch.where(positive, F.softplus(negative_lse[:, None] - logits), 0.0)
        return per_pair.sum() / positive.sum().clamp(min=1)
    lse = torch.logsumexp(logits.masked_fill(self_mask, float("-inf")), dim=1)
    # Only positive entries count (where, not a product: a one-row batch has lse = -inf).
    log_prob = torch.where(positive, logits - lse[:, None], 0.0)
    return -(log_prob.sum(dim=1) / positive.sum(dim=1).clamp(min=1)).mean()
