"""The containers the loaders return."""

from __future__ import annotations

import dataclasses

import torch

__all__ = ["GraphData", "ImageData", "PointData", "row_normalize"]


@dataclasses.dataclass
class GraphData:
    """A node-classification graph: ``x`` [N, F] float32, ``edge_index`` [2, E] int64 (PyG
    convention, both directions), ``y`` [N] int64, boolean split masks [N]."""

    name: str
    x: torch.Tensor
    edge_index: torch.Tensor
    y: torch.Tensor
    train_mask: torch.Tensor
    val_mask: torch.Tensor
    test_mask: torch.Tensor
    num_classes: int

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    def to(self, device) -> "GraphData":
        return dataclasses.replace(self, **{f.name: getattr(self, f.name).to(device)
                                            for f in dataclasses.fields(self)
                                            if isinstance(getattr(self, f.name), torch.Tensor)})


@dataclasses.dataclass
class ImageData:
    """Images [N, C, H, W] float32 in [0, 1] with labels [N] int64, split into train / test."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int


@dataclasses.dataclass
class PointData:
    """2-D point clouds (DDPM toys): ``train`` [N, 2] and a held-out ``test`` [M, 2], both
    standardized with the statistics of ``train`` (``mean`` / ``std`` undo it)."""

    name: str
    train: torch.Tensor
    test: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor


def row_normalize(x: torch.Tensor) -> torch.Tensor:
    """Each row divided by its sum (rows summing to 0 stay 0): PyG ``NormalizeFeatures``, DGI's
    ``preprocess_features``, DGL's Planetoid features."""
    total = x.sum(dim=1, keepdim=True)
    return x / torch.where(total == 0, torch.ones_like(total), total)
