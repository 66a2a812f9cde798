"""Triton kernels of the contrastive losses (NT-Xent, InfoNCE, CLIP, SigLIP).

Registered as ``torch.ops.sslfast_triton.*`` with the schemas, fakes and autograd of
``csrc/schema.cpp``; the math is ``sslfast.reference.contrastive``.

Every kernel streams [BLOCK_M, BLOCK_N] score tiles (``tl.dot`` over D in BLOCK_D chunks, fp64 as a
broadcast product-sum; fp32 accumulation for fp16/bf16/fp32 inputs, fp64 for fp64) through an
online logsumexp, so the N x M logits never exist. Backward recomputes the tiles from the saved
logsumexps: a row-owner kernel for the left operand and a column-owner kernel for the right one,
so every output element has exactly one writer. No atomics anywhere; per-program partials are
reduced by torch in a fixed order, so two runs are bitwise equal.

Scalars that must stay exact in float64 (1/T, logit_scale, logit_bias, the incoming gradient)
reach the kernels as 0-D tensors: Triton passes Python floats as fp32.
"""

from __future__ import annotations

import inspect
import os

import torch
import triton
import triton.language as tl

from . import register

_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
# One tile config per kernel, no autotuning: for compute-sanitizer runs (make gpu-check), where
# benchmarking eight configs per kernel under the sanitizer would take most of the time budget.
_ONE_CONFIG = os.environ.get("SSLFAST_TRITON_ONE_CONFIG") == "1"

# Widest D chunk per tl.dot and per gradient program: wider chunks spill registers.
_MAX_BLOCK_D = 128


def _tile_configs(min_block_m=32):
    if _INTERPRETED:
        # The interpreter runs every program in Python: few, small programs keep CPU tests fast.
        return [triton.Config({"BLOCK_M": 32, "BLOCK_N": 32}, num_warps=4, num_stages=1)]
    fp64 = triton.Config({"BLOCK_M": max(32, min_block_m), "BLOCK_N": _FP64_BLOCK_N}, num_warps=8, num_stages=1)
    if _ONE_CONFIG:
        return [triton.Config({"BLOCK_M": max(64, min_block_m), "BLOCK_N": 64}, num_warps=4, num_stages=3), fp64]
    shapes = [
        (32, 64, 4, 4), (64, 32, 4, 2), (64, 64, 4, 3), (64, 128, 4, 3),
        (128, 32, 4, 4), (128, 64, 8, 3), (128, 128, 8, 2), (128, 128, 8, 3),
    ]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)
            for bm, bn, warps, stages in shapes if bm >= min_block_m] + [fp64]


# float64 has no tl.dot on NVIDIA GPUs in Triton 3.6 (an assertion in semantic.dot, seen on an H100),
# so _dot multiplies fp64 tiles as a broadcast product-sum. That [BLOCK_M, BLOCK_D, BLOCK_N] product
# lives in registers: fp64 gets its own small tiles (BLOCK_N and BLOCK_D of 16), and no other dtype
# uses them. fp64 is the gradcheck dtype, not a speed path. The interpreter runs the same product
# with its usual tiles (sixteen-wide D chunks there cost 7x the test time for no extra coverage).
_FP64_BLOCK_N = 16
_FP64_MAX_BLOCK_D = 16


def _configs_for_dtype(configs, named_args, **kwargs):
    # By the accumulation dtype that every launch passes (_kernel_options): an fp64 logit_scale
    # next to fp32 embeddings is not an fp64 launch.
    fp64 = kwargs.get("ACC_DTYPE") == tl.float64
    kept = [c for c in configs if (c.kwargs["BLOCK_N"] == _FP64_BLOCK_N) == fp64]
    return kept or configs  # the interpreter's single config serves every dtype


def _no_benchmark(kernel_call, quantiles=None, **_):
    return [0.0, 0.0, 0.0] if quantiles else 0.0


# With one config per dtype (_ONE_CONFIG) the prune leaves one config: never time it (Triton
# versions differ on whether they benchmark a single pruned config; older ones take no do_bench).
_AUTOTUNE_EXTRA = ({"do_bench": _no_benchmark}
                   if _ONE_CONFIG and not _INTERPRETED and "do_bench" in inspect.signature(triton.autotune).parameters
                   else {})


def _autotune(min_block_m=32):
    # The autotuner keys on D plus every tensor argument's dtype, so fp64 tunes apart.
    return triton.autotune(configs=_tile_configs(min_block_m), key=["D"],
                           prune_configs_by={"early_config_prune": _configs_for_dtype}, **_AUTOTUNE_EXTRA)


# The CLIP forward writes one column partial per (row block, column): a larger BLOCK_M keeps that
# buffer at n^2 / 64 values or fewer.
_CLIP_MIN_BLOCK_M = 32 if _INTERPRETED else 64
_MIN_BLOCK_M = min(config.kwargs["BLOCK_M"] for config in _tile_configs())


# ---------------------------------------------------------------------------------------------
# Tile helpers
# ---------------------------------------------------------------------------------------------


@triton.jit
def _dot(a, b, acc, DOT_PRECISION: tl.constexpr, UPCAST_BF16: tl.constexpr):
    # The interpreter multiplies bf16 tiles as their raw uint16 bits; fp32 products of bf16
    # values are exact, so widening first gives the tensor-core result.
    if UPCAST_BF16:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    if a.dtype == tl.float64:  # no fp64 tl.dot on GPUs in Triton 3.6: see _FP64_BLOCK_N
        return acc + tl.sum(a[:, :, None] * b[None, :, :], axis=1)
    return tl.dot(a, b, acc, input_precision=DOT_PRECISION)


@triton.jit
def _load_tile(ptr, rows, row_ok, d_offs, D):
    # rows are int64: rows * D passes 2^31 for large embedding tables.
    return tl.load(ptr + rows[:, None] * D + d_offs[None, :],
                   mask=row_ok[:, None] & (d_offs[None, :] < D), other=0.0)


@triton.jit
def _resident_tile(ptr, rows, row_ok, D, BLOCK_D: tl.constexpr, ONE_D_BLOCK: tl.constexpr):
    # When D fits one chunk the owned rows are loaded once, not once per streamed tile.
    if ONE_D_BLOCK:
        tile = _load_tile(ptr, rows, row_ok, tl.arange(0, BLOCK_D), D)
    else:
        tile = tl.zeros((1, BLOCK_D), tl.float32)
    return tile


