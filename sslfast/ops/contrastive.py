"""Fused contrastive losses: NT-Xent (SimCLR / DCL / GRACE), InfoNCE (MoCo, SimCSE), CLIP,
SigLIP and SupCon.

Each function checks its arguments (cheap checks only), asks the op table for the backend
(``sslfast._dispatch``) and makes one call of the registered op, whose autograd is C++
(csrc/autograd/contrastive.cpp). The kernels never build the N x M logits: they stream score
tiles through an online logsumexp and recompute the tiles in backward. Semantics:
``sslfast.reference.contrastive``.
"""

from __future__ import annotations


from .. import _dispatch
from ..reference import contrastive as reference
from . import _validate as check

__all__ = ["nt_xent", "info_nce", "clip_loss", "siglip_loss", "supcon"]


def nt_xent(z1, z2, temperature=0.5, *, normalize=True, exclude_positive=False, process_group=None):
    """SimCLR NT-Xent over the 2N views ``cat(z1, z2)``; a float32 (float64 for float64) scalar.

    Row i's positive is row (i + N) mod 2N; its denominator is every other row, positive
    included, unless ``exclude_positive=True`` (DCL). Mean over the 2N rows.
    ``process_group``: the batch is the concatenation of every rank's (``sslfast.distributed``;
    returns this rank's share, docs/distributed.md).
    """
    if process_group is not None:
        from .. import distributed
        return distributed.nt_xent(z1, z2, temperature, normalize=normalize, exclude_positive=exclude_positive,
                                   process_group=process_group)
    temperature = _check_nt_xent(z1, z2, temperature)
    ops = _dispatch.ops_for("nt_xent", z1)
    if ops is None:
        return reference.nt_xent(z1, z2, temperature, normalize=bool(normalize),
                                 exclude_positive=bool(exclude_positive))
    return ops.nt_xent(z1, z2, temperature, bool(normalize), bool(exclude_positive))


def info_nce(query, key, temperature=0.07, queue=None, *, normalize=True, in_batch_negatives=True,
             process_group=None):
    """InfoNCE: the positive of query i is key i; negatives are the other keys (when
    ``in_batch_negatives``) and every row of ``queue`` (MoCo; it gets no gradient).
    ``process_group``: in-batch negatives are every rank's keys; ``queue`` is shared (the same
    rows on every rank); see docs/distributed.md."""
    if process_group is not None:
        from .. import distributed
        return distributed.info_nce(query, key, temperature, queue, normalize=normalize,
                                    in_batch_negatives=in_batch_negatives, process_group=process_group)
    temperature = _check_info_nce(query, key, queue, temperature)
    ops = _dispatch.ops_for("info_nce", query)
    if ops is None:
        return reference.info_nce(query, key, temperature, queue, normalize=bool(normalize),
                                  in_batch_negatives=bool(in_batch_negatives))
    return ops.info_nce(query, key, queue, temperature, bool(normalize), bool(in_batch_negatives))


# Argument checks, shared with the process_group path (sslfast/distributed.py runs them on every
# rank before its first collective). Each returns the validated temperature.
def _check_nt_xent(z1, z2, temperature):
    check.embeddings("z1", z1)
    check.embeddings("z2", z2)
    check.same_device_and_dtype("z2", z2, "z1", z1)
    check.same_shape("z2", z2, "z1", z1)
    return check.positive_float("temperature", temperature)


def _check_info_nce(query, key, queue, temperature):
    check.embeddings("query", query)
    check.embeddings("key", key)
    check.same_device_and_dtype("key", key, "query", query)
    check.same_shape("key", key, "query", query)
    if queue is not None:
        check.embeddings("queue", queue)
        check.same_device_and_dtype("queue", queue, "query", query)
        check.same_dim("queue", queue, "query", query)
    return check.positive_float("temperature", temperature)


def _check_supcon(features, labels, temperature):
    check.embeddings("features", features)
    check.labels("labels", labels, features.shape[0], "features", features)
    return check.positive_float("temperature", temperature)


