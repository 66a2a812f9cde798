"""Contrastive losses across processes: each rank scores its LOCAL rows against the GLOBAL batch.

``sslfast.nt_xent(..., process_group=group)`` (and ``info_nce``, ``clip_loss``, ``siglip_loss``,
``supcon``) land here. Every rank all-gathers the embeddings (with gradients, uneven local batch
sizes allowed), computes the loss rows of its own samples against every sample of every rank,
and returns

    sum(local row losses) * world_size / N_global

so that the mean over ranks is the single-process loss of the concatenated batch, and, under
DDP's gradient averaging, every parameter gradient equals the single-process gradient of the
full-batch loss (docs/distributed.md). The gathered tensors' backward all-reduces their gradient
and hands each rank the rows it owns: the gradient of the sum over ranks.

The math runs in Python, not in the fused C++ / Triton kernels (they take one concatenated batch
and have no row-offset argument): ``_BlockReduce`` streams over tiles of at most ``BLOCK`` local
rows x ``BLOCK`` global columns, reduces each tile of logits (logsumexp, SigLIP's softplus sum, or
PML's per-pair softplus) in float32 (float64 for float64 inputs), and recomputes the tiles in
backward. No rank ever holds an N x N matrix: memory is O((N_local + N_global) * D) plus a few
BLOCK x BLOCK tiles. SigLIP's ``ring=True`` passes the
text chunks around the ring instead (big_vision style), so no rank holds the global text.

Inputs are checked before any collective, and the result of every rank's checks (plus D, dtype,
options, the world size each rank expects) is exchanged first: a bad input on ANY rank raises a
ValueError / TypeError on EVERY rank instead of a hang.
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .ops import _validate as check
# the single-process ops' argument checks: every rank runs them before its first collective
from .ops.contrastive import _check_info_nce, _check_nt_xent, _check_pair, _check_supcon

__all__ = ["all_gather", "all_gather_with_grad", "is_process_group", "BLOCK"]

BLOCK = 1024  # rows and columns of a streamed tile: bounds the scratch to a few BLOCK x BLOCK tensors
_INF = float("inf")


# --------------------------------------------------------------------------------------------
# Argument checks and the metadata exchange
# --------------------------------------------------------------------------------------------


def is_process_group(value) -> bool:
    return dist.is_available() and isinstance(value, dist.ProcessGroup)


def _group(process_group):
    if not is_process_group(process_group):
        raise TypeError("process_group must be a torch.distributed ProcessGroup (e.g. torch.distributed.group.WORLD)"
                        f" or None, got {type(process_group).__name__}")
    if not dist.is_initialized():
        raise ValueError("process_group given but torch.distributed is not initialized")
    return process_group


def _describe(t):
    """(dtype, D, device type) of a tensor argument, compared across ranks (None when absent)."""
    if not isinstance(t, torch.Tensor):
        return None if t is None else type(t).__name__
    return (str(t.dtype), t.shape[1] if t.dim() == 2 else None, t.device.type)


def _rows(t):
    return t.shape[0] if isinstance(t, torch.Tensor) and t.dim() > 0 else 0


def _sync(group, op, checks, same, rows, expect=None):
    """Run the local ``checks`` (a callable), then exchange every rank's outcome and metadata in
    one all_gather_object, and raise on every rank if any rank failed or disagrees.

    ``same``: a callable returning {name: value} that must be equal on all ranks (dtype, D,
    options; compared as repr strings); ``rows``: {name: local row count}; ``expect``: (rank,
    world_size) this rank was told (open_clip's constructor arguments), or None. Returns
    {name: [rows of rank 0, rank 1, ...]}.

    Any exception of the checks or of building ``same`` is caught and sent: one rank raising
    before the collective would leave the others blocked in all_gather_object."""
    error, values = None, {}
    try:
        checks()
        values = {name: repr(value) for name, value in same().items()}
    except Exception as e:  # any local failure: reported to every rank, re-raised here below
        error = e
    world = dist.get_world_size(group)
    mine = (None if error is None else f"{type(error).__name__}: {error}", values,
            rows if error is None else None, expect)
    everyone = [None] * world
    dist.all_gather_object(everyone, mine, group=group)
    if error is not None:
        raise error
    for r, (err, _, _, _) in enumerate(everyone):
        if err is not None:
            raise ValueError(f"{op}: rank {r} rejected its input ({err})")
    for r, (_, _, _, expected) in enumerate(everyone):
        if expected is not None and tuple(expected) != (r, world):
            raise ValueError(f"rank / world_size: the process of rank {r} in a group of {world} was told rank "
                             f"{expected[0]} of world_size {expected[1]}")
    for name in values:
        seen = [s[name] for _, s, _, _ in everyone]
        if any(v != seen[0] for v in seen):
            raise ValueError(f"{op}: {name} differs across ranks: " + ", ".join(
                f"rank {r}: {v}" for r, v in enumerate(seen)))
    return {name: [rw[name] for _, _, rw, _ in everyone] for name in rows}


def _compute_dtype(t):
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _autocast_off(device):
    """Autocast disabled on ``device``'s type. An autograd.Function's forward runs under the
    caller's autocast (its tile matmuls would be bf16 / fp16) while backward usually does not:
    a bf16 forward with a float32 backward gives wrong gradients, and the single-process fused op
    computes in float32 under autocast anyway."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------------------------
# Gathers
# --------------------------------------------------------------------------------------------


def _gather_rows(x, group, sizes):
    """cat over ranks of each rank's ``x`` (rows ``sizes[r]``), through one padded all_gather."""
    x = x.contiguous()
    top = max(sizes)
    if x.shape[0] < top:
        x = torch.cat([x, x.new_zeros((top - x.shape[0],) + tuple(x.shape[1:]))])
    parts = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(parts, x, group=group)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])


