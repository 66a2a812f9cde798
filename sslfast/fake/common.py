"""Shape and dtype rules the fakes share."""

from __future__ import annotations

import torch

HALF = (torch.float16, torch.bfloat16)


def acc_dtype(t: torch.Tensor) -> torch.dtype:
    """Losses, logsumexps and other reductions: float64 for float64 inputs, float32 otherwise."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def compute_dtype(t: torch.Tensor, widen: bool) -> torch.dtype:
    """The dtype a kernel computes in: the native CPU kernels widen half types to float32."""
    return torch.float32 if widen and t.dtype in HALF and t.device.type == "cpu" else t.dtype


def empty(like: torch.Tensor, dtype=None) -> torch.Tensor:
    """A contiguous tensor of like's shape: the kernels allocate their outputs contiguous whatever
    the inputs' strides (torch.empty_like would copy those strides)."""
    return like.new_empty(like.shape, dtype=dtype)


def scalar(like: torch.Tensor) -> torch.Tensor:
    return like.new_empty((), dtype=acc_dtype(like))


def rows(like: torch.Tensor, n) -> torch.Tensor:
    return like.new_empty((n,), dtype=acc_dtype(like))
