"""SupCon (Khosla et al. 2020, "Supervised Contrastive Learning"; reference:
HobbitLong/SupContrast).

Two views per image through the encoder and a projection head (Linear-ReLU-Linear, out 128),
normalized; the supervised contrastive loss (contrast_mode "all", T = 0.1) over the 2B rows with
labels ``cat([y, y])``: every other row of the same class is a positive. ``forward((images, labels))``.
"""

from __future__ import annotations

import torch
from torch import nn

import sslfast

from ._common import ImageAugment, encoder_dim, mlp, positive, positive_int

__all__ = ["SupCon"]


class SupCon(nn.Module):
    def __init__(self, encoder: nn.Module, *, feature_dim: int | None = None, out_dim: int = 128,
                 temperature: float = 0.1, augment: nn.Module | None = None, process_group=None):
        super().__init__()
        d = encoder_dim(encoder, feature_dim, "feature_dim")
        self.encoder = encoder
        self.projection = mlp([d, d, positive_int("out_dim", out_dim)], batch_norm=False)
        self.temperature = positive("temperature", temperature)
        self.augment = augment if augment is not None else ImageAugment()
        self.process_group = process_group  # under DDP: the loss over every rank's rows

    def forward(self, batch):
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise TypeError(f"batch must be an (images, labels) pair, got {type(batch).__name__}")
        images, labels = batch
        z1 = self.projection(self.encoder(self.augment(images)))
        z2 = self.projection(self.encoder(self.augment(images)))
        return sslfast.supcon(torch.cat([z1, z2]), torch.cat([labels, labels]), self.temperature,
                              process_group=self.process_group)

    def embed(self, images):
        return self.encoder(images)