class _AllGather(torch.autograd.Function):
    """Forward: the rows of every rank, cast to ``dtype`` (None: x's). Backward: every rank's loss
    used every row, so each row's gradient is the sum over ranks (all_reduce), of which a rank
    keeps its own rows. The cast is inside so that the gradient is summed in ``dtype`` (float32
    for bf16 / fp16 inputs) and rounded to x's dtype only once, after the sum."""

    @staticmethod
    def forward(ctx, x, group, sizes, rank, dtype=None):
        ctx.group, ctx.sizes, ctx.rank, ctx.x_dtype = group, sizes, rank, x.dtype
        rows = _gather_rows(x, group, sizes)
        return rows if dtype is None else rows.to(dtype)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()  # all_reduce is in place; the incoming grad may be shared
        dist.all_reduce(grad, group=ctx.group)
        start = sum(ctx.sizes[:ctx.rank])
        return grad[start:start + ctx.sizes[ctx.rank]].to(ctx.x_dtype), None, None, None, None


def _row_sizes(x, group, name="x"):
    def checks():
        check.tensor(name, x, float_dtype=False)
        if x.dim() == 0:
            raise ValueError(f"{name} must have at least one dimension (the rows), got a 0-D tensor")

    def same():
        return {f"{name}.dtype": str(x.dtype), f"{name}.shape[1:]": tuple(x.shape[1:])}

    return _sync(group, "all_gather", checks, same, {name: _rows(x)})[name]


def all_gather_with_grad(x, process_group):
    """``cat`` over the ranks of ``process_group`` of each rank's ``x`` (local batch sizes may
    differ), differentiable: each rank's ``x.grad`` receives the sum over ranks of the gradient
    of its rows, i.e. the gradient of the sum of every rank's loss. Dtype and trailing shape must
    match across ranks (checked on every rank first)."""
    group = _group(process_group)
    sizes = _row_sizes(x, group)
    return _AllGather.apply(x, group, sizes, dist.get_rank(group))


@torch.no_grad()
def all_gather(x, process_group):
    """``cat`` over the ranks of each rank's ``x``, without gradient (MoCo: the keys every rank
    enqueues into the shared queue). Uneven row counts allowed."""
    group = _group(process_group)
    sizes = _row_sizes(x, group)  # checks x on every rank first
    return _gather_rows(x.detach(), group, sizes)


