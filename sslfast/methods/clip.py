"""CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision"; reference: mlfoundations/open_clip ``CLIP`` / ``ClipLoss``).

Two towers, each an encoder followed by a linear projection to ``embed_dim`` and L2
normalization; a learnable temperature stored as log(1 / 0.07) and clamped to at most log(100);
the symmetric cross entropy over the B x B similarities through the fused ``sslfast.clip_loss``
(never builds the logits). ``forward((a, b))`` with paired inputs of the two modalities.
``process_group``: under DDP, the loss is over every rank's pairs (docs/distributed.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import sslfast

from ._common import encoder_dim, positive, positive_int

__all__ = ["CLIP"]


class CLIP(nn.Module):
    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, *, embed_dim: int = 512,
                 image_dim: int | None = None, text_dim: int | None = None, init_scale: float = 1 / 0.07,
                 max_scale: float = 100.0, process_group=None):
        super().__init__()
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        embed_dim = positive_int("embed_dim", embed_dim)
        self.image_projection = nn.Linear(encoder_dim(image_encoder, image_dim, "image_dim"), embed_dim, bias=False)
        self.text_projection = nn.Linear(encoder_dim(text_encoder, text_dim, "text_dim"), embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(positive("init_scale", init_scale))))
        self.max_log_scale = math.log(positive("max_scale", max_scale))
        self.process_group = process_group

    def encode_image(self, images):
        return F.normalize(self.image_projection(self.image_encoder(images)), dim=-1)

    def encode_text(self, text):
        return F.normalize(self.text_projection(self.text_encoder(text)), dim=-1)

    def forward(self, batch):
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise TypeError(f"batch must be an (image, text) pair, got {type(batch).__name__}")
        image, text = batch
        scale = self.logit_scale.clamp(max=self.max_log_scale).exp()
        return sslfast.clip_loss(self.encode_image(image), self.encode_text(text), scale,
                                 process_group=self.process_group)

    def embed(self, images):
        """Image-tower features (before the projection), for probes."""
        return self.image_encoder(images)
