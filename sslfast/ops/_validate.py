"""Input checks shared by the public ops: each error names the argument and what it got."""

from __future__ import annotations

import math
import numbers

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def tensor(name, value, *, ndim=None, float_dtype=True):
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None and value.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(value.shape)}")
    if float_dtype and value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    return value


def embeddings(name, value):
    """A 2-D float [rows, dim] batch of embeddings with at least one row and one column."""
    tensor(name, value, ndim=2)
    if value.shape[0] == 0:
        raise ValueError(f"{name} must have at least one row, got shape {tuple(value.shape)}")
    if value.shape[1] == 0:
        raise ValueError(f"{name} must have at least one column, got shape {tuple(value.shape)}")
    return value


def same_device_and_dtype(pairs):
    (first_name, first), *rest = pairs
    for name, value in rest:
        if value.device != first.device:
            raise ValueError(f"{name} is on {value.device} but {first_name} is on {first.device}")
        if value.dtype != first.dtype:
            raise TypeError(f"{name} has dtype {value.dtype} but {first_name} has {first.dtype}")


def same_shape(name, value, other_name, other):
    if value.shape != other.shape:
        raise ValueError(
            f"{name} must have the shape of {other_name} {tuple(other.shape)}, got {tuple(value.shape)}")


def same_dim(name, value, other_name, other):
    if value.shape[1] != other.shape[1]:
        raise ValueError(
            f"{name} must have D = {other.shape[1]} columns like {other_name}, got {value.shape[1]}")


def positive_float(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if math.isnan(value) or value <= 0 or math.isinf(value):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return float(value)


def scalar_tensor(name, value, like_name, like):
    """A one-element float tensor (0-D or [1]) on the device of ``like``."""
    tensor(name, value)
    if value.numel() != 1 or value.dim() > 1:
        raise ValueError(f"{name} must be a 0-D or 1-element tensor, got shape {tuple(value.shape)}")
    if value.device != like.device:
        raise ValueError(f"{name} is on {value.device} but {like_name} is on {like.device}")
    return value