# --------------------------------------------------------------------------------------------
# Local rows x global columns, streamed over tiles
# --------------------------------------------------------------------------------------------


class _Masks:
    """Which (row, column) pairs count, described per row so a tile's mask is built on the fly:
    ``exclude`` [M] or [M, k] global column indices left out (self, a positive); ``labels``
    (row labels [M], column labels [K], "different" | "same") keeps columns by label;
    ``positive`` [M]: SigLIP's +1 column."""

    def __init__(self, exclude=None, labels=None, positive=None):
        self.exclude = None if exclude is None else (exclude if exclude.dim() == 2 else exclude[:, None])
        self.labels, self.positive = labels, positive

    def keep(self, r0, r1, c0, c1, device):
        cols = torch.arange(c0, c1, device=device)
        keep = None
        if self.exclude is not None:
            keep = (self.exclude[r0:r1, :, None] != cols[None, None, :]).all(dim=1)
        if self.labels is not None:
            row_labels, col_labels, how = self.labels
            same = row_labels[r0:r1, None] == col_labels[None, c0:c1]
            by_label = ~same if how == "different" else same
            keep = by_label if keep is None else keep & by_label
        return keep

    def flip_positives(self, x, r0, r1, c0, c1):
        """Negate, in place, each row's SigLIP positive entry that falls in the tile: x = -z * l
        with z = +1 there and -1 elsewhere."""
        if self.positive is None:
            return x
        pos = self.positive[r0:r1]
        # gather / scatter one entry per row (rows whose positive is not in the tile write their
        # entry back unchanged): no nonzero, so no host sync per tile on CUDA
        hit = ((pos >= c0) & (pos < c1))[:, None]
        idx = (pos - c0).clamp(0, c1 - c0 - 1)[:, None]
        entry = x.gather(1, idx)
        return x.scatter_(1, idx, torch.where(hit, -entry, entry))


# The tile helpers work in place on the logits tile they are given (one tile-sized buffer, not
# several): peak memory is what docs/distributed.md promises.


def _block_values(mode, logits, keep, masks, tile, extra):
    """Per-row reduction of one tile: logsumexp (mode "lse"), sum of -logsigmoid(z * l)
    ("siglip"), or sum of softplus(extra - l) over kept columns ("pair")."""
    if mode == "lse":
        if keep is not None:
            logits.masked_fill_(~keep, -_INF)
        return torch.logsumexp(logits, dim=1)
    if mode == "siglip":
        return F.softplus(masks.flip_positives(logits, *tile)).sum(dim=1)
    values = F.softplus(logits.neg_().add_(extra[:, None]))
    return values.masked_fill_(~keep, 0.0).sum(dim=1)


def _block_grad(mode, logits, keep, masks, tile, extra, out, g):
    """d(sum_r g_r out_r) / d logits of one tile (in place of ``logits``), and (mode "pair") the
    gradient of ``extra``."""
    if mode == "lse":
        p = logits.sub_(out[:, None]).exp_()
        if keep is not None:
            p.masked_fill_(~keep, 0.0)  # also kills exp(-inf - -inf) = nan of rows with no column
        return p.mul_(g[:, None]), None
    if mode == "siglip":  # d softplus(-z l) / d l = -z sigmoid(-z l)
        x = masks.flip_positives(logits, *tile).sigmoid_()
        return masks.flip_positives(x, *tile).mul_(g[:, None]), None
    s = logits.neg_().add_(extra[:, None]).sigmoid_().masked_fill_(~keep, 0.0).mul_(g[:, None])
    g_extra = s.sum(dim=1)
    return s.neg_(), g_extra


def _scalar(t, dtype):
    return None if t is None else t.detach().to(dtype).reshape(())


def _tiles(m, k, block):
    for r0 in range(0, m, block):
        for c0 in range(0, k, block):
            yield r0, min(r0 + block, m), c0, min(c0 + block, k)


