"""Eager-PyTorch definitions: the executable spec every backend is tested against."""

from . import contrastive, diffusion, masking

__all__ = ["contrastive", "diffusion", "masking"]
