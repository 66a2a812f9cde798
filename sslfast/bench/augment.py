"""Benchmark cases of the augmentation ops: the fused random-resized-crop + flip + noise of a
batch of small images (SimCLR / BYOL views), and the drop masks of GRACE (feature columns, edges).

Baselines: the ``sslfast.reference.augment`` crop (eager: four gathers and a blend per pixel in
separate ops) and torch.compile of it, on the same boxes and flips. Their random numbers come from
torch (``randn_like`` noise, ``rand`` drop masks), as an eager pipeline draws them: the reference's
counter-based streams exist to test the kernels bit for bit, and inductor's lowering of Philox's
ten rounds did not finish in minutes (benchmarks/NOTES.md). Byte model:
read the crop's taps (at most the image once) and write the output, plus the noise-free read for
drop_mask (read x, write x).
"""

from __future__ import annotations

import torch

import sslfast
from sslfast import functional
from sslfast.reference import augment as reference

from .harness import Case, Context, Inputs, backend_of, register_family

FAMILY = "augment"
SEED = 2024
MODEL_NOTE = "augment: GB/s against reading the images once and writing the output once (fp32)"


def views_case(batch, channels, side, size, *, noise_std=0.1) -> Case:
    """One view of a batch: crop boxes and flips sampled once (seeded), then the fused op."""

    def make_inputs(device, dtype, requires_grad):
        g = torch.Generator().manual_seed(SEED)
        images = torch.randn(batch, channels, side, side, generator=g).to(device, dtype)
        boxes = functional.sample_crop_boxes(images.cpu(), generator=g).to(device)
        flips = (torch.rand(batch, generator=g) < 0.5).to(device)
        images.requires_grad_(requires_grad)
        return Inputs((images, boxes, flips), {"size": size, "noise_std": noise_std, "seed": 5},
                      [images] if requires_grad else [])

    def eager(images, boxes, flips, size, noise_std, seed):
        out = reference.augment_images(images, boxes, flips, 0.0, seed, size, size)
        return out + noise_std * torch.randn_like(out) if noise_std else out

    def nbytes(mode):
        one = (batch * channels * side * side + batch * channels * size * size) * 4
        return one if mode == "fwd" else 3 * one

    return Case(FAMILY, "augment_images", f"B={batch} {channels}x{side}x{side}->{size}",
                {"B": batch, "C": channels, "side": side, "size": size}, make_inputs, sslfast.augment_images,
                eager, bytes=nbytes, backend=backend_of("augment_images"), modes=("fwd",),
                cost=batch * channels * size * size / 1e5, model_note=MODEL_NOTE)


def mask_case(rows, columns, *, per_column) -> Case:
    def make_inputs(device, dtype, requires_grad):
        g = torch.Generator().manual_seed(SEED + 1)
        x = torch.randn(rows, columns, generator=g).to(device, dtype).requires_grad_(requires_grad)
        return Inputs((x, 0.3), {"per_column": per_column, "seed": 9}, [x] if requires_grad else [])

    def eager(x, p, per_column, seed):
        return x * (torch.rand(x.shape[-1] if per_column else x.shape, device=x.device) >= p).to(x.dtype)

    return Case(FAMILY, "drop_mask", f"{rows}x{columns} {'columns' if per_column else 'entries'}",
                {"rows": rows, "columns": columns, "per_column": per_column}, make_inputs, sslfast.drop_mask, eager,
                bytes=lambda mode: (2 if mode == "fwd" else 4) * rows * columns * 4, backend=backend_of("drop_mask"),
                cost=rows * columns / 1e5, model_note=MODEL_NOTE)


@register_family(FAMILY)
def cases(ctx: Context) -> list:
    if ctx.sizes == "tiny":
        return [views_case(4, 1, 12, 10), mask_case(20, 8, per_column=True)]
    if ctx.device.type == "cuda":
        return [views_case(256, 3, 32, 32), views_case(512, 3, 96, 96), mask_case(2708, 1433, per_column=True),
                mask_case(1, 10_000_000, per_column=False)]
    out = [views_case(256, 1, 28, 28), views_case(256, 3, 32, 32), mask_case(2708, 1433, per_column=True),
           mask_case(1, 1_000_000, per_column=False)]
    return out[:2] if ctx.sizes == "quick" else out