class _BlockReduce(torch.autograd.Function):
    """out[r] = reduce over global columns c of f(logit_rc), logit_rc = scale * <a_r, c_c> + bias,
    over tiles of at most ``block`` x ``block`` (rows x columns); backward recomputes each tile
    (flash style). Gradients to a, c, scale, bias and (mode "pair") extra."""

    @staticmethod
    def forward(ctx, mode, a, c, scale, bias, extra, masks, block):
        with _autocast_off(a.device):
            return _BlockReduce._forward(ctx, mode, a, c, scale, bias, extra, masks, block)

    @staticmethod
    def _forward(ctx, mode, a, c, scale, bias, extra, masks, block):
        dt = _compute_dtype(a)
        a_, s_, b_ = a.detach().to(dt), _scalar(scale, dt), _scalar(bias, dt)
        x_ = None if extra is None else extra.detach().to(dt)
        out = torch.full((a.shape[0],), -_INF if mode == "lse" else 0.0, dtype=dt, device=a.device)
        for r0, r1, c0, c1 in _tiles(a.shape[0], c.shape[0], block):
            logits = (a_[r0:r1] @ c[c0:c1].detach().to(dt).T).mul_(s_)
            if b_ is not None:
                logits.add_(b_)
            keep = masks.keep(r0, r1, c0, c1, a.device)
            value = _block_values(mode, logits, keep, masks, (r0, r1, c0, c1), None if x_ is None else x_[r0:r1])
            out[r0:r1] = torch.logaddexp(out[r0:r1], value) if mode == "lse" else out[r0:r1] + value
        ctx.mode, ctx.masks, ctx.block = mode, masks, block
        ctx.save_for_backward(a, c, scale, bias, extra, out)
        return out

    @staticmethod
    def backward(ctx, g):
        with _autocast_off(g.device):
            return _BlockReduce._backward(ctx, g)

    @staticmethod
    def _backward(ctx, g):
        a, c, scale, bias, extra, out = ctx.saved_tensors
        mode, masks, block = ctx.mode, ctx.masks, ctx.block
        dt = out.dtype
        a_, s_, b_ = a.detach().to(dt), _scalar(scale, dt), _scalar(bias, dt)
        x_ = None if extra is None else extra.detach().to(dt)
        g = g.to(dt)
        need_a, need_c, need_s, need_b, need_x = (ctx.needs_input_grad[i] for i in (1, 2, 3, 4, 5))
        ga = torch.zeros_like(a_) if need_a else None
        gc = torch.zeros(c.shape, dtype=dt, device=c.device) if need_c else None
        gs = torch.zeros((), dtype=dt, device=a.device)
        gb = torch.zeros((), dtype=dt, device=a.device)
        gx = torch.zeros_like(out) if need_x else None
        for r0, r1, c0, c1 in _tiles(a.shape[0], c.shape[0], block):
            cb = c[c0:c1].detach().to(dt)
            dots = a_[r0:r1] @ cb.T
            logits = dots * s_ if b_ is None else (dots * s_).add_(b_)
            keep = masks.keep(r0, r1, c0, c1, a.device)
            G, g_extra = _block_grad(mode, logits, keep, masks, (r0, r1, c0, c1),
                                     None if x_ is None else x_[r0:r1], out[r0:r1], g[r0:r1])
            if need_s:
                gs += torch.vdot(G.reshape(-1), dots.reshape(-1))  # sum(G * dots) without a third tile
            if need_b:
                gb += G.sum()
            if need_x:
                gx[r0:r1] += g_extra
            del dots
            G.mul_(s_)  # d logit / d a_r = scale * c_c
            if need_a:
                ga[r0:r1] += G @ cb
            if need_c:
                gc[c0:c1] += G.T @ a_[r0:r1]
        return (None, None if ga is None else ga.to(a.dtype), None if gc is None else gc.to(c.dtype),
                gs.reshape(scale.shape).to(scale.dtype) if need_s else None,
                gb.reshape(bias.shape).to(bias.dtype) if need_b else None,
                None if gx is None else gx.to(extra.dtype), None, None)


def _reduce(mode, a, c, scale, bias=None, *, extra=None, masks=None, block=None):
    return _BlockReduce.apply(mode, a, c, scale, bias, extra, masks or _Masks(), block or BLOCK)


