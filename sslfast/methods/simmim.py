"""SimMIM (Xie et al. 2022, "SimMIM: A Simple Framework for Masked Image Modeling"; reference:
microsoft/SimMIM ``models/simmim.py``, ``data/data_simmim.py``).

The encoder (a ViT with the MAE interface, ``sslfast.methods.backbones.ViT``) sees every patch;
masked patches' embeddings are replaced by a learned mask token (mask from ``sslfast.simmim_mask``:
a ``mask_ratio`` = 0.6 share of ``mask_patch_size`` cells, 32 px in the paper); a one-layer
linear head predicts each patch's raw pixels; the loss is the L1 distance on the masked
patches (``sslfast.masked_patch_loss(..., norm_pix=False, loss="l1")``); ``loss="l2"`` is the
paper's L2 ablation (Table 4: 83.7-83.8 top-1 for both on ImageNet).
"""

from __future__ import annotations

import torch
from torch import nn

import sslfast

from ._common import fraction, positive_int
from .mae import _check_vit

__all__ = ["SimMIM"]


class SimMIM(nn.Module):
    def __init__(self, encoder: nn.Module, *, mask_ratio: float = 0.6, mask_patch_size: int = 32, loss: str = "l1"):
        super().__init__()
        _check_vit(encoder)
        if loss not in ("l1", "l2"):
            raise ValueError(f"loss must be 'l1' or 'l2', got {loss!r}")
        self.loss = loss
        self.encoder = encoder
        self.mask_ratio = fraction("mask_ratio", mask_ratio)
        self.mask_patch_size = positive_int("mask_patch_size", mask_patch_size)
        image_size = encoder.grid * encoder.patch_size
        if image_size % self.mask_patch_size or self.mask_patch_size % encoder.patch_size:
            raise ValueError(f"mask_patch_size {mask_patch_size} must divide the image size {image_size} and be a "
                             f"multiple of the encoder's patch size {encoder.patch_size}")
        self.mask_token = nn.Parameter(torch.zeros(1, 1, encoder.embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        p = encoder.patch_size
        self.decoder = nn.Linear(encoder.embed_dim, p * p * encoder.in_channels)

    def predict(self, images, *, generator=None):
        enc = self.encoder
        b = images.shape[0]
        mask = sslfast.simmim_mask(b, enc.grid * enc.patch_size, self.mask_patch_size, enc.patch_size,
                                   self.mask_ratio, generator=generator, device=images.device).flatten(1)
        patches = enc.patch_embed(images)
        w = mask.unsqueeze(-1).to(patches.dtype)
        patches = patches * (1 - w) + self.mask_token * w
        cls = enc.cls_token.expand(b, -1, -1)
        latent = enc.forward_tokens(torch.cat([cls, patches], dim=1) + enc.pos_embed)
        return self.decoder(latent[:, 1:]), mask

    def forward(self, batch):
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        pred, mask = self.predict(images)
        return sslfast.masked_patch_loss(pred, images, mask, self.encoder.patch_size, norm_pix=False,
                                         loss=self.loss)

    def embed(self, images):
        return self.encoder(images)
