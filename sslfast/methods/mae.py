"""MAE (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners"; reference:
facebookresearch/mae ``models_mae.py``).

The encoder is a ViT with ``patch_embed``, ``pos_embed`` (cls first), ``cls_token`` and
``forward_tokens`` (``sslfast.methods.backbones.ViT``). 75 % of the patches are dropped per
sample (``sslfast.random_masking``, position embeddings added on the fly, cls kept), the encoder
sees only the visible ones; a lighter decoder (its own width, fixed sin-cos positions, a learned
mask token placed by ``sslfast.unshuffle``) predicts the pixels of every patch; the loss is the
MSE on the masked patches with per-patch normalized targets (``norm_pix_loss``; the fused
``sslfast.masked_patch_loss`` patchifies inside). The paper's decoder is 8 blocks of 512;
``decoder_dim`` / ``decoder_depth`` scale it to the encoder.
"""

from __future__ import annotations

import torch
from torch import nn

import sslfast

from ._common import fraction, positive_int
from .backbones import TransformerBlock, _init_vit_linear, sincos_pos_embed_2d

__all__ = ["MAE"]


def _check_vit(encoder):
    missing = [a for a in ("patch_embed", "pos_embed", "cls_token", "forward_tokens", "patch_size", "grid",
                           "embed_dim", "in_channels") if not hasattr(encoder, a)]
    if missing:
        raise TypeError(f"encoder must be a ViT with {', '.join(missing)} (see sslfast.methods.backbones.ViT)")


class MAE(nn.Module):
    def __init__(self, encoder: nn.Module, *, mask_ratio: float = 0.75, decoder_dim: int = 512,
                 decoder_depth: int = 8, decoder_heads: int = 16, norm_pix_loss: bool = True):
        super().__init__()
        _check_vit(encoder)
        self.encoder = encoder
        self.mask_ratio = fraction("mask_ratio", mask_ratio)
        self.norm_pix_loss = bool(norm_pix_loss)
        dd = positive_int("decoder_dim", decoder_dim)
        self.decoder_embed = nn.Linear(encoder.embed_dim, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.register_buffer("decoder_pos_embed", sincos_pos_embed_2d(dd, encoder.grid, cls_token=True)[None])
        self.decoder_blocks = nn.ModuleList(TransformerBlock(dd, decoder_heads)
                                            for _ in range(positive_int("decoder_depth", decoder_depth)))
        self.decoder_norm = nn.LayerNorm(dd, eps=1e-6)
        p = encoder.patch_size
        self.decoder_pred = nn.Linear(dd, p * p * encoder.in_channels)
        nn.init.normal_(self.mask_token, std=0.02)
        for module in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            module.apply(_init_vit_linear)

    def predict(self, images, *, generator=None):
        """(pred [B, L, p*p*C], mask [B, L], 1 = masked) for a batch."""
        enc = self.encoder
        patches = enc.patch_embed(images)
        tokens = torch.cat([enc.cls_token.expand(patches.shape[0], -1, -1), patches], dim=1)
        visible, mask, ids_restore = sslfast.random_masking(tokens, self.mask_ratio, generator=generator,
                                                            pos_embed=enc.pos_embed, num_prefix_tokens=1)
        latent = enc.forward_tokens(visible)
        x = sslfast.unshuffle(self.decoder_embed(latent), ids_restore, self.mask_token,
                              pos_embed=self.decoder_pos_embed, num_prefix_tokens=1)
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:], mask

    def forward(self, batch):
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        pred, mask = self.predict(images)
        return sslfast.masked_patch_loss(pred, images, mask, self.encoder.patch_size, norm_pix=self.norm_pix_loss)

    def embed(self, images):
        """The encoder on the whole image (no masking): cls-token features."""
        return self.encoder(images)