# --------------------------------------------------------------------------------------------
# The losses (called by sslfast.ops.contrastive when process_group is given)
# --------------------------------------------------------------------------------------------


def _setup(group, x):
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    return rank, world, _compute_dtype(x)


def _local_ids(offset, n, device):
    return offset + torch.arange(n, device=device)


def _float_scale(value, dt, device):
    return torch.tensor(value, dtype=dt, device=device)


def nt_xent(z1, z2, temperature=0.5, *, normalize=True, exclude_positive=False, process_group=None,
            expect=None):
    group = _group(process_group)

    def checks():
        _check_nt_xent(z1, z2, temperature)

    sizes = _sync(group, "nt_xent", checks, lambda: {"z1": _describe(z1), "temperature": temperature,
                                             "normalize": bool(normalize), "exclude_positive": bool(exclude_positive)},
                  {"z1": _rows(z1)}, expect)["z1"]
    rank, world, dt = _setup(group, z1)
    n, n_global, offset = z1.shape[0], sum(sizes), sum(sizes[:rank])
    a = torch.cat([z1, z2]).to(dt)
    columns = torch.cat([_AllGather.apply(z1, group, sizes, rank, dt), _AllGather.apply(z2, group, sizes, rank, dt)])
    if normalize:
        a, columns = F.normalize(a, dim=1), F.normalize(columns, dim=1)
    ids = _local_ids(offset, n, z1.device)
    self_ids = torch.cat([ids, ids + n_global])
    positive_ids = torch.cat([ids + n_global, ids])
    masks = _Masks(torch.stack([self_ids, positive_ids], 1) if exclude_positive else self_ids)
    scale = _float_scale(1.0 / float(temperature), dt, z1.device)
    lse = _reduce("lse", a, columns, scale, masks=masks)
    positive = (a[:n] * a[n:]).sum(dim=1) * scale
    return (lse - torch.cat([positive, positive])).sum() * (world / (2 * n_global))


def info_nce(query, key, temperature=0.07, queue=None, *, normalize=True, in_batch_negatives=True,
             process_group=None, expect=None):
    group = _group(process_group)

    def checks():
        _check_info_nce(query, key, queue, temperature)

    def same():
        return {"query": _describe(query), "queue": _describe(queue), "queue rows": _rows(queue),
                "temperature": temperature, "normalize": bool(normalize),
                "in_batch_negatives": bool(in_batch_negatives)}

    sizes = _sync(group, "info_nce", checks, same, {"query": _rows(query)}, expect)["query"]
    rank, world, dt = _setup(group, query)
    n_global = sum(sizes)
    q, k = query.to(dt), key.to(dt)
    if normalize:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    scale = _float_scale(1.0 / float(temperature), dt, query.device)
    positive = (q * k).sum(dim=1) * scale
    lse = positive
    if in_batch_negatives:  # every rank's keys; the own key is the positive column, counted once
        keys = _AllGather.apply(key, group, sizes, rank, dt)
        lse = _reduce("lse", q, F.normalize(keys, dim=1) if normalize else keys, scale)
    if queue is not None:  # the shared queue, the same rows on every rank; no gradient (MoCo)
        negatives = queue.detach().to(dt)
        lse = torch.logaddexp(lse, _reduce("lse", q, F.normalize(negatives, dim=1) if normalize else negatives, scale))
    return (lse - positive).sum() * (world / n_global)


def _pair_checks(image, text, logit_scale, logit_bias, bias_required):
    return lambda: _check_pair(image, text, logit_scale, logit_bias, bias_required)