@triton.jit
def _tile_dots(a_tile, a_ptr, a_rows, a_ok, b_ptr, b_rows, b_ok, D,
               BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr,
               ONE_D_BLOCK: tl.constexpr, ACC_DTYPE: tl.constexpr,
               DOT_PRECISION: tl.constexpr, UPCAST_BF16: tl.constexpr):
    """[BLOCK_A, BLOCK_B] tile of a[a_rows] @ b[b_rows]^T, accumulated in ACC_DTYPE."""
    dots = tl.zeros((BLOCK_A, BLOCK_B), ACC_DTYPE)
    if ONE_D_BLOCK:
        b = _load_tile(b_ptr, b_rows, b_ok, tl.arange(0, BLOCK_D), D)
        dots = _dot(a_tile, tl.trans(b), dots, DOT_PRECISION, UPCAST_BF16)
    else:
        for d_start in range(0, D, BLOCK_D):
            d_offs = d_start + tl.arange(0, BLOCK_D)
            a = _load_tile(a_ptr, a_rows, a_ok, d_offs, D)
            b = _load_tile(b_ptr, b_rows, b_ok, d_offs, D)
            dots = _dot(a, tl.trans(b), dots, DOT_PRECISION, UPCAST_BF16)
    return dots


@triton.jit
def _tile_dots_and_values(a_tile, a_ptr, a_rows, a_ok, b_ptr, b_rows, b_ok, d_offs, D,
                          BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr,
                          ONE_D_BLOCK: tl.constexpr, ACC_DTYPE: tl.constexpr,
                          DOT_PRECISION: tl.constexpr, UPCAST_BF16: tl.constexpr):
    """(a[a_rows] @ b[b_rows]^T, b[b_rows, d_offs]): the streamed rows are both the right
    operand of the scores and the values a gradient tile multiplies, so with one D chunk
    they are loaded once."""
    values = _load_tile(b_ptr, b_rows, b_ok, d_offs, D)
    if ONE_D_BLOCK:
        dots = _dot(a_tile, tl.trans(values), tl.zeros((BLOCK_A, BLOCK_B), ACC_DTYPE),
                    DOT_PRECISION, UPCAST_BF16)
    else:
        dots = _tile_dots(a_tile, a_ptr, a_rows, a_ok, b_ptr, b_rows, b_ok, D, BLOCK_A, BLOCK_B,
                          BLOCK_D, ONE_D_BLOCK, ACC_DTYPE, DOT_PRECISION, UPCAST_BF16)
    return dots, values


