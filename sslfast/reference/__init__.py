"""Eager-PyTorch definitions: the executable spec every backend is tested against."""

from . import contrastive, diffusion

__all__ = ["contrastive", "diffusion"]