def clip_loss(image, text, logit_scale, logit_bias=None, *, process_group=None, expect=None):
    group = _group(process_group)
    sizes = _sync(group, "clip_loss", _pair_checks(image, text, logit_scale, logit_bias, False),
                  lambda: {"image": _describe(image), "logit_bias": logit_bias is None}, {"image": _rows(image)},
                  expect)["image"]
    rank, world, dt = _setup(group, image)
    n_global = sum(sizes)
    images = _AllGather.apply(image, group, sizes, rank, dt)
    texts = _AllGather.apply(text, group, sizes, rank, dt)
    lse_image = _reduce("lse", image, texts, logit_scale, logit_bias)
    lse_text = _reduce("lse", text, images, logit_scale, logit_bias)
    positive = (image.to(dt) * text.to(dt)).sum(dim=1) * logit_scale.to(dt).reshape(())
    if logit_bias is not None:
        positive = positive + logit_bias.to(dt).reshape(())
    return (lse_image.sum() + lse_text.sum() - 2 * positive.sum()) * (world / (2 * n_global))


def siglip_loss(image, text, logit_scale, logit_bias, *, process_group=None, ring=False, expect=None):
    group = _group(process_group)
    sizes = _sync(group, "siglip_loss", _pair_checks(image, text, logit_scale, logit_bias, True),
                  lambda: {"image": _describe(image), "ring": bool(ring)}, {"image": _rows(image)}, expect)["image"]
    rank, world, dt = _setup(group, image)
    n_global = sum(sizes)
    if ring:
        rows = _SigLipRing.apply(image, text, logit_scale, logit_bias, group, sizes, rank)
    else:
        texts = _AllGather.apply(text, group, sizes, rank, dt)
        masks = _Masks(positive=_local_ids(sum(sizes[:rank]), image.shape[0], image.device))
        rows = _reduce("siglip", image, texts, logit_scale, logit_bias, masks=masks)
    return rows.sum() * (world / n_global)


def supcon(features, labels, temperature=0.1, *, normalize=True, pairwise=False, process_group=None,
           expect=None):
    group = _group(process_group)

    def checks():
        _check_supcon(features, labels, temperature)

    def same():
        return {"features": _describe(features), "labels": str(getattr(labels, "dtype", None)),
                "temperature": temperature, "normalize": bool(normalize), "pairwise": bool(pairwise)}

    sizes = _sync(group, "supcon", checks, same, {"features": _rows(features)}, expect)["features"]
    rank, world, dt = _setup(group, features)
    n, n_global, offset = features.shape[0], sum(sizes), sum(sizes[:rank])
    a = features.to(dt)
    columns = _AllGather.apply(features, group, sizes, rank, dt)
    if normalize:
        a, columns = F.normalize(a, dim=1), F.normalize(columns, dim=1)
    all_labels = _gather_rows(labels, group, sizes)
    scale = _float_scale(1.0 / float(temperature), dt, features.device)
    ids = _local_ids(offset, n, features.device)
    _, inverse, counts = torch.unique(all_labels, return_inverse=True, return_counts=True)
    positives = counts[inverse[offset:offset + n]] - 1  # per local anchor
    if pairwise:
        negative_lse = _reduce("lse", a, columns, scale, masks=_Masks(labels=(labels, all_labels, "different")))
        pair_sums = _reduce("pair", a, columns, scale, extra=negative_lse,
                            masks=_Masks(ids, labels=(labels, all_labels, "same")))
        pairs = (counts * (counts - 1)).sum().clamp(min=1)
        return pair_sums.sum() * (world / pairs.to(dt))
    lse = _reduce("lse", a, columns, scale, masks=_Masks(ids))
    # sum over a row's positives of s_ip: its dot with the sum of its class's rows minus itself
    class_sums = torch.zeros(counts.shape[0], a.shape[1], dtype=dt, device=a.device).index_add(0, inverse, columns)
    positive_sum = (a * (class_sums[inverse[offset:offset + n]] - a)).sum(dim=1) * scale
    rows = torch.where(positives > 0, lse - positive_sum / positives.clamp(min=1), 0.0)
    return rows.sum() * (world / n_global)


# --------------------------------------------------------------------------------------------
# SigLIP ring: text chunks travel around the ring, never gathered
# --------------------------------------------------------------------------------------------


