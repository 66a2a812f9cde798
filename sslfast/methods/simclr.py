"""SimCLR (Chen, Kornblith, Norouzi, Hinton 2020, "A Simple Framework for Contrastive Learning
of Visual Representations"; reference: google-research/simclr, lightly ``SimCLR``).

Two augmented views per image, the encoder, a 2-layer MLP projection head (hidden = the
encoder width, output 128), NT-Xent at temperature 0.5 (the paper's CIFAR-10 setting, lightly's
default) through the fused ``sslfast.nt_xent``. ``process_group``: under DDP, the loss is over
every rank's batch (sslfast.distributed; docs/distributed.md).
"""

from __future__ import annotations

from torch import nn

import sslfast

from ._common import ImageAugment, encoder_dim, images_of, mlp, positive, positive_int

__all__ = ["SimCLR"]


class SimCLR(nn.Module):
    def __init__(self, encoder: nn.Module, *, feature_dim: int | None = None, hidden_dim: int | None = None,
                 out_dim: int = 128, temperature: float = 0.5, augment: nn.Module | None = None, process_group=None):
        super().__init__()
        self.encoder = encoder
        d = encoder_dim(encoder, feature_dim, "feature_dim")
        hidden = positive_int("hidden_dim", hidden_dim) if hidden_dim is not None else d
        self.projection = mlp([d, hidden, positive_int("out_dim", out_dim)], batch_norm=False)
        self.temperature = positive("temperature", temperature)
        self.augment = augment if augment is not None else ImageAugment()
        self.process_group = process_group

    def forward(self, batch):
        images = images_of(batch)
        z1 = self.projection(self.encoder(self.augment(images)))
        z2 = self.projection(self.encoder(self.augment(images)))
        return sslfast.nt_xent(z1, z2, self.temperature, process_group=self.process_group)

    def embed(self, images):
        return self.encoder(images)
