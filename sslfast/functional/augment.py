"""Batched, on-device augmentations built on the fused ops of ``sslfast.ops.augment``.

Images: ``random_resized_crop`` (torchvision ``RandomResizedCrop``'s box sampling, vectorized
over the batch), ``random_flip``, ``gaussian_noise``, and ``augment`` doing all three in one
kernel pass. Graphs: ``drop_edges`` (as edge weights, so the graph and its CSR stay fixed: feed
them to ``gcn_aggregate`` / ``spmm``), ``mask_features`` (GRACE) and ``dropout`` (``F.dropout``
on the hash-keyed mask: the GAT encoders' feature dropout). Every random draw happens
on the data's device (or as a host-side key): no host sync, static shapes.
"""

from __future__ import annotations

import math

import torch

from ..ops import _validate as check
from ..ops.augment import augment_images, drop_mask

__all__ = ["sample_crop_boxes", "augment", "random_resized_crop", "random_flip", "gaussian_noise",
           "drop_edges", "mask_features", "dropout"]

ATTEMPTS = 10  # torchvision RandomResizedCrop.get_params


def _pair(name, value):
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise TypeError(f"{name} must be a (low, high) pair, got {value!r}")
    low, high = (check.real(f"{name}[{k}]", v) for k, v in enumerate(value))
    if not 0 < low <= high:
        raise ValueError(f"{name} must satisfy 0 < low <= high, got {value!r}")
    return low, high


def _device_generator(generator, images):
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != images.device.type:
        raise ValueError(f"generator is on {generator.device} but images are on {images.device}")
    return generator