def _exchange(tensors, group, rank, world, incoming_rows):
    """Send ``tensors`` to the next rank and receive the previous rank's (``incoming_rows`` rows
    each), in one batch_isend_irecv."""
    to_rank = dist.get_global_rank(group, (rank + 1) % world)
    from_rank = dist.get_global_rank(group, (rank - 1) % world)
    received = [t.new_empty((incoming_rows,) + tuple(t.shape[1:])) for t in tensors]
    ops = [dist.P2POp(dist.isend, t.contiguous(), to_rank, group) for t in tensors]
    ops += [dist.P2POp(dist.irecv, r, from_rank, group) for r in received]
    for request in dist.batch_isend_irecv(ops):
        request.wait()
    return received


class _SigLipRing(torch.autograd.Function):
    """Per local image row: sum over every rank's text of -logsigmoid(z * logit). Step k scores the
    chunk of rank (rank - k) mod W, then passes it on; backward runs the ring again, carrying each
    chunk together with its gradient, and one last hop brings every chunk's gradient home. Holds
    two text chunks at a time; saves only the local tensors."""

    @staticmethod
    def forward(ctx, image, text, scale, bias, group, sizes, rank):
        with _autocast_off(image.device):
            return _SigLipRing._forward(ctx, image, text, scale, bias, group, sizes, rank)

    @staticmethod
    def _forward(ctx, image, text, scale, bias, group, sizes, rank):
        world, dt = len(sizes), _compute_dtype(image)
        chunk = text.detach().to(dt)
        out = torch.zeros(image.shape[0], dtype=dt, device=image.device)
        for step in range(world):
            source = (rank - step) % world
            masks = _Masks(positive=torch.arange(image.shape[0], device=image.device) if step == 0 else None)
            with torch.no_grad():
                out += _BlockReduce.forward(_NoCtx(), "siglip", image, chunk, scale, bias, None, masks, BLOCK)
            if step < world - 1:
                (chunk,) = _exchange([chunk], group, rank, world, sizes[(source - 1) % world])
        ctx.group, ctx.sizes, ctx.rank = group, sizes, rank
        ctx.save_for_backward(image, text, scale, bias)
        return out

    @staticmethod
    def backward(ctx, g):
        with _autocast_off(g.device):
            return _SigLipRing._backward(ctx, g)

    @staticmethod
    def _backward(ctx, g):
        image, text, scale, bias = ctx.saved_tensors
        group, sizes, rank = ctx.group, ctx.sizes, ctx.rank
        world, dt = len(sizes), _compute_dtype(image)
        chunk = text.detach().to(dt)
        grad_chunk = torch.zeros_like(chunk)
        ga = torch.zeros(image.shape, dtype=dt, device=image.device)
        gs = torch.zeros((), dtype=dt, device=image.device)
        gb = torch.zeros((), dtype=dt, device=image.device)
        for step in range(world):
            source = (rank - step) % world
            masks = _Masks(positive=torch.arange(image.shape[0], device=image.device) if step == 0 else None)
            inner = _NoCtx()
            with torch.no_grad():
                out = _BlockReduce.forward(inner, "siglip", image, chunk, scale, bias, None, masks, BLOCK)
                inner.saved_tensors = (image, chunk, scale, bias, None, out)
                inner.needs_input_grad = (False, True, True, True, True, False, False, False)
                _, da, dc, ds, db, _, _, _ = _BlockReduce.backward(inner, g)
            ga += da.to(dt)
            grad_chunk += dc
            gs += ds.to(dt).reshape(())
            gb += db.to(dt).reshape(())
            incoming = sizes[(source - 1) % world]
            if step < world - 1:
                chunk, grad_chunk = _exchange([chunk, grad_chunk], group, rank, world, incoming)
            elif world > 1:  # the chunk now held belongs to rank + 1; its gradient goes home, ours comes back
                (grad_chunk,) = _exchange([grad_chunk], group, rank, world, sizes[rank])
        return (ga.to(image.dtype), grad_chunk.to(text.dtype),
                gs.reshape(scale.shape).to(scale.dtype) if ctx.needs_input_grad[2] else None,
                gb.reshape(bias.shape).to(bias.dtype) if ctx.needs_input_grad[3] else None, None, None, None)


class _NoCtx:
    """A stand-in autograd context, to run _BlockReduce's forward / backward as plain functions."""

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors
