"""MAE-style random masking as a module (``sslfast.ops.masking.random_masking``)."""

from __future__ import annotations

import torch
from torch import nn

from ..ops import _validate as check
from ..ops import masking as ops


class RandomMasking(nn.Module):
    """``forward(x, pos_embed=None, generator=None) -> (x_visible, mask, ids_restore)``.

    Masks ``mask_ratio`` of the patch tokens of [N, P + L, D] inputs, keeping the
    ``num_prefix_tokens`` leading tokens; in eval mode (``mask_in_eval=False``) keeps all tokens
    in their original order (mask all zeros, ids_restore = arange).
    """

    def __init__(self, mask_ratio: float = 0.75, num_prefix_tokens: int = 0,
                 index_dtype: torch.dtype = torch.int64, mask_in_eval: bool = True):
        super().__init__()
        self.mask_ratio = check.fraction("mask_ratio", mask_ratio)
        self.num_prefix_tokens = check.integer("num_prefix_tokens", num_prefix_tokens, 0)
        self.index_dtype = index_dtype
        self.mask_in_eval = mask_in_eval

    def forward(self, x, pos_embed=None, generator=None):
        ratio = self.mask_ratio if (self.training or self.mask_in_eval) else 0.0
        noise = None
        if ratio == 0.0:
            # Keep everything, in order: identical noise ranks make the stable sort the identity.
            check.tensor("x", x, ndim=3)
            length = x.shape[1] - self.num_prefix_tokens
            if length < 1:
                raise ValueError(f"x must have at least one patch token after num_prefix_tokens = "
                                 f"{self.num_prefix_tokens}, got shape {tuple(x.shape)}")
            noise = torch.zeros(x.shape[0], length, device=x.device)
        return ops.random_masking(x, ratio, generator=generator, pos_embed=pos_embed,
                                  num_prefix_tokens=self.num_prefix_tokens, noise=noise,
                                  index_dtype=self.index_dtype)

    def extra_repr(self):
        return f"mask_ratio={self.mask_ratio}, num_prefix_tokens={self.num_prefix_tokens}"
