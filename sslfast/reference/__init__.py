"""Eager-PyTorch definitions: the executable spec every backend is tested against."""

from . import contrastive, gnn

__all__ = ["contrastive", "gnn"]
