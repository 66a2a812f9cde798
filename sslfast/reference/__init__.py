"""Eager-PyTorch definitions: the executable spec every backend is tested against."""

from . import contrastive

__all__ = ["contrastive"]
