"""Eager-PyTorch definitions: the executable spec every backend is tested against."""

from . import contrastive, masking

__all__ = ["contrastive", "masking"]