@triton.jit
def _row_dots(a_ptr, a_rows, b_ptr, b_rows, row_ok, D,
              BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """a[a_rows[r]] . b[b_rows[r]] per r: the positive logits, O(BLOCK_M * D) instead of a tile."""
    acc = tl.zeros((BLOCK_M,), ACC_DTYPE)
    for d_start in range(0, D, BLOCK_D):
        d_offs = d_start + tl.arange(0, BLOCK_D)
        a = _load_tile(a_ptr, a_rows, row_ok, d_offs, D).to(ACC_DTYPE)
        b = _load_tile(b_ptr, b_rows, row_ok, d_offs, D).to(ACC_DTYPE)
        acc += tl.sum(a * b, axis=1)
    return acc


@triton.jit
def _online_logsumexp(running_max, running_sum, scores):
    """Fold a [BLOCK_M, BLOCK_N] tile (masked entries -inf) into per-row (max, sum exp(s - max))."""
    new_max = tl.maximum(running_max, tl.max(scores, axis=1))
    # A row with nothing unmasked yet has new_max = -inf; shifting by 0 keeps exp at 0, not NaN.
    shift = tl.where(new_max == float("-inf"), 0.0, new_max)
    running_sum = (running_sum * tl.exp(running_max - shift)
                   + tl.sum(tl.exp(scores - shift[:, None]), axis=1))
    return new_max, running_sum


@triton.jit
def _sigmoid(x):
    # exp of -|x| only: never overflows, for either sign.
    e = tl.exp(-tl.abs(x))
    return tl.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@triton.jit
def _log1p(u):
    # Goldberg's log1p from log: exact to a few ulp where log(1 + u) alone rounds u away.
    w = 1.0 + u
    return tl.where(w == 1.0, u, tl.log(w) * (u / (w - 1.0)))


# ---------------------------------------------------------------------------------------------
# NT-Xent (SimCLR / DCL / GRACE)
# ---------------------------------------------------------------------------------------------


@_autotune()
@triton.jit
def _nt_xent_fwd_kernel(z_ptr, inv_temperature_ptr, lse_ptr, positive_ptr, n_rows, n_half, D,
                        EXCLUDE_POSITIVE: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                        ONE_D_BLOCK: tl.constexpr, ACC_DTYPE: tl.constexpr,
                        DOT_PRECISION: tl.constexpr, UPCAST_BF16: tl.constexpr):
    """NT-Xent forward over z = cat(z1, z2) [2N, D], one program per BLOCK_M rows:

        S = z z^T / T,    p(i) = (i + N) mod 2N,    positive_i = S_{i, p(i)}
        lse_i = log sum_{j != i} exp(S_ij)            (j != p(i) too when EXCLUDE_POSITIVE: DCL)

    The launcher takes loss = mean_i(lse_i - positive_i). Reference:
    sslfast.reference.contrastive.nt_xent (lightly NTXentLoss without memory bank).
    """
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    positives = (rows + n_half) % n_rows
    inv_t = tl.load(inv_temperature_ptr)
    positive = _row_dots(z_ptr, rows64, z_ptr, positives.to(tl.int64), row_ok, D,
                         BLOCK_M, BLOCK_D, ACC_DTYPE) * inv_t
    # The positive enters the denominator here, once, so the column loop skips it like i itself.
    if EXCLUDE_POSITIVE:
        row_max = tl.full((BLOCK_M,), float("-inf"), ACC_DTYPE)
        row_sum = tl.zeros((BLOCK_M,), ACC_DTYPE)
    else:
        row_max = positive
        row_sum = tl.full((BLOCK_M,), 1.0, ACC_DTYPE)
    z_rows = _resident_tile(z_ptr, rows64, row_ok, D, BLOCK_D, ONE_D_BLOCK)
    for col_start in range(0, n_rows, BLOCK_N):
        cols = col_start + tl.arange(0, BLOCK_N)
        col_ok = cols < n_rows
        dots = _tile_dots(z_rows, z_ptr, rows64, row_ok, z_ptr, cols.to(tl.int64), col_ok, D,
                          BLOCK_M, BLOCK_N, BLOCK_D, ONE_D_BLOCK, ACC_DTYPE,
                          DOT_PRECISION, UPCAST_BF16)
        keep = (col_ok[None, :] & (cols[None, :] != rows[:, None])
                & (cols[None, :] != positives[:, None]))
        scores = tl.where(keep, dots * inv_t, float("-inf"))
        row_max, row_sum = _online_logsumexp(row_max, row_sum, scores)
    tl.store(lse_ptr + rows64, row_max + tl.log(row_sum), mask=row_ok)
    tl.store(positive_ptr + rows64, positive, mask=row_ok)


@_autotune()
@triton.jit
def _nt_xent_bwd_kernel(z_ptr, lse_ptr, inv_temperature_ptr, coef_ptr, grad_z_ptr,
                        n_rows, n_half, D,
                        EXCLUDE_POSITIVE: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                        ONE_D_BLOCK: tl.constexpr, ACC_DTYPE: tl.constexpr,
                        DOT_PRECISION: tl.constexpr, UPCAST_BF16: tl.constexpr):
    """NT-Xent backward, one program per (BLOCK_M rows, BLOCK_D columns of D) of grad_z:

        dz_k = g / (2N T) * sum_j W_kj z_j
        W_kj = [j allowed for k] (exp(S_kj - lse_k) + exp(S_kj - lse_j)) - 2 [j == p(k)]

    S is symmetric and allowed(k, j) = allowed(j, k), so the column-direction terms of the loss
    fold into row k: one owner per output row, no column kernel. coef_ptr holds g / (2N T).
    Reference: autograd of sslfast.reference.contrastive.nt_xent.
    """
    pid_m = tl.program_id(0)
    pid_d = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    positives = (rows + n_half) % n_rows
    d_offs = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    inv_t = tl.load(inv_temperature_ptr)
    lse_rows = tl.load(lse_ptr + rows64, mask=row_ok, other=0.0)
    z_rows = _resident_tile(z_ptr, rows64, row_ok, D, BLOCK_D, ONE_D_BLOCK)
    acc = tl.zeros((BLOCK_M, BLOCK_D), ACC_DTYPE)
    for col_start in range(0, n_rows, BLOCK_N):
        cols = col_start + tl.arange(0, BLOCK_N)
        col_ok = cols < n_rows
        cols64 = cols.to(tl.int64)
        lse_cols = tl.load(lse_ptr + cols64, mask=col_ok, other=0.0)
        dots, z_cols = _tile_dots_and_values(z_rows, z_ptr, rows64, row_ok, z_ptr, cols64, col_ok,
                                             d_offs, D, BLOCK_M, BLOCK_N, BLOCK_D, ONE_D_BLOCK,
                                             ACC_DTYPE, DOT_PRECISION, UPCAST_BF16)
        scores = dots * inv_t
        allowed = col_ok[None, :] & (cols[None, :] != rows[:, None])
        if EXCLUDE_POSITIVE:
            allowed = allowed & (cols[None, :] != positives[:, None])
        weight = tl.where(allowed, tl.exp(scores - lse_rows[:, None])
                          + tl.exp(scores - lse_cols[None, :]), 0.0)
        weight -= tl.where(cols[None, :] == positives[:, None], 2.0, 0.0)
        acc = _dot(weight.to(z_cols.dtype), z_cols, acc, DOT_PRECISION, UPCAST_BF16)
    coef = tl.load(coef_ptr)
    out = grad_z_ptr + rows64[:, None] * D + d_offs[None, :]
    tl.store(out, (acc * coef).to(grad_z_ptr.dtype.element_ty),
             mask=row_ok[:, None] & (d_offs[None, :] < D))


# ---------------------------------------------------------------------------------------------
# InfoNCE (MoCo, SimCSE)
# ---------------------------------------------------------------------------------------------


@_autotune()
@triton.jit
def _info_nce_fwd_kernel(query_ptr, key_ptr, queue_ptr, inv_temperature_ptr, lse_ptr, positive_ptr,
                         n_rows, n_queue, D,
                         IN_BATCH_NEGATIVES: tl.constexpr, HAS_QUEUE: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                         ONE_D_BLOCK: tl.constexpr, ACC_DTYPE: tl.constexpr,
                         DOT_PRECISION: tl.constexpr, UPCAST_BF16: tl.constexpr):
    """InfoNCE forward, one program per BLOCK_M queries:

        positive_i = q_i . k_i / T
        lse_i = log( exp(positive_i) + sum_{j != i} exp(q_i . k_j / T) [IN_BATCH_NEGATIVES]
                     + sum_c exp(q_i . u_c / T) [HAS_QUEUE] )

    The launcher takes loss = mean_i(lse_i - positive_i). Reference:
    sslfast.reference.contrastive.info_nce (MoCo v2 with a queue, MoCo v3 / SimCSE in-batch).
    """
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    inv_t = tl.load(inv_temperature_ptr)
    positive = _row_dots(query_ptr, rows64, key_ptr, rows64, row_ok, D,
                         BLOCK_M, BLOCK_D, ACC_DTYPE) * inv_t
    # The positive is always in the denominator: it seeds the running logsumexp.
    row_max = positive
    row_sum = tl.full((BLOCK_M,), 1.0, ACC_DTYPE)
    q_rows = _resident_tile(query_ptr, rows64, row_ok, D, BLOCK_D, ONE_D_BLOCK)
    if IN_BATCH_NEGATIVES:
        for col_start in range(0, n_rows, BLOCK_N):
            cols = col_start + tl.arange(0, BLOCK_N)
            col_ok = cols < n_rows
            dots = _tile_dots(q_rows, query_ptr, rows64, row_ok, key_ptr, cols.to(tl.int64), col_ok,
                              D, BLOCK_M, BLOCK_N, BLOCK_D, ONE_D_BLOCK, ACC_DTYPE,
                              DOT_PRECISION, UPCAST_BF16)
            keep = col_ok[None, :] & (cols[None, :] != rows[:, None])
            scores = tl.where(keep, dots * inv_t, float("-inf"))
            row_max, row_sum = _online_logsumexp(row_max, row_sum, scores)
    if HAS_QUEUE:
        for col_start in range(0, n_queue, BLOCK_N):
            cols = col_start + tl.arange(0, BLOCK_N)
            col_ok = cols < n_queue
            dots = _tile_dots(q_rows, query_ptr, rows64, row_ok, queue_ptr, cols.to(tl.int64),
                              col_ok, D, BLOCK_M, BLOCK_N, BLOCK_D, ONE_D_BLOCK, ACC_DTYPE,
                              DOT_PRECISION, UPCAST_BF16)
            scores = tl.where(col_ok[None, :], dots * inv_t, float("-inf"))
            row_max, row_sum = _online_logsumexp(row_max, row_sum, scores)
    tl.store(lse_ptr + rows64, row_max + tl.log(row_sum), mask=row_ok)
    tl.store(positive_ptr + rows64, positive, mask=row_ok)


@_autotune()
@triton.jit
def _info_nce_bwd_query_kernel(query_ptr, key_ptr, queue_ptr, lse_ptr, inv_temperature_ptr,
                               coef_ptr, grad_query_ptr, grad_key_ptr, n_rows, n_queue, D,
                               IN_BATCH_NEGATIVES: tl.constexpr, HAS_QUEUE: tl.constexpr,
                               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                               BLOCK_D: tl.constexpr, ONE_D_BLOCK: tl.constexpr,
                               ACC_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
                               UPCAST_BF16: tl.constexpr):
    """InfoNCE backward for the queries, one program per (BLOCK_M rows, BLOCK_D columns of D):

        dq_i = g / (N T) * ( sum_{j keys in the denominator} P_ij k_j + sum_c P_ic u_c - k_i ),
        P_ij = exp(S_ij - lse_i)

    Without in-batch negatives key i is the only key in row i's denominator, so the key side is
    dq_i += g/(NT) (P_ii - 1) k_i and dk_i = g/(NT) (P_ii - 1) q_i, written here (no column
    kernel). coef_ptr holds g / (N T).
    Reference: autograd of sslfast.reference.contrastive.info_nce.
    """
    pid_m = tl.program_id(0)
    pid_d = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    d_offs = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    out_mask = row_ok[:, None] & (d_offs[None, :] < D)
    inv_t = tl.load(inv_temperature_ptr)
    coef = tl.load(coef_ptr)
    lse_rows = tl.load(lse_ptr + rows64, mask=row_ok, other=0.0)
    q_rows = _resident_tile(query_ptr, rows64, row_ok, D, BLOCK_D, ONE_D_BLOCK)
    acc = tl.zeros((BLOCK_M, BLOCK_D), ACC_DTYPE)
    if IN_BATCH_NEGATIVES:
        for col_start in range(0, n_rows, BLOCK_N):
            cols = col_start + tl.arange(0, BLOCK_N)
            col_ok = cols < n_rows
            dots, k_cols = _tile_dots_and_values(q_rows, query_ptr, rows64, row_ok, key_ptr,
                                                 cols.to(tl.int64), col_ok, d_offs, D, BLOCK_M,
                                                 BLOCK_N, BLOCK_D, ONE_D_BLOCK, ACC_DTYPE,
                                                 DOT_PRECISION, UPCAST_BF16)
            weight = tl.where(col_ok[None, :], tl.exp(dots * inv_t - lse_rows[:, None]), 0.0)
            weight -= tl.where(cols[None, :] == rows[:, None], 1.0, 0.0)
            acc = _dot(weight.to(k_cols.dtype), k_cols, acc, DOT_PRECISION, UPCAST_BF16)
    else:
        positive = _row_dots(query_ptr, rows64, key_ptr, rows64, row_ok, D,
                             BLOCK_M, BLOCK_D, ACC_DTYPE) * inv_t
        own_weight = tl.exp(positive - lse_rows) - 1.0
        k_own = _load_tile(key_ptr, rows64, row_ok, d_offs, D).to(ACC_DTYPE)
        q_own = _load_tile(query_ptr, rows64, row_ok, d_offs, D).to(ACC_DTYPE)
        acc += own_weight[:, None] * k_own
        tl.store(grad_key_ptr + rows64[:, None] * D + d_offs[None, :],
                 (own_weight[:, None] * q_own * coef).to(grad_key_ptr.dtype.element_ty),
                 mask=out_mask)
    if HAS_QUEUE:
        for col_start in range(0, n_queue, BLOCK_N):
            cols = col_start + tl.arange(0, BLOCK_N)
            col_ok = cols < n_queue
            dots, u_cols = _tile_dots_and_values(q_rows, query_ptr, rows64, row_ok, queue_ptr,
                                                 cols.to(tl.int64), col_ok, d_offs, D, BLOCK_M,
                                                 BLOCK_N, BLOCK_D, ONE_D_BLOCK, ACC_DTYPE,
                                                 DOT_PRECISION, UPCAST_BF16)
            weight = tl.where(col_ok[None, :], tl.exp(dots * inv_t - lse_rows[:, None]), 0.0)
            acc = _dot(weight.to(u_cols.dtype), u_cols, acc, DOT_PRECISION, UPCAST_BF16)
    tl.store(grad_query_ptr + rows64[:, None] * D + d_offs[None, :],
             (acc * coef).to(grad_query_ptr.dtype.element_ty), mask=out_mask)


@_autotune()
@triton.jit
def _info_nce_bwd_key_kernel(query_ptr, key_ptr, lse_ptr, inv_temperature_ptr, coef_ptr,
                             grad_key_ptr, n_rows, D,
                             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                             ONE_D_BLOCK: tl.constexpr, ACC_DTYPE: tl.constexpr,
                             DOT_PRECISION: tl.constexpr, UPCAST_BF16: tl.constexpr):
    """InfoNCE backward for the keys with in-batch negatives, one program per (BLOCK_M keys,
    BLOCK_D columns of D), streaming the queries and recomputing S^T tiles from the saved lse:

        dk_j = g / (N T) * ( sum_i P_ij q_i - q_j ),    P_ij = exp(q_i . k_j / T - lse_i)

    coef_ptr holds g / (N T). Reference: autograd of sslfast.reference.contrastive.info_nce.
    """
    pid_m = tl.program_id(0)
    pid_d = tl.program_id(1)
    keys = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    key_ok = keys < n_rows
    keys64 = keys.to(tl.int64)
    d_offs = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    inv_t = tl.load(inv_temperature_ptr)
    k_rows = _resident_tile(key_ptr, keys64, key_ok, D, BLOCK_D, ONE_D_BLOCK)
    acc = tl.zeros((BLOCK_M, BLOCK_D), ACC_DTYPE)
    for q_start in range(0, n_rows, BLOCK_N):
        queries = q_start + tl.arange(0, BLOCK_N)
        query_ok = queries < n_rows
        queries64 = queries.to(tl.int64)
        lse_queries = tl.load(lse_ptr + queries64, mask=query_ok, other=0.0)
        dots, q_cols = _tile_dots_and_values(k_rows, key_ptr, keys64, key_ok, query_ptr, queries64,
                                             query_ok, d_offs, D, BLOCK_M, BLOCK_N, BLOCK_D,
                                             ONE_D_BLOCK, ACC_DTYPE, DOT_PRECISION, UPCAST_BF16)
        weight = tl.where(query_ok[None, :], tl.exp(dots * inv_t - lse_queries[None, :]), 0.0)
        weight -= tl.where(queries[None, :] == keys[:, None], 1.0, 0.0)
        acc = _dot(weight.to(q_cols.dtype), q_cols, acc, DOT_PRECISION, UPCAST_BF16)
    coef = tl.load(coef_ptr)
    tl.store(grad_key_ptr + keys64[:, None] * D + d_offs[None, :],
             (acc * coef).to(grad_key_ptr.dtype.element_ty),
             mask=key_ok[:, None] & (d_offs[None, :] < D))


# ---------------------------------------------------------------------------------------------
# CLIP and SigLIP: logits S = logit_scale * image @ text^T (+ logit_bias)
# ---------------------------------------------------------------------------------------------


@triton.jit
def _load_scale_bias(scale_ptr, bias_ptr, HAS_BIAS: tl.constexpr, ACC_DTYPE: tl.constexpr):
    scale = tl.load(scale_ptr).to(ACC_DTYPE)
    if HAS_BIAS:
        bias = tl.load(bias_ptr).to(ACC_DTYPE)
    else:
        bias = tl.zeros((), ACC_DTYPE)
    return scale, bias


@_autotune(min_block_m=_CLIP_MIN_BLOCK_M)
@triton.jit
def _clip_loss_fwd_kernel(image_ptr, text_ptr, scale_ptr, bias_ptr, row_lse_ptr, positive_ptr,
                          col_partial_ptr, n_rows, n_cols, D,
                          HAS_BIAS: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                          ONE_D_BLOCK: tl.constexpr, ACC_DTYPE: tl.constexpr,
                          DOT_PRECISION: tl.constexpr, UPCAST_BF16: tl.constexpr):
    """CLIP forward, both directions in one pass, one program per BLOCK_M image rows:

        S_ij = scale * image_i . text_j (+ bias),    positive_i = S_ii
        row_lse_i = log sum_j exp(S_ij)                          (image -> text)
        col_partial[b, j] = log sum_{i in row block b} exp(S_ij)  (text -> image, partial)

    The launcher reduces col_lse_j = logsumexp_b col_partial[b, j] (fixed order) and takes
    loss = (mean_i(row_lse_i - S_ii) + mean_j(col_lse_j - S_jj)) / 2.
    Reference: sslfast.reference.contrastive.clip_loss (open_clip ClipLoss).
    """
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    scale, bias = _load_scale_bias(scale_ptr, bias_ptr, HAS_BIAS, ACC_DTYPE)
    positive = _row_dots(image_ptr, rows64, text_ptr, rows64, row_ok & (rows < n_cols), D,
                         BLOCK_M, BLOCK_D, ACC_DTYPE) * scale + bias
    row_max = tl.full((BLOCK_M,), float("-inf"), ACC_DTYPE)
    row_sum = tl.zeros((BLOCK_M,), ACC_DTYPE)
    image_rows = _resident_tile(image_ptr, rows64, row_ok, D, BLOCK_D, ONE_D_BLOCK)
    partial_row = col_partial_ptr + pid.to(tl.int64) * n_cols
    for col_start in range(0, n_cols, BLOCK_N):
        cols = col_start + tl.arange(0, BLOCK_N)
        col_ok = cols < n_cols
        dots = _tile_dots(image_rows, image_ptr, rows64, row_ok, text_ptr, cols.to(tl.int64),
                          col_ok, D, BLOCK_M, BLOCK_N, BLOCK_D, ONE_D_BLOCK, ACC_DTYPE,
                          DOT_PRECISION, UPCAST_BF16)
        scores = tl.where(row_ok[:, None] & col_ok[None, :], dots * scale + bias, float("-inf"))
        row_max, row_sum = _online_logsumexp(row_max, row_sum, scores)
        col_max = tl.max(scores, axis=0)
        # Only padding columns have col_max = -inf (every row block has a valid row).
        col_shift = tl.where(col_max == float("-inf"), 0.0, col_max)
        col_sum = tl.sum(tl.exp(scores - col_shift[None, :]), axis=0)
        tl.store(partial_row + cols, col_max + tl.log(col_sum), mask=col_ok)
    tl.store(row_lse_ptr + rows64, row_max + tl.log(row_sum), mask=row_ok)
    tl.store(positive_ptr + rows64, positive, mask=row_ok)


@_autotune()
@triton.jit
def _siglip_loss_fwd_kernel(image_ptr, text_ptr, scale_ptr, bias_ptr, row_loss_ptr,
                            n_rows, n_cols, D,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                            ONE_D_BLOCK: tl.constexpr, ACC_DTYPE: tl.constexpr,
                            DOT_PRECISION: tl.constexpr, UPCAST_BF16: tl.constexpr):
    """SigLIP forward, one program per BLOCK_M image rows:

        S_ij = scale * image_i . text_j + bias,    z_ij = +1 if i == j else -1
        row_loss_i = -sum_j logsigmoid(z_ij S_ij) = sum_j max(-x, 0) + log1p(exp(-|x|)), x = z S

    The launcher takes loss = sum_i row_loss_i / N.
    Reference: sslfast.reference.contrastive.siglip_loss (open_clip SigLipLoss).
    """
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    scale, bias = _load_scale_bias(scale_ptr, bias_ptr, True, ACC_DTYPE)
    row_loss = tl.zeros((BLOCK_M,), ACC_DTYPE)
    image_rows = _resident_tile(image_ptr, rows64, row_ok, D, BLOCK_D, ONE_D_BLOCK)
    for col_start in range(0, n_cols, BLOCK_N):
        cols = col_start + tl.arange(0, BLOCK_N)
        col_ok = cols < n_cols
        dots = _tile_dots(image_rows, image_ptr, rows64, row_ok, text_ptr, cols.to(tl.int64),
                          col_ok, D, BLOCK_M, BLOCK_N, BLOCK_D, ONE_D_BLOCK, ACC_DTYPE,
                          DOT_PRECISION, UPCAST_BF16)
        scores = dots * scale + bias
        signed = tl.where(cols[None, :] == rows[:, None], scores, -scores)
        neg_logsigmoid = tl.maximum(-signed, 0.0) + _log1p(tl.exp(-tl.abs(signed)))
        row_loss += tl.sum(tl.where(col_ok[None, :], neg_logsigmoid, 0.0), axis=1)
    tl.store(row_loss_ptr + rows64, row_loss, mask=row_ok)


@triton.jit
def _pair_loss_weight(scores, image_idx, text_idx, row_lse, col_lse, SIGLIP: tl.constexpr):
    """dLoss/dS on a tile, divided by the launcher's coef (g/(2N) for CLIP, g/N for SigLIP):

        CLIP:   exp(S_ij - row_lse_i) + exp(S_ij - col_lse_j) - 2 [i == j]
        SigLIP: -z_ij sigmoid(-z_ij S_ij)

    Index and lse arguments broadcast against scores, so row and column kernels share it.
    """
    diag = image_idx == text_idx
    if SIGLIP:
        sig = _sigmoid(tl.where(diag, -scores, scores))
        weight = tl.where(diag, -sig, sig)
    else:
        weight = (tl.exp(scores - row_lse) + tl.exp(scores - col_lse)
                  - tl.where(diag, 2.0, 0.0))
    return weight


@_autotune()
@triton.jit
def _pair_loss_bwd_image_kernel(image_ptr, text_ptr, scale_ptr, bias_ptr, coef_ptr,
                                row_lse_ptr, col_lse_ptr, grad_image_ptr, partial_ptr,
                                n_rows, n_cols, D,
                                HAS_BIAS: tl.constexpr, SIGLIP: tl.constexpr,
                                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                                BLOCK_D: tl.constexpr, ONE_D_BLOCK: tl.constexpr,
                                ACC_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
                                UPCAST_BF16: tl.constexpr):
    """CLIP / SigLIP backward for the image rows (and the scalars), one program per
    (BLOCK_M rows, BLOCK_D columns of D), recomputing tiles of S from the saved lse:

        G_ij = coef * weight_ij  (_pair_loss_weight)
        grad_image_i = scale * sum_j G_ij text_j
        partial[b] = (sum_{i in b, j} G_ij image_i . text_j,  sum_{i in b, j} G_ij)

    Programs with pid_d == 0 write the partials of grad_scale and grad_bias; the launcher sums
    them in order. Reference: autograd of sslfast.reference.contrastive.clip_loss / siglip_loss.
    """
    pid_m = tl.program_id(0)
    pid_d = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    d_offs = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    scale, bias = _load_scale_bias(scale_ptr, bias_ptr, HAS_BIAS, ACC_DTYPE)
    if SIGLIP:
        row_lse = tl.zeros((BLOCK_M,), ACC_DTYPE)
    else:
        row_lse = tl.load(row_lse_ptr + rows64, mask=row_ok, other=0.0)
    image_rows = _resident_tile(image_ptr, rows64, row_ok, D, BLOCK_D, ONE_D_BLOCK)
    acc = tl.zeros((BLOCK_M, BLOCK_D), ACC_DTYPE)
    scale_grad = tl.zeros((BLOCK_M,), ACC_DTYPE)
    bias_grad = tl.zeros((BLOCK_M,), ACC_DTYPE)
    for col_start in range(0, n_cols, BLOCK_N):
        cols = col_start + tl.arange(0, BLOCK_N)
        col_ok = cols < n_cols
        cols64 = cols.to(tl.int64)
        if SIGLIP:
            col_lse = tl.zeros((BLOCK_N,), ACC_DTYPE)
        else:
            col_lse = tl.load(col_lse_ptr + cols64, mask=col_ok, other=0.0)
        dots, text_cols = _tile_dots_and_values(image_rows, image_ptr, rows64, row_ok, text_ptr,
                                                cols64, col_ok, d_offs, D, BLOCK_M, BLOCK_N,
                                                BLOCK_D, ONE_D_BLOCK, ACC_DTYPE, DOT_PRECISION,
                                                UPCAST_BF16)
        weight = _pair_loss_weight(dots * scale + bias, rows[:, None], cols[None, :],
                                   row_lse[:, None], col_lse[None, :], SIGLIP)
        weight = tl.where(row_ok[:, None] & col_ok[None, :], weight, 0.0)
        scale_grad += tl.sum(weight * dots, axis=1)
        bias_grad += tl.sum(weight, axis=1)
        acc = _dot(weight.to(text_cols.dtype), text_cols, acc, DOT_PRECISION, UPCAST_BF16)
    coef = tl.load(coef_ptr)
    tl.store(grad_image_ptr + rows64[:, None] * D + d_offs[None, :],
             (acc * (coef * scale)).to(grad_image_ptr.dtype.element_ty),
             mask=row_ok[:, None] & (d_offs[None, :] < D))
    first_d_block = pid_d == 0
    tl.store(partial_ptr + pid_m * 2, tl.sum(scale_grad, axis=0) * coef, mask=first_d_block)
    tl.store(partial_ptr + pid_m * 2 + 1, tl.sum(bias_grad, axis=0) * coef, mask=first_d_block)


@_autotune()
@triton.jit
def _pair_loss_bwd_text_kernel(image_ptr, text_ptr, scale_ptr, bias_ptr, coef_ptr,
                               row_lse_ptr, col_lse_ptr, grad_text_ptr, n_rows, n_cols, D,
                               HAS_BIAS: tl.constexpr, SIGLIP: tl.constexpr,
                               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                               BLOCK_D: tl.constexpr, ONE_D_BLOCK: tl.constexpr,
                               ACC_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
                               UPCAST_BF16: tl.constexpr):
    """CLIP / SigLIP backward for the text rows, one program per (BLOCK_M text rows, BLOCK_D
    columns of D), streaming image rows and recomputing S^T tiles from the saved lse:

        grad_text_j = scale * sum_i G_ij image_i,    G_ij = coef * weight_ij (_pair_loss_weight)

    Reference: autograd of sslfast.reference.contrastive.clip_loss / siglip_loss.
    """
    pid_m = tl.program_id(0)
    pid_d = tl.program_id(1)
    texts = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    text_ok = texts < n_cols
    texts64 = texts.to(tl.int64)
    d_offs = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    scale, bias = _load_scale_bias(scale_ptr, bias_ptr, HAS_BIAS, ACC_DTYPE)
    if SIGLIP:
        col_lse = tl.zeros((BLOCK_M,), ACC_DTYPE)
    else:
        col_lse = tl.load(col_lse_ptr + texts64, mask=text_ok, other=0.0)
    text_rows = _resident_tile(text_ptr, texts64, text_ok, D, BLOCK_D, ONE_D_BLOCK)
    acc = tl.zeros((BLOCK_M, BLOCK_D), ACC_DTYPE)
    for image_start in range(0, n_rows, BLOCK_N):
        images = image_start + tl.arange(0, BLOCK_N)
        image_ok = images < n_rows
        images64 = images.to(tl.int64)
        if SIGLIP:
            row_lse = tl.zeros((BLOCK_N,), ACC_DTYPE)
        else:
            row_lse = tl.load(row_lse_ptr + images64, mask=image_ok, other=0.0)
        dots, image_cols = _tile_dots_and_values(text_rows, text_ptr, texts64, text_ok, image_ptr,
                                                 images64, image_ok, d_offs, D, BLOCK_M, BLOCK_N,
                                                 BLOCK_D, ONE_D_BLOCK, ACC_DTYPE, DOT_PRECISION,
                                                 UPCAST_BF16)
        weight = _pair_loss_weight(dots * scale + bias, images[None, :], texts[:, None],
                                   row_lse[None, :], col_lse[:, None], SIGLIP)
        weight = tl.where(image_ok[None, :], weight, 0.0)
        acc = _dot(weight.to(image_cols.dtype), image_cols, acc, DOT_PRECISION, UPCAST_BF16)
    coef = tl.load(coef_ptr)
    tl.store(grad_text_ptr + texts64[:, None] * D + d_offs[None, :],
             (acc * (coef * scale)).to(grad_text_ptr.dtype.element_ty),
             mask=text_ok[:, None] & (d_offs[None, :] < D))


# ---------------------------------------------------------------------------------------------
# Launchers (the registered op implementations)
# ---------------------------------------------------------------------------------------------


def _acc_dtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _kernel_options(x):
    """Compile-time options shared by every kernel, from the [rows, D] input x."""
    d = x.shape[1]
    block_d = min(max(16, triton.next_power_of_2(d)),
                  _FP64_MAX_BLOCK_D if x.dtype == torch.float64 and not _INTERPRETED else _MAX_BLOCK_D)
    return {
        "BLOCK_D": block_d,
        "ONE_D_BLOCK": d <= block_d,
        "ACC_DTYPE": tl.float64 if x.dtype == torch.float64 else tl.float32,
        # fp32 inputs must not be rounded to tf32: the result has to match an fp32 matmul.
        "DOT_PRECISION": "ieee" if x.dtype in (torch.float32, torch.float64) else "tf32",
        "UPCAST_BF16": _INTERPRETED and x.dtype == torch.bfloat16,
    }


def _device_scalar(value, like):
    """A 0-D tensor in the accumulation dtype: exact in fp64, no host sync to create."""
    return torch.full((), value, dtype=_acc_dtype(like), device=like.device)


def _coef(grad_loss, like, divisor):
    return grad_loss.reshape(()).to(_acc_dtype(like)) / divisor


def _row_grid(n_rows):
    return lambda meta: (triton.cdiv(n_rows, meta["BLOCK_M"]),)


def _row_d_grid(n_rows, d):
    return lambda meta: (triton.cdiv(n_rows, meta["BLOCK_M"]), triton.cdiv(d, meta["BLOCK_D"]))


def nt_xent_fwd(z, temperature, exclude_positive):
    z = z.contiguous()
    n_rows, d = z.shape
    acc = _acc_dtype(z)
    lse = z.new_empty((n_rows,), dtype=acc)
    positive = z.new_empty((n_rows,), dtype=acc)
    _nt_xent_fwd_kernel[_row_grid(n_rows)](
        z, _device_scalar(1.0 / temperature, z), lse, positive, n_rows, n_rows // 2, d,
        EXCLUDE_POSITIVE=bool(exclude_positive), **_kernel_options(z))
    return (lse - positive).mean(), lse


def nt_xent_bwd(grad_loss, z, lse, temperature, exclude_positive):
    z, lse = z.contiguous(), lse.contiguous()
    n_rows, d = z.shape
    grad_z = torch.empty_like(z)
    _nt_xent_bwd_kernel[_row_d_grid(n_rows, d)](
        z, lse, _device_scalar(1.0 / temperature, z), _coef(grad_loss, z, n_rows * temperature),
        grad_z, n_rows, n_rows // 2, d,
        EXCLUDE_POSITIVE=bool(exclude_positive), **_kernel_options(z))
    return grad_z


def _no_folding(what):
    raise RuntimeError(f"sslfast_triton::{what}: gradients computed in the forward pass are "
                       "implemented by the C++ CPU kernel only (the public functions never ask Triton)")


def info_nce_fwd(query, key, queue, temperature, in_batch_negatives, fold_queue_grad):
    if fold_queue_grad:
        _no_folding("info_nce_fwd")
    query, key = query.contiguous(), key.contiguous()
    queue = None if queue is None else queue.contiguous()
    n_rows, d = query.shape
    acc = _acc_dtype(query)
    lse = query.new_empty((n_rows,), dtype=acc)
    positive = query.new_empty((n_rows,), dtype=acc)
    has_queue = queue is not None
    _info_nce_fwd_kernel[_row_grid(n_rows)](
        query, key, queue if has_queue else key, _device_scalar(1.0 / temperature, query),
        lse, positive, n_rows, queue.shape[0] if has_queue else 0, d,
        IN_BATCH_NEGATIVES=bool(in_batch_negatives), HAS_QUEUE=has_queue,
        **_kernel_options(query))
    return (lse - positive).mean(), lse, query.new_empty((0,), dtype=acc)


def info_nce_bwd(grad_loss, query, key, queue, lse, folded, temperature, in_batch_negatives):
    if folded.numel():
        _no_folding("info_nce_bwd")
    query, key, lse = query.contiguous(), key.contiguous(), lse.contiguous()
    queue = None if queue is None else queue.contiguous()
    n_rows, d = query.shape
    options = _kernel_options(query)
    inv_t = _device_scalar(1.0 / temperature, query)
    coef = _coef(grad_loss, query, n_rows * temperature)
    grad_query = torch.empty_like(query)
    grad_key = torch.empty_like(key)
    has_queue = queue is not None
    _info_nce_bwd_query_kernel[_row_d_grid(n_rows, d)](
        query, key, queue if has_queue else key, lse, inv_t, coef, grad_query, grad_key,
        n_rows, queue.shape[0] if has_queue else 0, d,
        IN_BATCH_NEGATIVES=bool(in_batch_negatives), HAS_QUEUE=has_queue, **options)
    if in_batch_negatives:
        _info_nce_bwd_key_kernel[_row_d_grid(n_rows, d)](
            query, key, lse, inv_t, coef, grad_key, n_rows, d, **options)
    return grad_query, grad_key


def clip_loss_fwd(image, text, logit_scale, logit_bias):
    image, text = image.contiguous(), text.contiguous()
    n_rows, d = image.shape
    n_cols = text.shape[0]
    acc = _acc_dtype(image)
    row_lse = image.new_empty((n_rows,), dtype=acc)
    positive = image.new_empty((n_rows,), dtype=acc)
    # Sized for the smallest BLOCK_M the autotuner may pick; the chosen one fills the first rows.
    col_partial = image.new_empty((triton.cdiv(n_rows, _CLIP_MIN_BLOCK_M), n_cols), dtype=acc)
    has_bias = logit_bias is not None
    _clip_loss_fwd_kernel[_row_grid(n_rows)](
        image, text, logit_scale, logit_bias if has_bias else logit_scale,
        row_lse, positive, col_partial, n_rows, n_cols, d,
        HAS_BIAS=has_bias, **_kernel_options(image))
    row_blocks = triton.cdiv(n_rows, _clip_loss_fwd_kernel.best_config.kwargs["BLOCK_M"])
    col_lse = torch.logsumexp(col_partial[:row_blocks], dim=0)
    loss = ((row_lse - positive).mean() + (col_lse - positive).mean()) / 2
    return loss, row_lse, col_lse


def _pair_loss_bwd(coef, image, text, logit_scale, logit_bias, row_lse, col_lse, siglip):
    image, text = image.contiguous(), text.contiguous()
    row_lse, col_lse = row_lse.contiguous(), col_lse.contiguous()
    n_rows, d = image.shape
    n_cols = text.shape[0]
    options = _kernel_options(image)
    has_bias = logit_bias is not None
    bias = logit_bias if has_bias else logit_scale
    grad_image = torch.empty_like(image)
    grad_text = torch.empty_like(text)
    # Sized for the smallest BLOCK_M the autotuner may pick; the chosen one fills the first rows.
    partial = image.new_empty((triton.cdiv(n_rows, _MIN_BLOCK_M), 2), dtype=_acc_dtype(image))
    _pair_loss_bwd_image_kernel[_row_d_grid(n_rows, d)](
        image, text, logit_scale, bias, coef, row_lse, col_lse, grad_image, partial,
        n_rows, n_cols, d, HAS_BIAS=has_bias, SIGLIP=siglip, **options)
    row_blocks = triton.cdiv(n_rows, _pair_loss_bwd_image_kernel.best_config.kwargs["BLOCK_M"])
    _pair_loss_bwd_text_kernel[_row_d_grid(n_cols, d)](
        image, text, logit_scale, bias, coef, row_lse, col_lse, grad_text, n_rows, n_cols, d,
        HAS_BIAS=has_bias, SIGLIP=siglip, **options)
    scale_grad, bias_grad = partial[:row_blocks].sum(dim=0).unbind()
    # copy=True: both come from one tensor, and the schema promises outputs that do not alias
    grad_scale = scale_grad.to(logit_scale.dtype, copy=True).reshape(logit_scale.shape)
    if has_bias:
        grad_bias = bias_grad.to(logit_bias.dtype, copy=True).reshape(logit_bias.shape)
    else:
        grad_bias = torch.zeros_like(logit_scale)
    return grad_image, grad_text, grad_scale, grad_bias


def clip_loss_bwd(grad_loss, image, text, logit_scale, logit_bias, row_lse, col_lse):
    coef = _coef(grad_loss, image, 2 * image.shape[0])
    return _pair_loss_bwd(coef, image, text, logit_scale, logit_bias, row_lse, col_lse,
                          siglip=False)


def siglip_loss_fwd(image, text, logit_scale, logit_bias, with_grads):
    if with_grads:
        _no_folding("siglip_loss_fwd")
    image, text = image.contiguous(), text.contiguous()
    n_rows, d = image.shape
    row_loss = image.new_empty((n_rows,), dtype=_acc_dtype(image))
    _siglip_loss_fwd_kernel[_row_grid(n_rows)](
        image, text, logit_scale, logit_bias, row_loss, n_rows, text.shape[0], d,
        **_kernel_options(image))
    return (row_loss.sum() / n_rows, *(image.new_empty((0,)) for _ in range(4)))  # four distinct outputs


def siglip_loss_bwd(grad_loss, image, text, logit_scale, logit_bias):
    coef = _coef(grad_loss, image, image.shape[0])
    # SigLIP has no logsumexp: the lse pointers are placeholders the kernels never read.
    return _pair_loss_bwd(coef, image, text, logit_scale, logit_bias, coef, coef, siglip=True)


# ---------------------------------------------------------------------------------------------
# prepare_rows: the losses' input rows (cat, L2 normalization) with torch ops on the device; the
# Triton kernels read the rows in the input dtype.
# ---------------------------------------------------------------------------------------------

_NORM_EPS = 1e-12  # F.normalize's


def prepare_rows(x, y, normalize):
    rows = torch.cat([x, y]) if y is not None else x.clone(memory_format=torch.contiguous_format)
    if not normalize:
        return rows, rows.new_empty((0,), dtype=_acc_dtype(rows))
    norms = rows.to(_acc_dtype(rows)).norm(dim=1)
    return (rows / norms.clamp_min(_NORM_EPS)[:, None]).to(rows.dtype), norms


def prepare_rows_bwd(grad, rows, norms, split, dtype):
    acc = _acc_dtype(rows)
    g = grad.to(acc)
    if norms.numel():
        y = rows.to(acc)
        n = norms[:, None]
        projected = (g - y * (y * g).sum(dim=1, keepdim=True)) / n
        g = torch.where(n <= _NORM_EPS, g / _NORM_EPS, projected)  # clamped rows divided by eps
    g = g.to(dtype)
    return g[:split].contiguous(), g[split:].contiguous()


_IMPLEMENTATIONS = {
    "prepare_rows": prepare_rows,
    "prepare_rows_bwd": prepare_rows_bwd,
    "nt_xent_fwd": nt_xent_fwd,
    "nt_xent_bwd": nt_xent_bwd,
    "info_nce_fwd": info_nce_fwd,
    "info_nce_bwd": info_nce_bwd,
    "clip_loss_fwd": clip_loss_fwd,
    "clip_loss_bwd": clip_loss_bwd,
    "siglip_loss_fwd": siglip_loss_fwd,
    "siglip_loss_bwd": siglip_loss_bwd,
}

register(_IMPLEMENTATIONS)
