"""Maximum mean discrepancy between two samples (Gretton et al. 2012) for 2-D sample quality.

The biased (V-statistic) estimate of MMD^2 with a sum of Gaussian kernels over several
bandwidths, returned as its square root (a distance, >= 0). DDPM's score is the MMD of the
samples to held-out data, judged against the MMD between two halves of the data (the value
an ideal sampler reaches at that sample size)."""

from __future__ import annotations

import torch

__all__ = ["mmd", "BANDWIDTHS"]

BANDWIDTHS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


@torch.no_grad()
def mmd(x: torch.Tensor, y: torch.Tensor, bandwidths=BANDWIDTHS) -> float:
    """sqrt(MMD^2_b) with k(a, b) = mean over bandwidths s of exp(-|a - b|^2 / (2 s^2))."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be [N, D] and [M, D], got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.detach().double(), y.detach().double()

    def kernel_mean(a, b):
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * s * s)).mean() for s in bandwidths) / len(bandwidths)

    value = kernel_mean(x, x) + kernel_mean(y, y) - 2 * kernel_mean(x, y)
    return float(value.clamp(min=0).sqrt())
