"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent"; reference: google-deepmind/deepmind-research
``byol``, lightly ``BYOL``).

Online network = encoder + projector (Linear-BN-ReLU-Linear, hidden 4096, out 256) + predictor
(same shape); the target network (encoder + projector) follows it by EMA with tau from 0.996
to 1 along a cosine (``schedule_momentum``), updated in one multi-tensor EMA call. Loss: the
symmetrized 2 - 2 cos(prediction, target projection) of the other view.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import sslfast

from ._common import (ImageAugment, cosine_momentum, encoder_dim, fraction, images_of, mlp, momentum_copy,
                      positive_int)

__all__ = ["BYOL"]


def regression_loss(p, z):
    return 2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1).mean()


class BYOL(nn.Module):
    def __init__(self, encoder: nn.Module, *, feature_dim: int | None = None, hidden_dim: int = 4096,
                 out_dim: int = 256, momentum: float = 0.996, augment: nn.Module | None = None):
        super().__init__()
        d = encoder_dim(encoder, feature_dim, "feature_dim")
        hidden, out = positive_int("hidden_dim", hidden_dim), positive_int("out_dim", out_dim)
        self.encoder = encoder
        self.projector = mlp([d, hidden, out])
        self.predictor = mlp([out, hidden, out])
        self.target_encoder = momentum_copy(encoder)
        self.target_projector = momentum_copy(self.projector)
        self.base_momentum = self.momentum = fraction("momentum", momentum, closed=True)
        self.augment = augment if augment is not None else ImageAugment()

    @torch.no_grad()
    def update_momentum(self, momentum: float | None = None):
        m = self.momentum if momentum is None else momentum
        sslfast.ema_(list(self.target_encoder.parameters()) + list(self.target_projector.parameters()),
             list(self.encoder.parameters()) + list(self.projector.parameters()), m)

    def schedule_momentum(self, step: int, total_steps: int):
        self.momentum = cosine_momentum(self.base_momentum, step, total_steps)

    def forward(self, batch):
        images = images_of(batch)
        if self.training:
            self.update_momentum()  # the EMA after the previous optimizer step
        v1, v2 = self.augment(images), self.augment(images)
        p1 = self.predictor(self.projector(self.encoder(v1)))
        p2 = self.predictor(self.projector(self.encoder(v2)))
        with torch.no_grad():
            t1 = self.target_projector(self.target_encoder(v1))
            t2 = self.target_projector(self.target_encoder(v2))
        return regression_loss(p1, t2) + regression_loss(p2, t1)

    def embed(self, images):
        return self.encoder(images)
