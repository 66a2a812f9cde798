"""Argument checks shared by the public ops: each error names the argument and what it got.

They run on every call, so they read only cheap tensor metadata (no ``.device`` objects where a
flag does, no values, no host sync): the per-call target of docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import math
import numbers

import torch

Tensor = torch.Tensor
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INDEX_DTYPES = (torch.int32, torch.int64)


def tensor(name, value, *, ndim=None, float_dtype=True):
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None and value.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(value.shape)}")
    if float_dtype and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    return value


def embeddings(name, value):
    """A 2-D float [rows, dim] batch of embeddings with at least one row and one column."""
    tensor(name, value, ndim=2)
    rows, dim = value.shape
    if rows == 0 or dim == 0:
        raise ValueError(f"{name} must have at least one row and one column, got shape {tuple(value.shape)}")
    return value


def same_device(name, value, other_name, other):
    if value.is_cuda != other.is_cuda or value.get_device() != other.get_device():
        raise ValueError(f"{name} is on {value.device} but {other_name} is on {other.device}")


def same_device_and_dtype(name, value, other_name, other):
    same_device(name, value, other_name, other)
    if value.dtype != other.dtype:
        raise TypeError(f"{name} has dtype {value.dtype} but {other_name} has {other.dtype}")


def same_shape(name, value, other_name, other):
    if value.shape != other.shape:
        raise ValueError(
            f"{name} must have the shape of {other_name} {tuple(other.shape)}, got {tuple(value.shape)}")


def same_dim(name, value, other_name, other):
    if value.shape[1] != other.shape[1]:
        raise ValueError(
            f"{name} must have D = {other.shape[1]} columns like {other_name}, got {value.shape[1]}")


def real(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must be a number, got nan")
    return value


def positive_float(name, value):
    if type(value) is float and 0 < value < math.inf:  # the common case, without the generic checks
        return value
    value = real(name, value)
    if not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def boolean(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def integer(name, value, low, high=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def fraction(name, value, *, closed=False):
    """A number in [0, 1) (or [0, 1] when ``closed``)."""
    value = real(name, value)
    if not (0 <= value <= 1 if closed else 0 <= value < 1):
        raise ValueError(f"{name} must be in [0, 1{']' if closed else ')'}, got {value}")
    return value


def scalar_tensor(name, value, like_name, like):
    """A one-element float tensor (0-D or [1]) on the device of ``like``."""
    tensor(name, value)
    if value.numel() != 1 or value.dim() > 1:
        raise ValueError(f"{name} must be a 0-D or 1-element tensor, got shape {tuple(value.shape)}")
    same_device(name, value, like_name, like)
    return value


def labels(name, value, rows, like_name, like):
    """Integer class labels [rows] on the device of ``like``."""
    tensor(name, value, ndim=1, float_dtype=False)
    if value.dtype not in INDEX_DTYPES:
        raise TypeError(f"{name} must be int64 or int32, got dtype {value.dtype}")
    if value.shape[0] != rows:
        raise ValueError(f"{name} must have {rows} entries (one per row of {like_name}), got {value.shape[0]}")
    same_device(name, value, like_name, like)
    return value


def generator(name, value, like, *, same_device=False):
    """None, or a torch.Generator that can serve data like ``like``: on its device type, or (unless
    ``same_device``) a CPU generator for CUDA data (a key drawn on the host needs no device sync)."""
    if value is None:
        return None
    if not isinstance(value, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator, got {type(value).__name__}")
    on_cuda = value.device.type == "cuda"
    if (on_cuda and not like.is_cuda) or (same_device and on_cuda != like.is_cuda):
        raise ValueError(f"{name} is on {value.device} but the data is on {like.device}")
    return value
