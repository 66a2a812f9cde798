"""Loss modules over ``sslfast.ops.contrastive`` (drop-in for lightly / open_clip losses)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..ops import _validate as check
from ..ops import contrastive as ops


class NTXentLoss(nn.Module):
    """SimCLR NT-Xent; ``exclude_positive=True`` gives DCL. ``forward(z1, z2)``."""

    def __init__(self, temperature: float = 0.5, normalize: bool = True, exclude_positive: bool = False):
        super().__init__()
        self.temperature, self.normalize, self.exclude_positive = temperature, normalize, exclude_positive

    def forward(self, z1, z2):
        return ops.nt_xent(z1, z2, self.temperature, normalize=self.normalize,
                           exclude_positive=self.exclude_positive)


class InfoNCELoss(nn.Module):
    """InfoNCE with an optional MoCo queue: ``forward(query, key, queue=None)``."""

    def __init__(self, temperature: float = 0.07, normalize: bool = True, in_batch_negatives: bool = True):
        super().__init__()
        self.temperature, self.normalize = temperature, normalize
        self.in_batch_negatives = in_batch_negatives

    def forward(self, query, key, queue=None):
        return ops.info_nce(query, key, self.temperature, queue, normalize=self.normalize,
                            in_batch_negatives=self.in_batch_negatives)


class ClipLoss(nn.Module):
    """open_clip ``ClipLoss``; with ``learn_scale`` it owns log(logit_scale), initialized to
    log(1 / 0.07) as in CLIP, and ``forward(image, text)`` uses exp of it. Otherwise pass the
    (exponentiated) ``logit_scale`` to ``forward``."""

    def __init__(self, learn_scale: bool = False, init_scale: float = 1 / 0.07):
        super().__init__()
        init_scale = check.positive_float("init_scale", init_scale)
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale))) if learn_scale else None

    def forward(self, image, text, logit_scale=None, logit_bias=None):
        if logit_scale is None:
            if self.log_scale is None:
                raise TypeError("logit_scale must be given when ClipLoss(learn_scale=False)")
            logit_scale = self.log_scale.exp()
        return ops.clip_loss(image, text, logit_scale, logit_bias)


class SigLipLoss(nn.Module):
    """open_clip ``SigLipLoss`` with learnable log-scale (init log 10) and bias (init -10)."""

    def __init__(self, init_scale: float = 10.0, init_bias: float = -10.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(check.positive_float("init_scale", init_scale))))
        self.bias = nn.Parameter(torch.tensor(check.real("init_bias", init_bias)))

    def forward(self, image, text):
        return ops.siglip_loss(image, text, self.log_scale.exp(), self.bias)
