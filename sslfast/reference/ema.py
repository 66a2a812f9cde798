"""Eager multi-tensor EMA: the per-parameter loop of lightly's ``update_momentum`` (and BYOL /
MoCo): target = momentum * target + (1 - momentum) * source, in place, one pair at a time."""

from __future__ import annotations

import torch


@torch.no_grad()
def ema_(targets, sources, momentum):
    for target, source in zip(targets, sources):
        target.mul_(momentum).add_(source, alpha=1.0 - momentum)