def sample_crop_boxes(images, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), *, generator=None):
    """torchvision ``RandomResizedCrop.get_params`` for every sample at once: up to 10 tries of an
    area fraction ~ U(scale) and a log-uniform aspect ratio, the first that fits wins, else the
    central crop clamped to ``ratio``. Returns int64 [B, 4] boxes (top, left, height, width)."""
    check.tensor("images", images, ndim=4)
    scale, ratio = _pair("scale", scale), _pair("ratio", ratio)
    if scale[1] > 1:
        raise ValueError(f"scale must lie in (0, 1], got {scale!r}")
    generator = _device_generator(generator, images)
    batch, _, height, width = images.shape
    device = images.device
    u = torch.rand((4, batch, ATTEMPTS), generator=generator, device=device, dtype=torch.float64)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[0])
    aspect = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[1])
    w = torch.round(torch.sqrt(area * aspect)).to(torch.int64)
    h = torch.round(torch.sqrt(area / aspect)).to(torch.int64)
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    top = torch.floor(u[2] * (height - h + 1)).to(torch.int64)
    left = torch.floor(u[3] * (width - w + 1)).to(torch.int64)
    first = torch.argmax(fits.to(torch.int8), dim=1, keepdim=True)  # the first fitting try
    chosen = [t.gather(1, first).squeeze(1) for t in (top, left, h, w)]
    in_ratio = width / height  # fallback: central crop
    if in_ratio < ratio[0]:
        fw, fh = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fw, fh = int(round(height * ratio[1])), height
    else:
        fw, fh = width, height
    fallback = torch.tensor([(height - fh) // 2, (width - fw) // 2, fh, fw], device=device)
    boxes = torch.stack(chosen, dim=1)
    return torch.where(fits.any(dim=1, keepdim=True), boxes, fallback)


def _flips(images, p, generator, name="flip_p"):
    p = check.fraction(name, p, closed=True)
    draws = torch.rand(images.shape[0], generator=generator, device=images.device)
    return draws < p


def augment(images, size=None, *, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip_p=0.5, noise_std=0.0,
            generator=None):
    """Random resized crop (to ``size``: an int for size x size, or (height, width); default the
    input's H x W) + horizontal flip
    with probability ``flip_p`` + Gaussian noise of std ``noise_std``, per sample, in one fused
    pass over the output (``sslfast.augment_images``)."""
    generator = _device_generator(generator, images)
    boxes = sample_crop_boxes(images, scale, ratio, generator=generator)
    return augment_images(images, boxes, _flips(images, flip_p, generator), size=size, noise_std=noise_std,
                          generator=generator)


def random_resized_crop(images, size=None, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), *, generator=None):
    """torchvision ``RandomResizedCrop(size, scale, ratio, antialias=False)`` per sample."""
    return augment(images, size, scale=scale, ratio=ratio, flip_p=0.0, generator=generator)


def _whole(images):
    batch, _, height, width = images.shape
    return torch.tensor([0, 0, height, width], device=images.device).expand(batch, 4)


def random_flip(images, p=0.5, *, generator=None):
    """Horizontal flip of each sample with probability ``p``."""
    check.tensor("images", images, ndim=4)
    generator = _device_generator(generator, images)
    return augment_images(images, _whole(images), _flips(images, p, generator, "p"))


def gaussian_noise(images, std, *, generator=None):
    """``images + std * N(0, 1)``, the noise drawn in the kernel."""
    check.tensor("images", images, ndim=4)
    return augment_images(images, _whole(images), noise_std=std, generator=generator)


def drop_edges(edges, p, *, generator=None):
    """Edge dropping (PyG ``dropout_edge``, GRACE) as weights: a float [E] of 1 (kept) and 0
    (dropped with probability ``p``), in the edge order of ``edges`` (an edge_index [2, E] or a
    Graph's input). Feed it as ``edge_weight`` to ``gcn_aggregate`` / ``spmm``: the same result as
    rebuilding the graph without those edges, with no graph build and no host sync."""
    from ..graph import Graph

    count = edges.num_edges if isinstance(edges, Graph) else None
    if count is None:
        check.tensor("edges", edges, ndim=2, float_dtype=False)
        if edges.shape[0] != 2:
            raise ValueError(f"edges must be an edge_index of shape [2, E], got {tuple(edges.shape)}")
        count, device = edges.shape[1], edges.device
    else:
        device = edges.col.device
    return drop_mask(torch.ones(count, device=device), p, generator=generator)


def mask_features(x, p, *, generator=None):
    """GRACE ``drop_feature``: each feature column zeroed (for every node) with probability ``p``.
    ``x`` may be a sparse CSR tensor (bag-of-words features): its stored values are masked, the
    same columns as for the dense ``x`` under the same seed."""
    check.tensor("x", x, ndim=2)
    if x.layout != torch.sparse_csr:
        return drop_mask(x, p, per_column=True, generator=generator)
    # column c is kept where uniform(seed, c) >= p: entry c of a drop_mask over a row of ones
    keep = drop_mask(torch.ones(x.shape[1], dtype=x.dtype, device=x.device), p, generator=generator)
    return _csr_with_values(x, x.values() * keep[x.col_indices()])


def _csr_with_values(x, values):
    """The CSR tensor x with its stored values replaced (same rows, columns and shape)."""
    return torch.sparse_csr_tensor(x.crow_indices(), x.col_indices(), values, x.shape, check_invariants=False)


def dropout(x, p, training=True, *, seed=None, generator=None):
    """``F.dropout(x, p, training)`` with ``drop_mask``'s hash-keyed mask: each entry zeroed with
    probability ``p``, the kept ones scaled by 1 / (1 - p). The mask is regenerated in backward,
    never stored, and on CPU the hash is vectorized (AVX-512), where ``F.dropout`` draws and keeps
    a Bernoulli mask. A different random stream from ``F.dropout``'s; the same distribution.
    ``x`` may be a sparse CSR tensor: its stored values are dropped (the zeros stay zeros)."""
    check.tensor("x", x)
    p = check.fraction("p", p, closed=True)
    if not training or p == 0.0:
        return x
    if x.layout == torch.sparse_csr:  # bag-of-words features: the stored entries only
        return _csr_with_values(x, dropout(x.values(), p, training, seed=seed, generator=generator))
    if p == 1.0:
        return drop_mask(x, 1.0, seed=seed, generator=generator)  # x * 0: zeros, NaN stays NaN
    return drop_mask(x, p, seed=seed, generator=generator) * (1.0 / (1.0 - p))
