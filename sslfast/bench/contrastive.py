"""Benchmark cases of the contrastive family: nt_xent, info_nce, clip_loss, siglip_loss, supcon.

FLOP model: one N x M x D score GEMM forward = 2*N*M*D;
forward+backward is reported against 6*N*M*D (forward + the two gradient GEMMs), and the JSON
also carries ``tflops_recompute`` against 8*N*M*D (the fused kernels recompute the scores in
backward). The headline case is nt_xent 2N = 8192, D = 128, forward+backward; it is in every
size set except the hidden ``tiny`` one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import sslfast
from sslfast.reference import contrastive as reference

from .contrastive_model import predict
from .harness import Case, Context, Inputs, backend_of, register_family

FAMILY = "contrastive"
SEED = 1234
MODEL_NOTE = ("contrastive: TFLOP/s against 2*N*M*D (fwd, one score GEMM) and 6*N*M*D "
              "(fwd+bwd); the JSON also has tflops_recompute against 8*N*M*D (scores "
              "recomputed in bwd)")


def _randn(rows, dim, device, dtype, seed, *, unit=False):
    """Fixed-seed standard normal rows (generated on CPU so every device sees the same data)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, dim, generator=g)
    if unit:  # CLIP / SigLIP embeddings are L2-normalized before the loss
        x = F.normalize(x, dim=1)
    return x.to(device=device, dtype=dtype)


def _leaf(t, requires_grad):
    return t.detach().requires_grad_(requires_grad)


def _scalar(value, device, requires_grad):
    return torch.tensor(float(value), device=device, dtype=torch.float32,
                        requires_grad=requires_grad)


def _models(n, m, d):
    """(flops(mode), extra models): 2NMD fwd, 6NMD fwd+bwd; 8NMD fwd+bwd with recompute."""

    def flops(mode):
        return (2 if mode == "fwd" else 6) * n * m * d

    def recompute(mode):
        return (2 if mode == "fwd" else 8) * n * m * d

    return flops, {"recompute": recompute}


def _model(op, n, d, queue=0):
    """The kernel-time model's bf16 prediction (contrastive_model.py), carried in the record's
    params so that a GPU run sets it beside the measurement."""
    fwd, fwd_bwd = predict(op, n, d, queue)
    return {"model_ms_fwd_bf16": round(fwd, 4), "model_ms_fwd_bwd_bf16": round(fwd_bwd, 4)}


def nt_xent_case(two_n: int, d: int, *, temperature=0.5, headline=False) -> Case:
    """SimCLR NT-Xent over 2N = ``two_n`` views: z1, z2 are each [2N/2, D]."""
    n = two_n // 2

    def make_inputs(device, dtype, requires_grad):
        z1 = _leaf(_randn(n, d, device, dtype, SEED), requires_grad)
        z2 = _leaf(_randn(n, d, device, dtype, SEED + 1), requires_grad)
        return Inputs((z1, z2), {"temperature": temperature},
                      [z1, z2] if requires_grad else [])

    flops, extra = _models(two_n, two_n, d)
    return Case(FAMILY, "nt_xent", f"2N={two_n} D={d}", {"two_n": two_n, "N": n, "D": d, **_model("nt_xent", two_n, d)},
                make_inputs, sslfast.nt_xent, reference.nt_xent, flops=flops, extra_flops=extra,
                backend=backend_of("nt_xent"), headline=headline, cost=two_n * two_n * d,
                model_note=MODEL_NOTE)


def info_nce_case(n: int, d: int, *, queue: int = 0, temperature=0.07) -> Case:
    """InfoNCE: ``queue`` > 0 is MoCo-style (N queries vs a K-row queue, no in-batch
    negatives); ``queue`` == 0 is in-batch (SimCSE-style, N x N)."""
    in_batch = queue == 0

    def make_inputs(device, dtype, requires_grad):
        q = _leaf(_randn(n, d, device, dtype, SEED + 10), requires_grad)
        k = _leaf(_randn(n, d, device, dtype, SEED + 11), requires_grad)
        kwargs = {"temperature": temperature, "in_batch_negatives": in_batch}
        if queue:
            kwargs["queue"] = _randn(queue, d, device, dtype, SEED + 12)  # no gradient (MoCo)
        return Inputs((q, k), kwargs, [q, k] if requires_grad else [])

    m = n if in_batch else queue
    flops, extra = _models(n, m, d)
    label = f"N={n} D={d} in-batch" if in_batch else f"N={n} K={queue} D={d}"
    model = _model("info_nce_queue", n, d, queue) if queue else {}
    return Case(FAMILY, "info_nce", label, {"N": n, "K": queue, "D": d, "in_batch": in_batch, **model},
                make_inputs, sslfast.info_nce, reference.info_nce, flops=flops, extra_flops=extra,
                backend=backend_of("info_nce"), cost=n * m * d, model_note=MODEL_NOTE)


