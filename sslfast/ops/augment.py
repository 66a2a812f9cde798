"""Fused data augmentations: ``augment_images`` (random-resized-crop resampling + horizontal flip
+ Gaussian noise of a batch of images in one pass) and ``drop_mask`` (the hash-keyed masks of
edge dropping and feature masking).

The random parameters (crop boxes, flips) are drawn on the device by the callers in
``sslfast.functional.augment``; these take them explicitly, so every backend applies the same
augmentation. One registered-op call each (autograd: csrc/autograd/augment.cpp).
"""

from __future__ import annotations

import torch

from .. import _dispatch
from ..reference import augment as reference
from . import _validate as check
from .diffusion import _reference_key, _seed

__all__ = ["augment_images", "drop_mask"]


def augment_images(images, boxes, flips=None, *, size=None, noise_std=0.0, seed=None, generator=None):
    """Per sample b: the box ``boxes[b] = (top, left, height, width)`` (int64 pixels, inside the
    image) of ``images`` [B, C, H, W] resampled to ``size`` (an int for size x size, or (height,
    width); default (H, W); bilinear as
    ``F.interpolate(align_corners=False)``, no antialias), mirrored left-right where ``flips[b]``,
    plus ``noise_std`` * N(0, 1) drawn in the kernel (key ``seed``, else from ``generator``, as
    q_sample). One pass over the output; gradients flow to ``images``."""
    check.tensor("images", images, ndim=4)
    batch, _, height, width = images.shape
    check.tensor("boxes", boxes, ndim=2, float_dtype=False)
    if boxes.shape != (batch, 4) or boxes.is_floating_point():
        raise ValueError(f"boxes must be an integer tensor of shape ({batch}, 4), got {tuple(boxes.shape)} "
                         f"{boxes.dtype}")
    check.same_device("boxes", boxes, "images", images)
    if flips is None:
        flips = torch.zeros(batch, dtype=torch.bool, device=images.device)
    check.tensor("flips", flips, ndim=1, float_dtype=False)
    if flips.shape[0] != batch:
        raise ValueError(f"flips must have shape ({batch},), got {tuple(flips.shape)}")
    check.same_device("flips", flips, "images", images)
    out_height, out_width = _output_size(size, height, width)
    noise_std = check.real("noise_std", noise_std)
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    generator = check.generator("generator", generator, images)
    ops = _dispatch.ops_for("augment_images", images)
    if ops is None:
        if not images.is_cuda:  # the kernels check the boxes on CPU; so does the spec
            top, left, h, w = boxes.to(torch.int64).unbind(1)
            if bool(((h < 1) | (w < 1) | (top < 0) | (left < 0) | (top + h > height) | (left + w > width)).any()):
                raise ValueError(f"boxes must lie inside the {height} x {width} images")
        key = _reference_key(generator, seed) if noise_std else 0
        return reference.augment_images(images, boxes, flips, noise_std, key, out_height, out_width)
    return ops.augment_images(images, boxes, flips, noise_std, _seed(seed), generator, out_height, out_width)


def _output_size(size, height, width):
    """``size``: None (the input's H x W), an int (size x size) or a pair (height, width)."""
    if size is None:
        return height, width
    if isinstance(size, (tuple, list, torch.Size)):
        if len(size) != 2:
            raise ValueError(f"size must be an int or a (height, width) pair, got {size!r}")
        return check.integer("size[0]", size[0], 1), check.integer("size[1]", size[1], 1)
    size = check.integer("size", size, 1)
    return size, size


def drop_mask(x, p, *, per_column=False, seed=None, generator=None):
    """``x`` with each entry (``per_column``: each column of the last dimension, for every row)
    zeroed with probability ``p``, not rescaled: GRACE's feature masking, PyG's edge dropping as
    weights. The keep decision of index i is ``uniform(seed, i) >= p`` (kernels/random.h), so the
    mask is never stored (the gradient is x's mask, regenerated). ``seed`` defaults to a host draw
    from ``generator`` (CPU) or torch's default generator: no device sync."""
    check.tensor("x", x)
    p = check.fraction("p", p, closed=True)
    if per_column and x.dim() < 1:
        raise ValueError("per_column needs x with at least one dimension")
    seed = _host_seed(seed, generator)
    ops = _dispatch.ops_for("drop_mask", x)
    if ops is None:
        return reference.drop_mask(x, p, seed, bool(per_column))
    return ops.drop_mask(x, p, seed, bool(per_column))


def _host_seed(seed, generator):
    if seed is not None:
        return check.integer("seed", seed, 0)
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != "cpu":
            raise ValueError(f"generator must be a CPU generator (the key is drawn on the host), "
                             f"got one on {generator.device}")
    return int(torch.randint(0, 2 ** 62, (), generator=generator))
