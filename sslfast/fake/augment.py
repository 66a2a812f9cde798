"""Fakes of the augmentation ops (kernels: csrc/cpu/augment.cpp, sslfast/triton/augment.py)."""

from __future__ import annotations

from .common import empty


def fakes(widen: bool) -> dict:
    def images(images, boxes, flips, noise_std, seed, generator, out_height, out_width):
        return images.new_empty((images.shape[0], images.shape[1], out_height, out_width))

    def images_bwd(grad, boxes, flips, height, width):
        return grad.new_empty((grad.shape[0], grad.shape[1], height, width))

    return {
        "augment_images": images,
        "augment_images_fwd": images,
        "augment_images_bwd": images_bwd,
        "drop_mask": lambda x, p, seed, per_column: empty(x),
        "drop_mask_fwd": lambda x, p, seed, per_column: empty(x),
        "ema_": lambda targets, sources, momentum: None,
    }