def _check_pair(image, text, logit_scale, logit_bias, bias_required):
    check.embeddings("image", image)
    check.embeddings("text", text)
    check.same_device_and_dtype("text", text, "image", image)
    check.same_shape("text", text, "image", image)
    check.scalar_tensor("logit_scale", logit_scale, "image", image)
    if logit_bias is None:
        if bias_required:
            raise TypeError("logit_bias must be a tensor, got None")
    else:
        check.scalar_tensor("logit_bias", logit_bias, "image", image)


def clip_loss(image, text, logit_scale, logit_bias=None, *, process_group=None):
    """open_clip ``ClipLoss``: (CE(image -> text) + CE(text -> image)) / 2 over
    logits = logit_scale * image @ text.T (+ logit_bias). ``logit_scale`` is already
    exponentiated and gets a gradient; no normalization inside. ``process_group``: over every
    rank's pairs (docs/distributed.md)."""
    if process_group is not None:
        from .. import distributed
        return distributed.clip_loss(image, text, logit_scale, logit_bias, process_group=process_group)
    _check_pair(image, text, logit_scale, logit_bias, bias_required=False)
    ops = _dispatch.ops_for("clip_loss", image)
    if ops is None:
        return reference.clip_loss(image, text, logit_scale, logit_bias)
    return ops.clip_loss(image, text, logit_scale, logit_bias)


def siglip_loss(image, text, logit_scale, logit_bias, *, process_group=None, ring=False):
    """open_clip ``SigLipLoss``: -sum(logsigmoid(z * (s * x_i . y_j + b))) / N with
    z = +1 on the diagonal, -1 elsewhere. ``process_group``: over every rank's pairs; ``ring``:
    text chunks travel rank to rank instead of being all-gathered (docs/distributed.md)."""
    if process_group is not None:
        from .. import distributed
        return distributed.siglip_loss(image, text, logit_scale, logit_bias, process_group=process_group,
                                       ring=ring)
    if ring:
        raise ValueError("ring=True needs a process_group")
    _check_pair(image, text, logit_scale, logit_bias, bias_required=True)
    ops = _dispatch.ops_for("siglip_loss", image)
    if ops is None:
        return reference.siglip_loss(image, text, logit_scale, logit_bias)
    return ops.siglip_loss(image, text, logit_scale, logit_bias)


def supcon(features, labels, temperature=0.1, *, normalize=True, pairwise=False, process_group=None):
    """Supervised contrastive loss over the rows of ``features`` [N, D] (views stacked as rows):
    row i's positives are the other rows with label ``labels[i]``, its negatives the rows with
    other labels. A float32 (float64 for float64) scalar; no N x N matrix is built.

    ``pairwise=False``: SupCon (Khosla et al. 2020, contrast_mode "all"): per anchor, the mean over
    its positives of -log softmax over all other rows; mean over the N anchors (an anchor without
    positives contributes 0). ``pairwise=True``: pytorch-metric-learning's ``NTXentLoss`` with
    labels: one term per positive pair (i, p), -log(e^s_ip / (e^s_ip + sum of e^s_in over i's
    negatives n)), averaged over the pairs. With labels ``cat(arange(N), arange(N))`` both equal
    ``nt_xent(features[:N], features[N:], temperature)``. ``process_group``: the rows (and
    labels) are the concatenation of every rank's (docs/distributed.md).
    """
    if process_group is not None:
        from .. import distributed
        return distributed.supcon(features, labels, temperature, normalize=normalize, pairwise=pairwise,
                                  process_group=process_group)
    temperature = _check_supcon(features, labels, temperature)
    ops = _dispatch.ops_for("supcon", features)
    if ops is None:
        return reference.supcon(features, labels, temperature, normalize=bool(normalize), pairwise=bool(pairwise))
    return ops.supcon(features, labels, temperature, bool(normalize), bool(pairwise))
