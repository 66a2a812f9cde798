"""Fakes of the contrastive ops (kernels: csrc/cpu/contrastive.cpp, sslfast/triton/contrastive.py)."""

from __future__ import annotations


from .common import acc_dtype, compute_dtype, empty, rows, scalar


def fakes(widen: bool) -> dict:
    def prepare_rows(x, y, normalize):
        n = x.shape[0] + (0 if y is None else y.shape[0])
        out = x.new_empty((n, x.shape[1]), dtype=compute_dtype(x, widen))
        return out, out.new_empty((n if normalize else 0,), dtype=acc_dtype(out))

    def prepare_rows_bwd(grad, rows_, norms, split, dtype):
        d = rows_.shape[1]
        return rows_.new_empty((split, d), dtype=dtype), rows_.new_empty((rows_.shape[0] - split, d), dtype=dtype)

    def siglip_fwd(image, text, scale, bias, with_grads):
        if with_grads:
            return (scalar(image), empty(image), empty(text), empty(scale),
                    empty(bias))
        return (scalar(image),) + tuple(image.new_empty((0,)) for _ in range(4))

    def info_nce_fwd(q, k, queue, temperature, in_batch, fold):
        folded = q.new_empty(tuple(q.shape) if fold else (0,), dtype=acc_dtype(q))
        return scalar(q), rows(q, q.shape[0]), folded

    def paired_grads(image, text, scale, bias):
        return (empty(image), empty(text), empty(scale),
                empty(scale) if bias is None else empty(bias))

    return {
        "nt_xent": lambda z1, z2, temperature, normalize, exclude_positive: scalar(z1),
        "info_nce": lambda q, k, queue, temperature, normalize, in_batch: scalar(q),
        "clip_loss": lambda image, text, scale, bias: scalar(image),
        "siglip_loss": lambda image, text, scale, bias: scalar(image),
        "supcon": lambda features, labels, temperature, normalize, pairwise: scalar(features),
        "prepare_rows": prepare_rows,
        "prepare_rows_bwd": prepare_rows_bwd,
        "nt_xent_fwd": lambda z, temperature, exclude_positive: (scalar(z), rows(z, z.shape[0])),
        "nt_xent_bwd": lambda g, z, lse, temperature, exclude_positive: empty(z),
        "info_nce_fwd": info_nce_fwd,
        "info_nce_bwd": lambda g, q, k, queue, lse, folded, temperature, in_batch: (
            empty(q), empty(k)),
        "clip_loss_fwd": lambda image, text, scale, bias: (
            scalar(image), rows(image, image.shape[0]), rows(image, text.shape[0])),
        "clip_loss_bwd": lambda g, image, text, scale, bias, row_lse, col_lse: paired_grads(image, text, scale, bias),
        "siglip_loss_fwd": siglip_fwd,
        "siglip_loss_bwd": lambda g, image, text, scale, bias: paired_grads(image, text, scale, bias),
        "supcon_fwd": lambda z, labels, temperature, pairwise: (
            scalar(z), rows(z, z.shape[0]), z.new_empty((2, z.shape[0]), dtype=acc_dtype(z))),
        "supcon_bwd": lambda g, z, labels, lse, stats, temperature, pairwise: empty(z),
    }
