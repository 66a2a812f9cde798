"""Eager-PyTorch definitions: the executable spec every backend is tested against."""

from . import contrastive, diffusion, gnn, masking

__all__ = ["contrastive", "diffusion", "gnn", "masking"]
