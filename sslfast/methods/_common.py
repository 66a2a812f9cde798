"""Pieces several methods share: MLP heads, the view augmentation, argument checks."""

from __future__ import annotations

import numbers

import torch
from torch import nn

from sslfast.functional import augment


def encoder_dim(encoder: nn.Module, given, name: str = "feature_dim") -> int:
    """The encoder's output width: ``given``, else ``encoder.out_dim``."""
    if given is not None:
        return positive_int(name, given)
    dim = getattr(encoder, "out_dim", None)
    if isinstance(dim, int) and dim > 0:
        return dim
    raise ValueError(f"{name} must be given: the encoder ({type(encoder).__name__}) has no integer out_dim")


def positive_int(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def positive(name, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    return float(value)


def fraction(name, value, *, closed=False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and (
        0 <= value <= 1 if closed else 0 <= value < 1)
    if not ok:
        raise ValueError(f"{name} must be a number in [0, {'1]' if closed else '1)'}, got {value!r}")
    return float(value)


def mlp(dims, *, batch_norm=True, last_batch_norm=False, last_affine=True, bias=True, activation=nn.ReLU):
    """Linear layers dims[0] -> ... -> dims[-1]; BN + activation after every hidden layer;
    ``last_batch_norm`` adds a BN (``last_affine``: learnable) after the output layer."""
    layers = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        layers.append(nn.Linear(a, b, bias=bias and not (batch_norm and not last)))
        if not last:
            if batch_norm:
                layers.append(nn.BatchNorm1d(b))
            layers.append(activation())
        elif last_batch_norm:
            layers.append(nn.BatchNorm1d(b, affine=last_affine))
    return nn.Sequential(*layers)


class ImageAugment(nn.Module):
    """One random view of a [B, C, H, W] batch on its device, no host sync: random resized crop
    (``scale``, ``ratio``) to H x H (square, as in the papers), horizontal flip with ``flip_p``, Gaussian noise
    of std ``noise_std``, then clamped to [0, 1]. The defaults are SimCLR's geometric ones; color
    jitter has no meaning for one channel and is left to the caller for RGB data."""

    def __init__(self, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip_p: float = 0.5, noise_std: float = 0.0):
        super().__init__()
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.flip_p = fraction("flip_p", flip_p, closed=True)
        self.noise_std = float(noise_std)

    def forward(self, images, generator=None):
        # One fused pass over the output: crop + resize + flip + noise (sslfast.functional.augment).
        out = augment(images, scale=self.scale, ratio=self.ratio, flip_p=self.flip_p, noise_std=self.noise_std,
                      generator=generator)
        return out.clamp(0, 1)

    def settings(self) -> dict:
        return {"scale": self.scale, "ratio": self.ratio, "flip_p": self.flip_p, "noise_std": self.noise_std}

    def extra_repr(self):
        return ", ".join(f"{k}={v}" for k, v in self.settings().items())


def images_of(batch, name="batch"):
    """The image tensor of a batch: the tensor itself or the first item of a (images, labels) pair."""
    if isinstance(batch, (tuple, list)):
        batch = batch[0]
    if not isinstance(batch, torch.Tensor) or batch.dim() != 4:
        raise ValueError(f"{name} must be images [B, C, H, W] (or an (images, labels) pair), got "
                         f"{tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__}")
    return batch


def graph_of(batch, edge_index=None):
    """(x, edge_index) from ``forward(x, edge_index)``, ``forward((x, edge_index))`` or
    ``forward(data)`` with ``data.x`` / ``data.edge_index`` (PyG ``Data``, ``sslfast.data.GraphData``)."""
    if edge_index is not None:
        return batch, edge_index
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    if hasattr(batch, "x") and hasattr(batch, "edge_index"):
        return batch.x, batch.edge_index
    raise TypeError("a graph batch must be (x, edge_index), an object with .x and .edge_index, or x with "
                    f"edge_index given; got {type(batch).__name__}")


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen deep copy (the target / key network of BYOL and MoCo)."""
    import copy
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


def cosine_momentum(base: float, step: int, total_steps: int, final: float = 1.0) -> float:
    """BYOL / MoCo v3: final - (final - base) * (cos(pi * step / total) + 1) / 2."""
    import math
    if total_steps <= 0:
        return base
    progress = min(max(step / total_steps, 0.0), 1.0)
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2
