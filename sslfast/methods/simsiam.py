"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning"; reference:
facebookresearch/simsiam).

Encoder + 3-layer projector (Linear-BN-ReLU x2, Linear-BN without affine; width 2048) +
predictor bottleneck (2048 -> 512 -> 2048, Linear-BN-ReLU-Linear); loss
-(cos(p1, stopgrad z2) + cos(p2, stopgrad z1)) / 2. No negatives, no momentum encoder.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ._common import ImageAugment, encoder_dim, images_of, mlp, positive_int

__all__ = ["SimSiam"]


class SimSiam(nn.Module):
    def __init__(self, encoder: nn.Module, *, feature_dim: int | None = None, dim: int = 2048,
                 pred_dim: int = 512, augment: nn.Module | None = None):
        super().__init__()
        d = encoder_dim(encoder, feature_dim, "feature_dim")
        dim, pred_dim = positive_int("dim", dim), positive_int("pred_dim", pred_dim)
        self.encoder = encoder
        self.projector = mlp([d, dim, dim, dim], last_batch_norm=True, last_affine=False)
        self.predictor = mlp([dim, pred_dim, dim])
        self.augment = augment if augment is not None else ImageAugment()

    def forward(self, batch):
        images = images_of(batch)
        z1 = self.projector(self.encoder(self.augment(images)))
        z2 = self.projector(self.encoder(self.augment(images)))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return -0.5 * (F.cosine_similarity(p1, z2.detach(), dim=-1).mean()
                       + F.cosine_similarity(p2, z1.detach(), dim=-1).mean())

    def embed(self, images):
        return self.encoder(images)