def clip_case(n: int, d: int) -> Case:
    """open_clip ClipLoss, logit_scale = 1/0.07 (already exponentiated), no bias."""

    def make_inputs(device, dtype, requires_grad):
        image = _leaf(_randn(n, d, device, dtype, SEED + 20, unit=True), requires_grad)
        text = _leaf(_randn(n, d, device, dtype, SEED + 21, unit=True), requires_grad)
        scale = _scalar(1 / 0.07, device, requires_grad)
        return Inputs((image, text, scale), {}, [image, text, scale] if requires_grad else [])

    flops, extra = _models(n, n, d)
    return Case(FAMILY, "clip_loss", f"N={n} D={d}", {"N": n, "D": d, **_model("clip", n, d)}, make_inputs,
                sslfast.clip_loss, reference.clip_loss, flops=flops, extra_flops=extra,
                backend=backend_of("clip_loss"), cost=n * n * d, model_note=MODEL_NOTE)


def siglip_case(n: int, d: int) -> Case:
    """open_clip SigLipLoss at its init: logit_scale = 10, logit_bias = -10."""

    def make_inputs(device, dtype, requires_grad):
        image = _leaf(_randn(n, d, device, dtype, SEED + 30, unit=True), requires_grad)
        text = _leaf(_randn(n, d, device, dtype, SEED + 31, unit=True), requires_grad)
        scale = _scalar(10.0, device, requires_grad)
        bias = _scalar(-10.0, device, requires_grad)
        return Inputs((image, text, scale, bias), {},
                      [image, text, scale, bias] if requires_grad else [])

    flops, extra = _models(n, n, d)
    return Case(FAMILY, "siglip_loss", f"N={n} D={d}", {"N": n, "D": d, **_model("siglip", n, d)}, make_inputs,
                sslfast.siglip_loss, reference.siglip_loss, flops=flops, extra_flops=extra,
                backend=backend_of("siglip_loss"), cost=n * n * d,
                model_note=MODEL_NOTE)


def supcon_case(n: int, d: int, *, classes: int = 100, pairwise: bool = False, temperature=0.1) -> Case:
    """SupCon over N rows (views already stacked) with labels drawn uniformly from ``classes``
    classes (fixed seed): Khosla's form, or pytorch-metric-learning's pairwise one."""

    def make_inputs(device, dtype, requires_grad):
        features = _leaf(_randn(n, d, device, dtype, SEED + 40), requires_grad)
        labels = torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(SEED + 41)).to(device)
        return Inputs((features, labels), {"temperature": temperature, "pairwise": pairwise},
                      [features] if requires_grad else [])

    flops, extra = _models(n, n, d)
    op = "supcon_pairwise" if pairwise else "supcon"
    return Case(FAMILY, "supcon", f"N={n} D={d} C={classes}" + (" pairwise" if pairwise else ""),
                {"N": n, "D": d, "classes": classes, "pairwise": pairwise, **_model(op, n, d)}, make_inputs,
                sslfast.supcon, reference.supcon, flops=flops, extra_flops=extra,
                backend=backend_of("supcon"), cost=n * n * d, model_note=MODEL_NOTE)


HEADLINE = dict(two_n=8192, d=128)


@register_family(FAMILY)
def cases(ctx: Context) -> list:
    headline = nt_xent_case(HEADLINE["two_n"], HEADLINE["d"], headline=True)
    if ctx.sizes == "tiny":  # the harness's own test: seconds, not minutes
        return [nt_xent_case(64, 16), info_nce_case(16, 16, queue=64), info_nce_case(32, 16),
                clip_case(32, 16), siglip_case(32, 16)]
    if ctx.device.type == "cuda":
        if ctx.sizes == "quick":  # issue 16's check: N = 8192 and 32768, D = 128 and 512
            return [nt_xent_case(n, d, headline=(n, d) == (HEADLINE["two_n"], HEADLINE["d"]))
                    for n in (8192, 32768) for d in (128, 512)] + [
                    case(n, d) for case in (clip_case, siglip_case) for n in (8192, 32768) for d in (128, 512)] + [
                    info_nce_case(256, 128, queue=16384)]
        return [headline, nt_xent_case(8192, 512), nt_xent_case(32768, 512),
                info_nce_case(256, 128, queue=16384), info_nce_case(256, 128, queue=65536),
                info_nce_case(4096, 128), info_nce_case(16384, 128),
                clip_case(8192, 512), clip_case(32768, 512),
                siglip_case(8192, 512), siglip_case(32768, 512), supcon_case(8192, 512)]
    if ctx.sizes == "quick":
        return [nt_xent_case(2048, 128), headline, info_nce_case(256, 128, queue=16384),
                clip_case(2048, 512), siglip_case(2048, 512)]
    return [nt_xent_case(2048, 128), nt_xent_case(4096, 128), headline,
            info_nce_case(256, 128, queue=16384), info_nce_case(4096, 128),
            clip_case(4096, 512), siglip_case(2048, 512), supcon_case(2048, 128)]
