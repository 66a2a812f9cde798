"""Benchmark cases of the masking family: random_masking, unshuffle, masked_patch_loss.

Byte model (GB/s column): the bytes a fused kernel must move, at 4 bytes per float32 element
(the case's dtype size in general) and 8 per int64 index:
  * random_masking fwd: read + write the kept rows (N * keep * D each) + noise, mask and
    ids_restore (N * L * (4 + 4 + 8)); fwd+bwd adds reading the kept-row gradient and writing
    the full [N, L, D] input gradient.
  * unshuffle fwd: read N * keep * D, write N * L * D (+ ids); bwd: read N * L * D, write
    N * keep * D.
  * masked_patch_loss fwd: read pred and the image pixels of the masked patches; fwd+bwd reads
    them twice and writes the full pred gradient.
Sizes: MAE ViT-B/16 (N=64, L=196, encoder D=768, decoder D=512, 224 px, patch 16, ratio 0.75);
VideoMAE (L=1568) in the full set.
"""

from __future__ import annotations

import torch

import sslfast
from sslfast.reference import masking as reference

from .harness import Case, Context, Inputs, backend_of, register_family

FAMILY = "masking"
SEED = 4321
RATIO = 0.75
MODEL_NOTE = ("masking: GB/s against the bytes a fused kernel must move (kept rows, full "
              "outputs, masked patches only for the loss); see sslfast/bench/masking.py")


def _randn(shape, device, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)



def _itemsize(dtype):
    return torch.empty((), dtype=dtype).element_size()


def random_masking_case(n: int, length: int, d: int, *, dtype_size=4, headline=False) -> Case:
    keep = reference.len_keep(length, RATIO)

    def make_inputs(device, dtype, requires_grad):
        x = _randn((n, length, d), device, dtype, SEED).requires_grad_(requires_grad)
        return Inputs((x, RATIO), {}, [x] if requires_grad else [])

    def nbytes(mode):
        fwd = 2 * n * keep * d * dtype_size + n * length * (4 + 4 + 8)
        return fwd if mode == "fwd" else fwd + n * keep * d * dtype_size + n * length * d * dtype_size

    return Case(FAMILY, "random_masking", f"N={n} L={length} D={d}", {"N": n, "L": length, "D": d},
                make_inputs, sslfast.random_masking, reference.random_masking, bytes=nbytes,
                backend=backend_of("random_masking"), headline=headline, cost=n * length * d,
                model_note=MODEL_NOTE)


def unshuffle_case(n: int, length: int, d: int, *, dtype_size=4) -> Case:
    keep = reference.len_keep(length, RATIO)

    def make_inputs(device, dtype, requires_grad):
        x_visible = _randn((n, keep, d), device, dtype, SEED + 1).requires_grad_(requires_grad)
        token = _randn((1, 1, d), device, dtype, SEED + 2).requires_grad_(requires_grad)
        noise = torch.rand(n, length, generator=torch.Generator().manual_seed(SEED + 3)).to(device)
        ids_restore = torch.argsort(torch.argsort(noise, dim=1), dim=1)
        return Inputs((x_visible, ids_restore, token), {},
                      [x_visible, token] if requires_grad else [])

    def nbytes(mode):
        fwd = (n * keep * d + n * length * d) * dtype_size + n * length * 8
        return fwd if mode == "fwd" else 2 * fwd

    return Case(FAMILY, "unshuffle", f"N={n} L={length} D={d}", {"N": n, "L": length, "D": d},
                make_inputs, sslfast.unshuffle, reference.unshuffle, bytes=nbytes,
                backend=backend_of("unshuffle"), cost=n * length * d, model_note=MODEL_NOTE)


def loss_case(n: int, image: int, patch: int, *, loss="l2", dtype_size=4, headline=False) -> Case:
    side = image // patch
    length, features = side * side, patch * patch * 3
    masked = length - reference.len_keep(length, RATIO)

    def make_inputs(device, dtype, requires_grad):
        pred = _randn((n, length, features), device, dtype, SEED + 4).requires_grad_(requires_grad)
        imgs = _randn((n, 3, image, image), device, dtype, SEED + 5)
        noise = torch.rand(n, length, generator=torch.Generator().manual_seed(SEED + 6))
        _, mask, _ = reference.random_masking(torch.zeros(n, length, 1), RATIO, noise=noise)
        return Inputs((pred, imgs, mask.to(device=device, dtype=dtype), patch), {"loss": loss},
                      [pred] if requires_grad else [])

    def nbytes(mode):
        fwd = 2 * n * masked * features * dtype_size + n * length * dtype_size
        return fwd if mode == "fwd" else 2 * fwd + n * length * features * dtype_size

    return Case(FAMILY, "masked_patch_loss", f"N={n} {image}px p={patch} {loss}",
                {"N": n, "image": image, "patch": patch, "loss": loss}, make_inputs,
                sslfast.masked_patch_loss, reference.masked_patch_loss, bytes=nbytes,
                backend=backend_of("masked_patch_loss"), headline=headline,
                cost=n * length * features * 4, model_note=MODEL_NOTE)


@register_family(FAMILY)
def cases(ctx: Context) -> list:
    size = _itemsize(ctx.dtype)
    if ctx.sizes == "tiny":
        return [random_masking_case(4, 16, 8, dtype_size=size), unshuffle_case(4, 16, 8, dtype_size=size),
                loss_case(2, 32, 8, dtype_size=size)]
    vit = [random_masking_case(64, 196, 768, dtype_size=size, headline=True),
           unshuffle_case(64, 196, 512, dtype_size=size),
           loss_case(64, 224, 16, dtype_size=size, headline=True)]
    if ctx.sizes == "quick":
        return vit
    if ctx.device.type == "cuda":
        return vit + [random_masking_case(256, 196, 768, dtype_size=size),
                      unshuffle_case(256, 196, 512, dtype_size=size),
                      loss_case(256, 224, 16, dtype_size=size),
                      random_masking_case(32, 1568, 768, dtype_size=size),
                      unshuffle_case(32, 1568, 384, dtype_size=size)]
    return vit + [loss_case(64, 192, 32, loss="l1", dtype_size=size),
                  random_masking_case(8, 1568, 768, dtype_size=size)]
