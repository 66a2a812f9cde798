"""2-D point sets for DDPM, generated in torch (scikit-learn's ``make_moons`` and the 2-D swiss
roll of the diffusion tutorials), seeded, standardized with the training half's statistics."""

from __future__ import annotations

import math

import torch

from ._types import PointData

__all__ = ["load_moons", "load_swissroll", "make_moons", "make_swissroll"]


def make_moons(n: int, noise: float = 0.05, *, generator=None) -> torch.Tensor:
    """scikit-learn ``make_moons``: two interleaving half circles (n // 2 and n - n // 2 points)
    with Gaussian noise of std ``noise``; [n, 2] float32."""
    n_out = n // 2
    n_in = n - n_out
    t_out = torch.linspace(0, math.pi, n_out, dtype=torch.float64)
    t_in = torch.linspace(0, math.pi, n_in, dtype=torch.float64)
    outer = torch.stack([torch.cos(t_out), torch.sin(t_out)], 1)
    inner = torch.stack([1 - torch.cos(t_in), 1 - torch.sin(t_in) - 0.5], 1)
    x = torch.cat([outer, inner])
    x = x + noise * torch.randn(x.shape, generator=generator, dtype=torch.float64)
    return x[torch.randperm(n, generator=generator)].float()


def make_swissroll(n: int, noise: float = 0.5, *, generator=None) -> torch.Tensor:
    """The 2-D swiss roll (scikit-learn ``make_swiss_roll``'s (x, z) plane): t ~ 1.5 pi (1 + 2 U),
    (t cos t, t sin t) + N(0, noise^2), scaled by 1/10; [n, 2] float32."""
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, dtype=torch.float64))
    x = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1)
    x = x + noise * torch.randn(x.shape, generator=generator, dtype=torch.float64)
    return (x / 10).float()


def _standardized(name, points, n_train) -> PointData:
    train, test = points[:n_train], points[n_train:]
    mean, std = train.mean(0), train.std(0)
    return PointData(name, (train - mean) / std, (test - mean) / std, mean, std)


def load_moons(n_train: int = 8000, n_test: int = 4000, noise: float = 0.05, data_seed: int = 0) -> PointData:
    """Moons: ``n_train`` training points and ``n_test`` held-out ones (fixed ``data_seed``)."""
    g = torch.Generator().manual_seed(data_seed)
    return _standardized("moons", make_moons(n_train + n_test, noise, generator=g), n_train)


def load_swissroll(n_train: int = 8000, n_test: int = 4000, noise: float = 0.5, data_seed: int = 0) -> PointData:
    """Swiss roll: ``n_train`` training points and ``n_test`` held-out ones (fixed ``data_seed``)."""
    g = torch.Generator().manual_seed(data_seed)
    return _standardized("swissroll", make_swissroll(n_train + n_test, noise, generator=g), n_train)
