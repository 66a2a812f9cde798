"""Triton kernels of the contrastive losses (NT-Xent, InfoNCE, CLIP, SigLIP, SupCon).

Registered as ``torch.ops.sslfast_triton.*`` with the schemas, fakes and autograd of
``csrc/schema.cpp``; the math is ``sslfast.reference.contrastive``.

Every kernel is a tile GEMM with an epilogue: a [BLOCK_M, BLOCK_N] score tile is one ``tl.dot``
chain over D (the owned rows stay resident when D fits one chunk; otherwise D is the inner,
pipelined loop of the tile), then the epilogue turns scores into exponentials, sums or gradient
weights. fp32 accumulation for fp16/bf16/fp32, fp64 for fp64 (as a broadcast product-sum: no fp64
``tl.dot`` on GPUs). Scores live in the log2 domain: log2(e) is folded into the scale, so every
exponential is one ``exp2``. The N x M logits never exist.

Forward:
  * CLIP and NT-Xent shift each row block by its largest positive logit instead of running
    maxima, so one exponential serves the row sum and the column sum of the same score. NT-Xent's
    Gram matrix is symmetric: only the upper-triangle tiles are computed, and each tile's column
    sums are the mirrored tiles' row sums. Rows or columns whose sums the shifts could not hold
    (inputs far from unit rows, a positive far below its block's) are flagged by the combine
    kernel and recomputed by the guarded fallback, a per-row online logsumexp that skips every
    row block without a flagged row.
  * InfoNCE runs the online logsumexp directly (one exponential per score either way); with
    ``fold_queue_grad`` it also accumulates sum_m P_im queue_m, rescaled like flash attention.
  * SigLIP's loss terms and gradient weights share one exponential per score. ``with_grads``
    returns the loss and every gradient from one op call (a loss pass, then the two fused
    gradient passes: the single-pass form spilled on sm_90).
  * SupCon is NT-Xent's upper-triangle forward with labels compared in the tile (class ids, see
    _label_classes): Khosla's denominator is NT-Xent's (every j != i), and the same pass sums each
    row's positive scores into row and column parts; the pairwise (NTXentLoss) variant masks
    same-label columns out of the denominator, then a second pass over full rows sums
    softplus(lse_i - s_ip) and sigmoid(lse_i - s_ip) over the positives (it needs the final lse).
Backward (and SigLIP's gradients):
  * D <= 256: a fused flash-style kernel per side. A program owns BLOCK_M rows, keeps an fp32
    [BLOCK_M, D] accumulator, and streams the other side's tiles, each loaded once for the score
    and for the gradient product. The other side's gradient is a second launch of the same
    kernel with the operands swapped (NT-Xent and SupCon need none: their weights are symmetric).
  * D > 256 (and fp64 on GPUs): the gradient weights G of a chunk of rows are written in the
    input dtype and cuBLAS does dA = G B and dB += G^T A; chunks keep G under 1 GiB.
No atomics: per-program partials are reduced by torch in a fixed order, so runs are bitwise equal.

Scalars that must stay exact in float64 (1/T, the incoming gradient) reach the kernels as 0-D
tensors: Triton passes Python floats as fp32.
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
# benchmarking every config per kernel under the sanitizer would take most of the time budget.
_ONE_CONFIG = os.environ.get("SSLFAST_TRITON_ONE_CONFIG") == "1"

_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453

# Fused backward up to this padded D: its fp32 [BLOCK_M, D] accumulator (64 x 256 over 8 warps:
# 64 registers a thread) still leaves room for the score tile. Wider D goes through G + cuBLAS.
_FUSED_MAX_D = 256
# The resident-row forward up to this padded D; wider D streams BLOCK_K chunks per tile.
_RESIDENT_MAX_D = 128
_STREAM_BLOCK_K = 64
# Extra memory of the G path: one chunk of gradient weights.
_G_CHUNK_BYTES = 1 << 30
# The fixed-shift forward's partial sums are O(N^2 / BLOCK_M); past this, NT-Xent streams every
# row with its own running maximum instead.
_SHIFT_PARTIAL_BYTES = 1 << 29
# NT-Xent's fixed shift is used when the score range 2/T (in log2 units) stays inside the sum
# window below; past it (T < ~0.05) most rows would fall back anyway.
_SHIFT_MAX_SPREAD_LOG2 = 60.0
# Upper-triangle (NT-Xent) and column-split programs take this many column tiles each: enough
# programs to fill 132 SMs at 2N = 8192 and a row sum kept in registers across them.
_TILES_PER_PROGRAM = 8

# What a written but empty log2 partial sum holds (log2(0) = -inf marks unwritten slots).
_WRITTEN_EMPTY = tl.constexpr(-1e30)

# Mode numbers of the pair-forward kernel. _SUPCON: the triangle logsumexp pass (NT-Xent's, with
# labels); _SUPCON_PAIRS: the pairwise variant's pass over positive pairs, after the lse.
_NT_XENT, _CLIP, _SIGLIP, _SUPCON, _SUPCON_PAIRS = 0, 1, 2, 3, 4
# Modes of the SupCon gradient weights (the SUPCON constexpr of _grad_weights): none, Khosla's
# SupCon, pytorch-metric-learning's pairwise NTXentLoss with labels.
_NO_LABELS, _KHOSLA, _PAIRWISE = 0, 1, 2

# float64 has no tl.dot on NVIDIA GPUs (an assertion in semantic.dot, seen on an H100 with Triton
# 3.6), so _dot multiplies fp64 tiles as a broadcast product-sum whose [BLOCK_M, BLOCK_K, BLOCK_N]
# product lives in registers: fp64 gets its own small tiles and 16-wide D chunks, and its backward
# always goes through G + torch matmul. fp64 is the gradcheck dtype, not a speed path. The
# interpreter runs the same product with its usual tiles.
_FP64_BLOCK = 16


def _gpu_shapes(kind, d_pad):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) per kernel kind on GPUs. Every entry is compiled
    for sm_90 by the GPU lint (sslfast/triton/lint.py): wgmma in the PTX, no spills."""
    if kind == "fwd":  # square tiles: the NT-Xent triangle mirrors a tile into its transpose
        return [(128, 128, 8, 3), (128, 128, 8, 4)] if d_pad > _RESIDENT_MAX_D else [(128, 128, 8, 2), (128, 128, 8, 3)]
    if kind == "fold":  # row online logsumexp plus an fp32 [BLOCK_M, D] accumulator
        return [(64, 64, 4, 2), (64, 128, 8, 2)] if d_pad > 128 else [(128, 64, 8, 2), (64, 64, 4, 3)]
    if kind == "bwd":  # fused backward: fp32 [BLOCK_M, D] accumulator + score tile
        return [(64, 64, 8, 2), (64, 32, 4, 2)] if d_pad > 128 else [(128, 64, 8, 2), (64, 64, 4, 3)]
    if kind == "grad_weight":  # one G tile per program, D streamed
        return [(128, 128, 8, 3), (128, 64, 4, 4)]
    raise ValueError(kind)


_FP64_SHAPES = {"fwd": (32, 32, 4, 1), "fold": (32, 16, 4, 1), "bwd": (32, 16, 4, 1), "grad_weight": (32, 32, 4, 1)}
_KINDS = ("fwd", "fold", "bwd", "grad_weight")


def _tile_configs(kind):
    if _INTERPRETED:
        # The interpreter runs every program in Python: few, small programs keep CPU tests fast.
        return [triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "D_CLASS": 0}, num_warps=4, num_stages=1)]
    configs = []
    for d_pad in (128, 256):  # the two shape classes; the prune keeps the one of the launch
        shapes = _gpu_shapes(kind, d_pad)[:1] if _ONE_CONFIG else _gpu_shapes(kind, d_pad)
        configs += [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "D_CLASS": d_pad}, num_warps=w, num_stages=s)
                    for bm, bn, w, s in shapes]
    bm, bn, w, s = _FP64_SHAPES[kind]
    configs.append(triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "D_CLASS": 0}, num_warps=w, num_stages=s))
    return configs


def _prune(configs, named_args, **kwargs):
    # By the accumulation dtype (an fp64 logit_scale next to fp32 embeddings is not an fp64 launch)
    # and by the padded D's class.
    if kwargs.get("ACC_DTYPE") == tl.float64:
        wanted = 0
    else:
        wanted = 128 if kwargs["D_PAD"] <= 128 else 256
    kept = [c for c in configs if c.kwargs.get("D_CLASS", wanted) == wanted]
    return kept or configs  # the interpreter's single config serves every launch


def _no_benchmark(kernel_call, quantiles=None, **_):
    return [0.0, 0.0, 0.0] if quantiles else 0.0


# With one config per launch class (_ONE_CONFIG) the prune leaves one config: never time it.
_AUTOTUNE_EXTRA = ({"do_bench": _no_benchmark}
                   if _ONE_CONFIG and not _INTERPRETED and "do_bench" in inspect.signature(triton.autotune).parameters
                   else {})


def _autotune(kind, key):
    # The autotuner also keys on every tensor argument's dtype, so fp64 tunes apart.
    return triton.autotune(configs=_tile_configs(kind), key=["D", "D_PAD", *key],
                           prune_configs_by={"early_config_prune": _prune}, **_AUTOTUNE_EXTRA)


# Every GPU config's BLOCK_M is at least this: partial buffers are sized for it.
_MIN_BLOCK_M = 32 if _INTERPRETED else min(min(c.kwargs["BLOCK_M"] for c in _tile_configs(k)) for k in _KINDS)


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
    if a.dtype == tl.float64:  # no fp64 tl.dot on GPUs: see _FP64_BLOCK
        return acc + tl.sum(a[:, :, None] * b[None, :, :], axis=1)
    return tl.dot(a, b, acc, input_precision=DOT_PRECISION)


@triton.jit
def _load_tile(ptr, rows, row_ok, d_offs, D):
    # rows are int64: rows * D passes 2^31 for large embedding tables.
    return tl.load(ptr + rows[:, None] * D + d_offs[None, :],
                   mask=row_ok[:, None] & (d_offs[None, :] < D), other=0.0)


@triton.jit
def _resident_tile(ptr, rows, row_ok, D, BLOCK_K: tl.constexpr, RESIDENT: tl.constexpr):
    # When D fits one chunk the owned rows are loaded once, not once per streamed tile.
    if RESIDENT:
        tile = _load_tile(ptr, rows, row_ok, tl.arange(0, BLOCK_K), D)
    else:
        tile = tl.zeros((1, BLOCK_K), tl.float32)
    return tile


@triton.jit
def _scores(a_tile, a_ptr, a_rows, a_ok, b_ptr, b_rows, b_ok, D,
            BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
            RESIDENT: tl.constexpr, ACC_DTYPE: tl.constexpr,
            DOT_PRECISION: tl.constexpr, UPCAST_BF16: tl.constexpr):
    """[BLOCK_A, BLOCK_B] tile of a[a_rows] @ b[b_rows]^T in ACC_DTYPE: one dot with the resident
    rows, or D as the inner loop in BLOCK_K chunks (no per-chunk epilogue)."""
    dots = tl.zeros((BLOCK_A, BLOCK_B), ACC_DTYPE)
    if RESIDENT:
        b = _load_tile(b_ptr, b_rows, b_ok, tl.arange(0, BLOCK_K), D)
        dots = _dot(a_tile, tl.trans(b), dots, DOT_PRECISION, UPCAST_BF16)
    else:
        for k_start in range(0, D, BLOCK_K):
            k_offs = k_start + tl.arange(0, BLOCK_K)
            a = _load_tile(a_ptr, a_rows, a_ok, k_offs, D)
            b = _load_tile(b_ptr, b_rows, b_ok, k_offs, D)
            dots = _dot(a, tl.trans(b), dots, DOT_PRECISION, UPCAST_BF16)
    return dots


@triton.jit
def _row_dots(a_ptr, a_rows, b_ptr, b_rows, row_ok, D,
              BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """a[a_rows[r]] . b[b_rows[r]] per r: the positive logits, O(BLOCK_M * D) instead of a tile."""
    acc = tl.zeros((BLOCK_M,), ACC_DTYPE)
    for k_start in range(0, D, BLOCK_K):
        k_offs = k_start + tl.arange(0, BLOCK_K)
        a = _load_tile(a_ptr, a_rows, row_ok, k_offs, D).to(ACC_DTYPE)
        b = _load_tile(b_ptr, b_rows, row_ok, k_offs, D).to(ACC_DTYPE)
        acc += tl.sum(a * b, axis=1)
    return acc


@triton.jit
def _row_terms(lse_ptr, labels_ptr, coef_ptr, idx64, ok, USE_LSE: tl.constexpr, SUPCON: tl.constexpr,
               BLOCK: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """(lse, class id, SupCon coefficient) of a block of rows or columns, for _grad_weights; what
    a launch does not use stays a placeholder."""
    if USE_LSE:
        lse = tl.load(lse_ptr + idx64, mask=ok, other=0.0)
    else:
        lse = tl.zeros((BLOCK,), ACC_DTYPE)
    labels = _load_labels(labels_ptr, idx64, ok, SUPCON != 0)
    if SUPCON != 0:
        coef = tl.load(coef_ptr + idx64, mask=ok, other=0.0)
    else:
        coef = lse
    return lse, labels, coef


@triton.jit
def _load_scale_bias(scale_ptr, bias_ptr, HAS_BIAS: tl.constexpr, ACC_DTYPE: tl.constexpr):
    scale = tl.load(scale_ptr).to(ACC_DTYPE)
    if HAS_BIAS:
        bias = tl.load(bias_ptr).to(ACC_DTYPE)
    else:
        bias = tl.zeros((), ACC_DTYPE)
    return scale, bias


@triton.jit
def _log1p_unit(e):
    """log1p(e) for e in [0, 1]. fp32: 2 atanh(t), t = e / (2 + e) <= 1/3, by its series to t^13
    (truncation below 2^-26 relative), FMAs and one approximate reciprocal: next to the gradient
    weight's registers, log-based forms made the SigLIP epilogue spill. fp64: Goldberg's log1p."""
    if e.dtype == tl.float64:
        w = 1.0 + e
        return tl.where(w == 1.0, e, tl.log(w) * (e / (w - 1.0)))
    t = tl.fdiv(e, 2.0 + e, ieee_rounding=False)
    t2 = t * t
    series = 1.0 / 13.0
    series = series * t2 + 1.0 / 11.0
    series = series * t2 + 1.0 / 9.0
    series = series * t2 + 1.0 / 7.0
    series = series * t2 + 1.0 / 5.0
    series = series * t2 + 1.0 / 3.0
    series = series * t2 + 1.0
    return 2.0 * t * series


@triton.jit
def _pair_mask(rows, row_ok, cols, col_ok, partners, row_labels, col_labels,
               EXCLUDE_SELF: tl.constexpr, EXCLUDE_PARTNER: tl.constexpr,
               EXCLUDE_SAME_LABEL: tl.constexpr):
    """Which (row, column) pairs a row's denominator holds: NT-Xent drops j = i, DCL also j = p(i),
    SupCon's pairwise variant every j with row i's label (its negatives only)."""
    keep = row_ok[:, None] & col_ok[None, :]
    if EXCLUDE_SELF:
        keep = keep & (cols[None, :] != rows[:, None])
    if EXCLUDE_PARTNER:
        keep = keep & (cols[None, :] != partners[:, None])
    if EXCLUDE_SAME_LABEL:
        keep = keep & (col_labels[None, :] != row_labels[:, None])
    return keep


@triton.jit
def _positive_pairs(rows, row_ok, cols, col_ok, row_labels, col_labels):
    """SupCon's positives of each row: the other rows with its label."""
    return (row_ok[:, None] & col_ok[None, :] & (cols[None, :] != rows[:, None])
            & (col_labels[None, :] == row_labels[:, None]))


@triton.jit
def _load_labels(labels_ptr, idx64, ok, LABELS: tl.constexpr):
    # Class ids (int32, _label_classes); without labels the index stands in (no test reads it).
    if LABELS:
        labels = tl.load(labels_ptr + idx64, mask=ok, other=-1)
    else:
        labels = idx64.to(tl.int32)
    return labels


@triton.jit
def _softplus_sigmoid(x):
    """(softplus(x), sigmoid(x)) from one exponential, e = exp(-|x|): softplus = max(x, 0) +
    log1p(e), sigmoid = 1 / (1 + e) or e / (1 + e); neither overflows, and x = -inf (an anchor
    without negatives) gives (0, 0)."""
    e = tl.exp2(-tl.abs(x) * 1.4426950408889634)
    inv = tl.fdiv(tl.full(e.shape, 1.0, e.dtype), 1.0 + e, ieee_rounding=False)
    return tl.maximum(x, 0.0) + _log1p_unit(e), tl.where(x >= 0, inv, e * inv)


@triton.jit
def _pairwise_side(e, same, coef):
    """One anchor's share of the pairwise SupCon W_ij (_grad_weights), e = exp(S_ij - lse_anchor):
    coef e for other labels, -sigmoid(lse_anchor - S_ij) = -1 / (1 + e) for the same label. An
    anchor without negatives has lse = -inf: e = inf, and 1 / (1 + e) = 0 is its sigmoid; the
    other-label branch never sees such an e (its anchors have negatives)."""
    sigmoid = tl.fdiv(tl.full(e.shape, 1.0, e.dtype), 1.0 + e, ieee_rounding=False)
    return tl.where(same, -sigmoid, coef * e)


@triton.jit
def _grad_weights(dots, rows, row_ok, cols, col_ok, partners, scale, bias, row_lse, col_lse,
                  row_labels, col_labels, row_coef, col_coef,
                  SIGLIP: tl.constexpr, USE_ROW_LSE: tl.constexpr, USE_COL_LSE: tl.constexpr,
                  PARTNER_COEF: tl.constexpr, EXCLUDE_SELF: tl.constexpr,
                  EXCLUDE_PARTNER: tl.constexpr, WITH_LOSS: tl.constexpr, SUPCON: tl.constexpr):
    """dLoss/dS on a tile (up to the launcher's coefficient) and, for SigLIP with WITH_LOSS, the
    tile's loss terms; zero outside the valid pairs. S = scale * dots + bias.

        softmax losses: [j in row i's denominator] (exp(S_ij - lse_i) [USE_ROW_LSE]
                        + exp(S_ij - lse_j) [USE_COL_LSE]) - PARTNER_COEF [j == p(i)]
        SigLIP:         -z_ij sigmoid(-z_ij S_ij),  loss -logsigmoid(z_ij S_ij) = max(-zS, 0)
                        + log1p(exp(-|S|)),  z = +1 on the diagonal (j == p(i)), -1 elsewhere
        SupCon (W = G + G^T, j != i; e_i = exp(S_ij - lse_i), coef = the rows' row_coef):
          Khosla:   [coef_i > 0] e_i + [coef_j > 0] e_j - [same label] (coef_i + coef_j),
                    coef_i = 1 / P_i (0 without positives)
          pairwise: coef_i e_i + coef_j e_j for other labels, coef_i = sum over i's positives of
                    sigmoid(lse_i - S_ip); -(sigmoid(lse_i - S_ij) + sigmoid(lse_j - S_ij)) for
                    the same label, sigmoid(lse_i - S) = 1 / (1 + e_i): the same exponential

    The SigLIP loss term and its gradient weight share one exponential.
    """
    valid = row_ok[:, None] & col_ok[None, :]
    loss = tl.zeros((1, 1), dots.dtype)
    if SUPCON != 0:
        s = dots * scale
        same = col_labels[None, :] == row_labels[:, None]
        if SUPCON == 1:
            e_row = tl.exp2((s - row_lse[:, None]) * 1.4426950408889634)
            e_col = tl.exp2((s - col_lse[None, :]) * 1.4426950408889634)
            # The indicator multiplies (not selects) so that a NaN score still reaches the output.
            weight = (e_row * tl.where(row_coef > 0, 1.0, 0.0)[:, None]
                      + e_col * tl.where(col_coef > 0, 1.0, 0.0)[None, :]
                      - tl.where(same, row_coef[:, None] + col_coef[None, :], 0.0))
        else:
            # One side, then the other: one exponential tile live at a time (both at once
            # spilled at D = 256 on sm_90; the Khosla form above does not need this and spilled
            # when written this way).
            weight = _pairwise_side(tl.exp2((s - row_lse[:, None]) * 1.4426950408889634), same,
                                    row_coef[:, None])
            weight += _pairwise_side(tl.exp2((s - col_lse[None, :]) * 1.4426950408889634), same,
                                     col_coef[None, :])
        weight = tl.where(valid & (cols[None, :] != rows[:, None]), weight, 0.0)
    elif SIGLIP:
        s = dots * scale + bias
        diag = cols[None, :] == partners[:, None]
        signed = tl.where(diag, s, -s)
        e = tl.exp2(-tl.abs(s) * 1.4426950408889634)
        w = 1.0 + e
        # The approximate reciprocal (2 ulp): IEEE division's slow path made this epilogue spill.
        inv = tl.fdiv(tl.full(w.shape, 1.0, w.dtype), w, ieee_rounding=False)
        sig = tl.where(signed >= 0, e * inv, inv)  # sigmoid(-signed), never overflowing
        weight = tl.where(valid, tl.where(diag, -sig, sig), 0.0)
        if WITH_LOSS:
            loss = tl.where(valid, tl.maximum(-signed, 0.0) + _log1p_unit(e), 0.0)
    else:
        # S - lse in natural units, then one multiply: where a row holds one score, S - lse
        # cancels to exactly 0, as in eager (log2e folded into scale and lse would not).
        s = dots * scale + bias
        weight = tl.zeros(dots.shape, dots.dtype)
        if USE_ROW_LSE:
            weight += tl.exp2((s - row_lse[:, None]) * 1.4426950408889634)
        if USE_COL_LSE:
            weight += tl.exp2((s - col_lse[None, :]) * 1.4426950408889634)
        keep = _pair_mask(rows, row_ok, cols, col_ok, partners, row_labels, col_labels,
                          EXCLUDE_SELF, EXCLUDE_PARTNER, False)
        weight = tl.where(keep, weight, 0.0)
        if PARTNER_COEF != 0.0:
            weight -= tl.where(valid & (cols[None, :] == partners[:, None]), PARTNER_COEF, 0.0)
    return weight, loss


# ---------------------------------------------------------------------------------------------
# Forward kernels
# ---------------------------------------------------------------------------------------------


@_autotune("fwd", ["MODE", "NEGATIVES_ONLY"])
@triton.jit
def _pair_fwd_kernel(a_ptr, b_ptr, scale_ptr, bias_ptr, row_part_ptr, col_part_ptr, pos_ptr,
                     row_frame_ptr, shift_ptr, labels_ptr, lse_ptr, aux_row_ptr, aux_col_ptr,
                     n_rows, n_cols, partner_shift, D, tiles_per_program,
                     MODE: tl.constexpr, EXCLUDE_PARTNER: tl.constexpr, HAS_BIAS: tl.constexpr,
                     NEGATIVES_ONLY: tl.constexpr, D_PAD: tl.constexpr, D_CLASS: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     RESIDENT: tl.constexpr, ACC_DTYPE: tl.constexpr,
                     DOT_PRECISION: tl.constexpr, UPCAST_BF16: tl.constexpr):
    """Forward of NT-Xent, CLIP, SigLIP or SupCon over S = scale * a b^T (+ bias). Program (m, s)
    owns row block m and column tiles [first, first + tiles_per_program):

        positive_i = S_{i, p(i)}  (NT-Xent: scale = 1/T, a = b = z, p(i) = (i + N) mod 2N;
                                   CLIP, SigLIP: p(i) = i; SupCon: p(i) = i, S_ii = |z_i|^2 / T,
                                   the largest score of unit rows)
        c_m = max_{i in m} positive_i, the block's shift (every program of block m computes it)
        NT-Xent and SupCon (upper triangle, first = m + s t) and CLIP (first = s t):
          e_ij = exp(S_ij - c_m) [j != i, and j != p(i) for DCL (NT-Xent), and labels differ
                                  for SupCon's NEGATIVES_ONLY]
          row_part[s, i] = c_m + log sum_j e_ij    col_part[m, j] = c_m + log sum_i e_ij
          (in log2 units, at least _WRITTEN_EMPTY: an empty sum is told from an unwritten slot,
          -inf; the triangle writes no column part for its diagonal tile)
        row_frame[i] = c_m for i in m, shift[m] = c_m
        SupCon without NEGATIVES_ONLY, the same pass, the same-label dots (self included):
          aux_row[s, i] = sum_j a_i . b_j    aux_col[m, j] = sum_i a_i . b_j
          (the launcher scales them and takes positive_i = S_ii off: the positives' score sum)
        SigLIP: row_part[s, i] = sum_j -logsigmoid(z_ij S_ij)
        SupCon pairs (full rows, first = s t; lse = the negatives' logsumexp), over positives:
          row_part[s, i] = sum_p softplus(lse_i - S_ip)    aux_row[s, i] = sum_p sigmoid(same)

    One exponential per score serves the row and the column sum. _combine_lse_kernel reduces the
    parts and flags the rows whose sums the shift could not hold; _row_lse_kernel redoes those.
    Reference: sslfast.reference.contrastive.nt_xent / clip_loss / siglip_loss / supcon.
    """
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    partners = (rows + partner_shift) % n_cols
    scale, bias = _load_scale_bias(scale_ptr, bias_ptr, HAS_BIAS, ACC_DTYPE)
    scale2 = scale * 1.4426950408889634
    triangle: tl.constexpr = (MODE == 0) | (MODE == 3)
    log_sums: tl.constexpr = (MODE != 2) & (MODE != 4)  # the logsumexp modes
    if triangle:
        first = pid_m + pid_s * tiles_per_program  # BLOCK_N == BLOCK_M: tile m is the diagonal
    else:
        first = pid_s * tiles_per_program
    last = tl.minimum(first + tiles_per_program, tl.cdiv(n_cols, BLOCK_N))
    row_labels = _load_labels(labels_ptr, rows64, row_ok, MODE >= 3)
    if MODE == 4:
        row_lse = tl.load(lse_ptr + rows64, mask=row_ok, other=0.0)
    if log_sums:
        positive = _row_dots(a_ptr, rows64, b_ptr, partners.to(tl.int64), row_ok, D,
                             BLOCK_M, BLOCK_K, ACC_DTYPE) * scale + bias
        # bias2 - shift2 in one constant: each exponent is one FMA, and the shift is the largest
        # positive, so the score a row's sum depends on most sits near 2^0.
        shift2 = tl.max(tl.where(row_ok, positive * 1.4426950408889634, float("-inf")), axis=0)
        offset2 = bias * 1.4426950408889634 - shift2
        if pid_s == 0:  # stored before the tiles: positive is not live across them
            tl.store(pos_ptr + rows64, positive, mask=row_ok)
            tl.store(row_frame_ptr + rows64, shift2 + rows * 0, mask=row_ok)
            tl.store(shift_ptr + pid_m, shift2)
    a_rows = _resident_tile(a_ptr, rows64, row_ok, D, BLOCK_K, RESIDENT)
    row_acc = tl.zeros((BLOCK_M,), ACC_DTYPE)
    aux_acc = tl.zeros((BLOCK_M,), ACC_DTYPE)
    col_part_row = col_part_ptr + pid_m.to(tl.int64) * n_cols
    aux_col_row = aux_col_ptr + pid_m.to(tl.int64) * n_cols
    for tile in range(first, last):
        cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = cols < n_cols
        dots = _scores(a_rows, a_ptr, rows64, row_ok, b_ptr, cols.to(tl.int64), col_ok, D,
                       BLOCK_M, BLOCK_N, BLOCK_K, RESIDENT, ACC_DTYPE, DOT_PRECISION, UPCAST_BF16)
        col_labels = _load_labels(labels_ptr, cols.to(tl.int64), col_ok, MODE >= 3)
        if MODE == 2:
            _, loss = _grad_weights(dots, rows, row_ok, cols, col_ok, partners, scale, bias,
                                    row_acc, row_acc, row_labels, col_labels, row_acc, row_acc,
                                    True, False, False, 0.0, False, False, True, 0)
            row_acc += tl.sum(loss, axis=1)
        elif MODE == 4:
            positives = _positive_pairs(rows, row_ok, cols, col_ok, row_labels, col_labels)
            softplus, sigmoid = _softplus_sigmoid(row_lse[:, None] - dots * scale)
            row_acc += tl.sum(tl.where(positives, softplus, 0.0), axis=1)
            aux_acc += tl.sum(tl.where(positives, sigmoid, 0.0), axis=1)
        else:
            # The triangle's diagonal tile: its row sums already hold both directions.
            col_store = col_ok & ((MODE == 1) | (tile != pid_m))
            if (MODE == 3) & (not NEGATIVES_ONLY):
                # Same-label dots, self included and unscaled (the launcher subtracts S_ii and
                # scales) and no bounds test (rows and columns out of range load as 0): one
                # compare per score, and these sums run before the exponentials so both tiles are
                # never live together (the other order spilled on sm_90).
                positive_dots = tl.where(col_labels[None, :] == row_labels[:, None], dots, 0.0)
                tl.store(aux_col_row + cols, tl.sum(positive_dots, axis=0), mask=col_store)
                aux_acc += tl.sum(positive_dots, axis=1)
            keep = _pair_mask(rows, row_ok, cols, col_ok, partners, row_labels, col_labels,
                              triangle, EXCLUDE_PARTNER, NEGATIVES_ONLY)
            e = tl.where(keep, tl.exp2(dots * scale2 + offset2), 0.0)
            row_acc += tl.sum(e, axis=1)
            tl.store(col_part_row + cols, tl.maximum(shift2 + tl.log2(tl.sum(e, axis=0)), _WRITTEN_EMPTY),
                     mask=col_store)
    row_slots = pid_s.to(tl.int64) * n_rows + rows64
    if MODE == 2:
        tl.store(row_part_ptr + row_slots, row_acc, mask=row_ok)
    elif MODE == 4:
        tl.store(row_part_ptr + row_slots, row_acc, mask=row_ok)
        tl.store(aux_row_ptr + row_slots, aux_acc, mask=row_ok)
    else:
        tl.store(row_part_ptr + row_slots, tl.maximum(shift2 + tl.log2(row_acc), _WRITTEN_EMPTY),
                 mask=row_ok & ((rows * 0 + first) < last))  # (a vector: the interpreter)
        if (MODE == 3) & (not NEGATIVES_ONLY):
            tl.store(aux_row_ptr + row_slots, aux_acc, mask=row_ok)


@triton.jit
def _combine_lse_kernel(row_part_ptr, n_row_slots, row_frame_ptr, col_part_ptr, n_col_slots,
                        shift_ptr, lse_ptr, flag_ptr, n, BLOCK: tl.constexpr,
                        ACC_DTYPE: tl.constexpr):
    """lse_i = ln 2 * log2 sum_slot 2^part[slot, i] over the row parts (shifted by row i's own
    block, row_frame[i]) and the column parts (slot b shifted by block b's shift[b]), in slot
    order. flag_i = 1 where the shifts could not hold row i's sum: lse_i not finite (a term
    overflowed, or NaN), or lse_i more than 60 (log2 units) below the shift of a slot that holds
    terms of row i, where terms that underflowed in that frame (below 2^-126 there) could have
    mattered. Unwritten slots are -inf and hold no terms. Flagged rows go to _row_lse_kernel."""
    pid = tl.program_id(0)
    idx = pid * BLOCK + tl.arange(0, BLOCK)
    ok = idx < n
    idx64 = idx.to(tl.int64)
    running_max = tl.full((BLOCK,), float("-inf"), ACC_DTYPE)
    running_sum = tl.zeros((BLOCK,), ACC_DTYPE)
    top_frame = tl.full((BLOCK,), float("-inf"), ACC_DTYPE)
    row_frame = tl.load(row_frame_ptr + idx64, mask=ok & ((idx * 0 + n_row_slots) > 0), other=float("-inf"))
    for slot in range(0, n_row_slots + n_col_slots):
        if slot < n_row_slots:
            v = tl.load(row_part_ptr + slot * n + idx64, mask=ok, other=float("-inf"))
            frame = row_frame
        else:
            v = tl.load(col_part_ptr + (slot - n_row_slots) * n + idx64, mask=ok, other=float("-inf"))
            frame = tl.load(shift_ptr + (slot - n_row_slots)) + tl.zeros((BLOCK,), ACC_DTYPE)
        top_frame = tl.where(v > float("-inf"), tl.maximum(top_frame, frame), top_frame)
        new_max = tl.maximum(running_max, v)
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        running_sum = running_sum * tl.exp2(running_max - shift) + tl.exp2(v - shift)
        running_max = new_max
    lse2 = running_max + tl.log2(running_sum)
    held = (lse2 >= top_frame - 60.0) & (lse2 < float("inf"))
    tl.store(lse_ptr + idx64, lse2 * 0.6931471805599453, mask=ok)
    tl.store(flag_ptr + idx64, (~held).to(tl.int32), mask=ok)


@triton.jit
def _online_logsumexp2(running_max, running_sum, x):
    """Fold a tile of log2-domain scores (masked entries -inf) into per-row (max, sum 2^(x - max));
    also returns the tile's 2^(x - max) and the rescale factor of the old sum."""
    new_max = tl.maximum(running_max, tl.max(x, axis=1))
    # A row with nothing unmasked yet has new_max = -inf; shifting by 0 keeps exp2 at 0, not NaN.
    shift = tl.where(new_max == float("-inf"), 0.0, new_max)
    alpha = tl.exp2(running_max - shift)
    p = tl.exp2(x - shift[:, None])
    return new_max, running_sum * alpha + tl.sum(p, axis=1), p, alpha


@_autotune("fold", ["EXCLUDE_SELF", "EXCLUDE_PARTNER", "IN_BATCH", "HAS_QUEUE", "CHECK", "FOLD", "LABELS",
                    "EXCLUDE_SAME_LABEL"])
@triton.jit
def _row_lse_kernel(a_ptr, b_ptr, queue_ptr, scale_ptr, bias_ptr, lse_ptr, pos_ptr, flag_ptr,
                    fold_ptr, labels_ptr, n_rows, n_cols, n_queue, partner_shift, D,
                    EXCLUDE_SELF: tl.constexpr, EXCLUDE_PARTNER: tl.constexpr,
                    LABELS: tl.constexpr, EXCLUDE_SAME_LABEL: tl.constexpr,
                    IN_BATCH: tl.constexpr, HAS_QUEUE: tl.constexpr, SEED_POSITIVE: tl.constexpr,
                    STORE_POSITIVE: tl.constexpr, HAS_BIAS: tl.constexpr, CHECK: tl.constexpr,
                    FOLD: tl.constexpr, D_PAD: tl.constexpr, D_CLASS: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                    RESIDENT: tl.constexpr, ACC_DTYPE: tl.constexpr,
                    DOT_PRECISION: tl.constexpr, UPCAST_BF16: tl.constexpr):
    """Per-row online logsumexp (one exponential per score), one program per BLOCK_M rows:

        S_ij = scale * a_i . b_j (+ bias), positive_i = S_{i, p(i)},  p(i) = (i + shift) mod n_cols
        lse_i = log( exp(positive_i) [SEED_POSITIVE] + sum_j exp(S_ij) [IN_BATCH, j kept by
                     _pair_mask] + sum_c exp(scale * a_i . queue_c) [HAS_QUEUE] )
        fold_i = sum_c P_ic queue_c,  P_ic = exp(S_ic - lse_i)         [FOLD: MoCo's dq share]
        LABELS (SupCon; class ids in labels): _pair_mask's label test (EXCLUDE_SAME_LABEL), and
        STORE_POSITIVE stores sum_p S_ip over the positives p (same label, p != i) instead

    InfoNCE's forward; NT-Xent's and SupCon's forward when the fixed shift would underflow; and,
    with CHECK, the guarded fallback of the fixed-shift forwards: only the rows flagged by
    _combine_lse_kernel are written, and a row block without one runs no tile at all.
    Reference: sslfast.reference.contrastive.info_nce / nt_xent / clip_loss / supcon.
    """
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    partners = (rows + partner_shift) % n_cols
    scale, bias = _load_scale_bias(scale_ptr, bias_ptr, HAS_BIAS, ACC_DTYPE)
    scale2 = scale * 1.4426950408889634
    bias2 = bias * 1.4426950408889634
    if CHECK:
        todo = row_ok & (tl.load(flag_ptr + rows64, mask=row_ok, other=0) != 0)
        any_todo = tl.max(todo.to(tl.int32), axis=0) > 0
        col_end = tl.where(any_todo, n_cols, 0)
        queue_end = tl.where(any_todo, n_queue, 0)
    else:
        todo = row_ok
        col_end = n_cols
        queue_end = n_queue
    row_labels = _load_labels(labels_ptr, rows64, row_ok, LABELS)
    if LABELS:
        positive_dots = tl.zeros((BLOCK_M,), ACC_DTYPE)
    elif STORE_POSITIVE | SEED_POSITIVE:
        positive = _row_dots(a_ptr, rows64, b_ptr, partners.to(tl.int64), row_ok, D,
                             BLOCK_M, BLOCK_K, ACC_DTYPE) * scale + bias
    if SEED_POSITIVE:
        row_max = positive * 1.4426950408889634
        row_sum = tl.full((BLOCK_M,), 1.0, ACC_DTYPE)
    else:
        row_max = tl.full((BLOCK_M,), float("-inf"), ACC_DTYPE)
        row_sum = tl.zeros((BLOCK_M,), ACC_DTYPE)
    a_rows = _resident_tile(a_ptr, rows64, row_ok, D, BLOCK_K, RESIDENT)
    if IN_BATCH:
        for col_start in range(0, col_end, BLOCK_N):
            cols = col_start + tl.arange(0, BLOCK_N)
            col_ok = cols < n_cols
            dots = _scores(a_rows, a_ptr, rows64, row_ok, b_ptr, cols.to(tl.int64), col_ok, D,
                           BLOCK_M, BLOCK_N, BLOCK_K, RESIDENT, ACC_DTYPE, DOT_PRECISION, UPCAST_BF16)
            col_labels = _load_labels(labels_ptr, cols.to(tl.int64), col_ok, LABELS)
            keep = _pair_mask(rows, row_ok, cols, col_ok, partners, row_labels, col_labels,
                              EXCLUDE_SELF, EXCLUDE_PARTNER, EXCLUDE_SAME_LABEL)
            x = tl.where(keep, dots * scale2 + bias2, float("-inf"))
            row_max, row_sum, _, _ = _online_logsumexp2(row_max, row_sum, x)
            if LABELS & STORE_POSITIVE:
                positive_dots += tl.sum(tl.where(_positive_pairs(rows, row_ok, cols, col_ok, row_labels,
                                                                 col_labels), dots, 0.0), axis=1)
    if HAS_QUEUE:
        folded = tl.zeros((BLOCK_M, BLOCK_K), ACC_DTYPE)
        for col_start in range(0, queue_end, BLOCK_N):
            cols = col_start + tl.arange(0, BLOCK_N)
            col_ok = cols < n_queue
            if FOLD:  # FOLD needs RESIDENT: the queue tile is the score operand and the values
                u = _load_tile(queue_ptr, cols.to(tl.int64), col_ok, tl.arange(0, BLOCK_K), D)
                dots = _dot(a_rows, tl.trans(u), tl.zeros((BLOCK_M, BLOCK_N), ACC_DTYPE),
                            DOT_PRECISION, UPCAST_BF16)
            else:
                dots = _scores(a_rows, a_ptr, rows64, row_ok, queue_ptr, cols.to(tl.int64), col_ok,
                               D, BLOCK_M, BLOCK_N, BLOCK_K, RESIDENT, ACC_DTYPE, DOT_PRECISION,
                               UPCAST_BF16)
            x = tl.where(row_ok[:, None] & col_ok[None, :], dots * scale2, float("-inf"))
            row_max, row_sum, p, alpha = _online_logsumexp2(row_max, row_sum, x)
            if FOLD:
                folded = _dot(p.to(u.dtype), u, folded * alpha[:, None], DOT_PRECISION, UPCAST_BF16)
        if FOLD:
            k_offs = tl.arange(0, BLOCK_K)
            tl.store(fold_ptr + rows64[:, None] * D + k_offs[None, :], folded / row_sum[:, None],
                     mask=row_ok[:, None] & (k_offs[None, :] < D))
    tl.store(lse_ptr + rows64, (row_max + tl.log2(row_sum)) * 0.6931471805599453, mask=todo)
    if STORE_POSITIVE:
        if LABELS:
            positive = positive_dots * scale
        tl.store(pos_ptr + rows64, positive, mask=row_ok)


# ---------------------------------------------------------------------------------------------
# Backward kernels
# ---------------------------------------------------------------------------------------------


@_autotune("bwd", ["SIGLIP", "USE_ROW_LSE", "USE_COL_LSE", "IN_BATCH", "HAS_QUEUE", "SCALAR_GRADS", "SUPCON"])
@triton.jit
def _pair_bwd_kernel(a_ptr, b_ptr, queue_ptr, scale_ptr, bias_ptr, coef_ptr, row_lse_ptr,
                     col_lse_ptr, grad_ptr, part_ptr, labels_ptr, row_coef_ptr,
                     n_rows, n_cols, n_queue, partner_shift, D,
                     SIGLIP: tl.constexpr, USE_ROW_LSE: tl.constexpr, USE_COL_LSE: tl.constexpr,
                     PARTNER_COEF: tl.constexpr, EXCLUDE_SELF: tl.constexpr,
                     EXCLUDE_PARTNER: tl.constexpr, SUPCON: tl.constexpr, IN_BATCH: tl.constexpr,
                     HAS_QUEUE: tl.constexpr, HAS_BIAS: tl.constexpr, SCALAR_GRADS: tl.constexpr,
                     D_PAD: tl.constexpr, D_CLASS: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     ACC_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
                     UPCAST_BF16: tl.constexpr):
    """Fused backward of one side, D <= BLOCK_K <= 256: a program owns BLOCK_M rows of a and an
    fp32 [BLOCK_M, D] accumulator, and streams b's rows (then the queue's), each tile loaded once:

        G_ij = _grad_weights(S_ij) (queue columns: exp(S - lse_i) only)
        grad_a_i = coef[0] * (sum_j G_ij b_j + sum_c G_ic queue_c)
        part[m] = (sum_{i in m, j} G_ij a_i . b_j, sum G_ij) * coef[1]             [SCALAR_GRADS]

    NT-Xent, SupCon: W = G + G^T (symmetric), so this one launch is the whole gradient. CLIP /
    SigLIP / InfoNCE keys: a second launch with a and b (and the lse roles) swapped gives the
    other side. SupCon reads the class ids and per-row coefficients (row_coef) as well.
    Reference: autograd of sslfast.reference.contrastive.
    """
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    partners = (rows + partner_shift) % n_cols
    k_offs = tl.arange(0, BLOCK_K)
    scale, bias = _load_scale_bias(scale_ptr, bias_ptr, HAS_BIAS, ACC_DTYPE)
    row_lse, row_labels, row_coef = _row_terms(row_lse_ptr, labels_ptr, row_coef_ptr, rows64, row_ok,
                                               USE_ROW_LSE, SUPCON, BLOCK_M, ACC_DTYPE)
    a_rows = _load_tile(a_ptr, rows64, row_ok, k_offs, D)
    acc = tl.zeros((BLOCK_M, BLOCK_K), ACC_DTYPE)
    scale_grad = tl.zeros((BLOCK_M,), ACC_DTYPE)
    bias_grad = tl.zeros((BLOCK_M,), ACC_DTYPE)
    if IN_BATCH:
        for col_start in range(0, n_cols, BLOCK_N):
            cols = col_start + tl.arange(0, BLOCK_N)
            col_ok = cols < n_cols
            cols64 = cols.to(tl.int64)
            col_lse, col_labels, col_coef = _row_terms(col_lse_ptr, labels_ptr, row_coef_ptr, cols64,
                                                       col_ok, USE_COL_LSE, SUPCON, BLOCK_N, ACC_DTYPE)
            b = _load_tile(b_ptr, cols64, col_ok, k_offs, D)
            dots = _dot(a_rows, tl.trans(b), tl.zeros((BLOCK_M, BLOCK_N), ACC_DTYPE),
                        DOT_PRECISION, UPCAST_BF16)
            weight, _ = _grad_weights(dots, rows, row_ok, cols, col_ok, partners, scale, bias,
                                      row_lse, col_lse, row_labels, col_labels, row_coef, col_coef,
                                      SIGLIP, USE_ROW_LSE, USE_COL_LSE, PARTNER_COEF, EXCLUDE_SELF,
                                      EXCLUDE_PARTNER, False, SUPCON)
            if SCALAR_GRADS:
                scale_grad += tl.sum(weight * dots, axis=1)
                bias_grad += tl.sum(weight, axis=1)
            acc = _dot(weight.to(b.dtype), b, acc, DOT_PRECISION, UPCAST_BF16)
    if HAS_QUEUE:
        for col_start in range(0, n_queue, BLOCK_N):
            cols = col_start + tl.arange(0, BLOCK_N)
            col_ok = cols < n_queue
            u = _load_tile(queue_ptr, cols.to(tl.int64), col_ok, k_offs, D)
            dots = _dot(a_rows, tl.trans(u), tl.zeros((BLOCK_M, BLOCK_N), ACC_DTYPE),
                        DOT_PRECISION, UPCAST_BF16)
            weight = tl.where(row_ok[:, None] & col_ok[None, :],
                              tl.exp2((dots * scale - row_lse[:, None]) * 1.4426950408889634), 0.0)
            acc = _dot(weight.to(u.dtype), u, acc, DOT_PRECISION, UPCAST_BF16)
    grad_coef = tl.load(coef_ptr).to(ACC_DTYPE)
    tl.store(grad_ptr + rows64[:, None] * D + k_offs[None, :],
             (acc * grad_coef).to(grad_ptr.dtype.element_ty),
             mask=row_ok[:, None] & (k_offs[None, :] < D))
    if SCALAR_GRADS:
        part_coef = tl.load(coef_ptr + 1).to(ACC_DTYPE)
        part = part_ptr + pid.to(tl.int64) * 2
        tl.store(part, tl.sum(scale_grad, axis=0) * part_coef)
        tl.store(part + 1, tl.sum(bias_grad, axis=0) * part_coef)


@_autotune("grad_weight", ["SIGLIP", "USE_ROW_LSE", "USE_COL_LSE", "SCALAR_GRADS", "SUPCON"])
@triton.jit
def _grad_weight_kernel(a_ptr, b_ptr, scale_ptr, bias_ptr, coef_ptr, row_lse_ptr, col_lse_ptr,
                        g_ptr, part_ptr, labels_ptr, row_coef_ptr, row_start, row_end, n_cols,
                        partner_shift, g_stride, g_col_offset, D,
                        SIGLIP: tl.constexpr, USE_ROW_LSE: tl.constexpr, USE_COL_LSE: tl.constexpr,
                        PARTNER_COEF: tl.constexpr, EXCLUDE_SELF: tl.constexpr,
                        EXCLUDE_PARTNER: tl.constexpr, SUPCON: tl.constexpr, HAS_BIAS: tl.constexpr,
                        SCALAR_GRADS: tl.constexpr, D_PAD: tl.constexpr, D_CLASS: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                        ACC_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
                        UPCAST_BF16: tl.constexpr):
    """Gradient weights of one tile for the cuBLAS backward (D > 256, and fp64 on GPUs), one
    program per (row tile of the chunk [row_start, row_end), column tile):

        g[i - row_start, g_col_offset + j] = coef[0] * _grad_weights(S_ij)   (input dtype)
        part[m, n] = (sum G_ij a_i . b_j, sum G_ij) * coef[1]                 [SCALAR_GRADS]

    The launcher then runs grad_a[chunk] = g @ b and grad_b += g^T @ a[chunk].
    Reference: autograd of sslfast.reference.contrastive.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = row_start + pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < row_end
    rows64 = rows.to(tl.int64)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < n_cols
    cols64 = cols.to(tl.int64)
    partners = (rows + partner_shift) % n_cols
    scale, bias = _load_scale_bias(scale_ptr, bias_ptr, HAS_BIAS, ACC_DTYPE)
    row_lse, row_labels, row_coef = _row_terms(row_lse_ptr, labels_ptr, row_coef_ptr, rows64, row_ok,
                                               USE_ROW_LSE, SUPCON, BLOCK_M, ACC_DTYPE)
    col_lse, col_labels, col_coef = _row_terms(col_lse_ptr, labels_ptr, row_coef_ptr, cols64, col_ok,
                                               USE_COL_LSE, SUPCON, BLOCK_N, ACC_DTYPE)
    dots = _scores(tl.zeros((1, BLOCK_K), tl.float32), a_ptr, rows64, row_ok, b_ptr, cols64, col_ok,
                   D, BLOCK_M, BLOCK_N, BLOCK_K, False, ACC_DTYPE, DOT_PRECISION, UPCAST_BF16)
    weight, _ = _grad_weights(dots, rows, row_ok, cols, col_ok, partners, scale, bias, row_lse,
                              col_lse, row_labels, col_labels, row_coef, col_coef, SIGLIP,
                              USE_ROW_LSE, USE_COL_LSE, PARTNER_COEF, EXCLUDE_SELF, EXCLUDE_PARTNER,
                              False, SUPCON)
    grad_coef = tl.load(coef_ptr).to(ACC_DTYPE)
    local = (rows64 - row_start)[:, None] * g_stride + g_col_offset + cols64[None, :]
    tl.store(g_ptr + local, (weight * grad_coef).to(g_ptr.dtype.element_ty),
             mask=row_ok[:, None] & col_ok[None, :])
    if SCALAR_GRADS:
        part_coef = tl.load(coef_ptr + 1).to(ACC_DTYPE)
        part = part_ptr + (pid_m.to(tl.int64) * tl.num_programs(1) + pid_n) * 2
        tl.store(part, tl.sum(tl.sum(weight * dots, axis=1), axis=0) * part_coef)
        tl.store(part + 1, tl.sum(tl.sum(weight, axis=1), axis=0) * part_coef)


# ---------------------------------------------------------------------------------------------
# Launchers (the registered op implementations)
# ---------------------------------------------------------------------------------------------


def _acc_dtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _d_pad(d):
    return max(16, triton.next_power_of_2(d))


def _fp64_on_gpu(x):
    return x.dtype == torch.float64 and not _INTERPRETED


def _fused(x):
    """The fused backward (and the in-kernel MoCo fold) holds an fp32 [BLOCK_M, D] accumulator:
    D up to _FUSED_MAX_D; fp64 on GPUs always takes G + torch matmul (no fp64 tl.dot)."""
    return _d_pad(x.shape[1]) <= _FUSED_MAX_D and not _fp64_on_gpu(x)


def _options(x, kind):
    """Compile-time options of one launch, from the [rows, D] input x and the kernel kind."""
    d_pad = _d_pad(x.shape[1])
    if kind in ("fold", "bwd"):  # the whole padded D in one chunk: the accumulator's width
        block_k = d_pad
    elif _fp64_on_gpu(x):
        block_k = min(d_pad, _FP64_BLOCK)
    elif kind == "grad_weight":
        block_k = min(d_pad, _STREAM_BLOCK_K)
    else:
        block_k = d_pad if d_pad <= _RESIDENT_MAX_D else _STREAM_BLOCK_K
    options = {
        "D_PAD": d_pad,
        "BLOCK_K": block_k,
        "ACC_DTYPE": tl.float64 if x.dtype == torch.float64 else tl.float32,
        # fp32 inputs must not be rounded to tf32: the result has to match an fp32 matmul.
        "DOT_PRECISION": "ieee" if x.dtype in (torch.float32, torch.float64) else "tf32",
        "UPCAST_BF16": _INTERPRETED and x.dtype == torch.bfloat16,
    }
    if kind in ("fwd", "fold"):
        options["RESIDENT"] = d_pad <= block_k
    return options


def _min_block(kind, options, key):
    """The smallest BLOCK_M / BLOCK_N the autotuner may pick for this launch: partial buffers are
    sized for it, and slots of larger configs' unused programs stay zero."""
    kept = _prune(_tile_configs(kind), {}, **options)
    return min(c.kwargs[key] for c in kept)


def _device_scalar(value, like):
    """A 0-D tensor in the accumulation dtype: exact in fp64, no host sync to create."""
    return torch.full((), value, dtype=_acc_dtype(like), device=like.device)


def _coefs(grad_coef, part_coef, like):
    """coef[0] multiplies gradient rows, coef[1] the scalar-gradient partials (device tensors)."""
    acc = _acc_dtype(like)
    return torch.stack([grad_coef.reshape(()).to(acc), part_coef.reshape(()).to(acc)])


def _row_grid(n_rows):
    return lambda meta: (triton.cdiv(n_rows, meta["BLOCK_M"]),)


def _part_slots(a, m):
    """(splits, row blocks) of _pair_fwd_kernel's parts for a [n, D] against m columns."""
    block = _min_block("fwd", _options(a, "fwd"), "BLOCK_M")  # square tiles: BLOCK_N == BLOCK_M
    return triton.cdiv(triton.cdiv(m, block), _TILES_PER_PROGRAM), triton.cdiv(a.shape[0], block)


def _shifted_forward(mode, a, b, scale, bias, partner_shift, exclude_partner, *, labels=None,
                     negatives_only=False, lse=None, aux=None):
    """_pair_fwd_kernel over a [n, D] x b [m, D]: (row parts [splits, n], column parts
    [row blocks, m], positive logits [n], block shifts [row blocks]). Parts that no program
    writes (the triangle's lower half, programs that a larger config does not launch) stay -inf
    (0 for SigLIP's and SupCon pairs' plain sums); block shifts stay -inf likewise. SupCon modes:
    ``labels`` (class ids), ``lse`` (the pairs pass) and ``aux`` = (row, column) buffers of the
    extra sums, zeros shaped like the parts (_part_slots)."""
    n, d = a.shape
    m = b.shape[0]
    acc = _acc_dtype(a)
    options = _options(a, "fwd")
    splits, row_blocks = _part_slots(a, m)
    plain = mode in (_SIGLIP, _SUPCON_PAIRS)  # sums, not log2-domain parts; no column parts
    empty = 0.0 if plain else float("-inf")
    row_part = a.new_full((splits, n), empty, dtype=acc)
    col_part = a.new_full((row_blocks if not plain else 1, m), empty, dtype=acc)
    shifts = a.new_full((row_blocks,), float("-inf"), dtype=acc)
    positive = a.new_empty((n,), dtype=acc)
    row_frame = a.new_empty((n,), dtype=acc)
    has_bias = bias is not None
    aux_row, aux_col = aux if aux is not None else (row_part, col_part)
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK_M"]),
                         triton.cdiv(triton.cdiv(m, meta["BLOCK_N"]), _TILES_PER_PROGRAM))
    _pair_fwd_kernel[grid](a, b, scale, bias if has_bias else scale, row_part, col_part, positive,
                           row_frame, shifts, labels if labels is not None else row_part,
                           lse if lse is not None else row_part, aux_row, aux_col,
                           n, m, partner_shift, d, _TILES_PER_PROGRAM, MODE=mode,
                           EXCLUDE_PARTNER=bool(exclude_partner), HAS_BIAS=has_bias,
                           NEGATIVES_ONLY=bool(negatives_only), **options)
    return row_part, col_part, positive, row_frame, shifts


_COMBINE_BLOCK = 256


def _combine(row_part, row_frame, col_part, shifts):
    """(lse, flags) from log2-domain parts (either may be None): _combine_lse_kernel."""
    some = row_part if row_part is not None else col_part
    n = some.shape[1]
    lse = some.new_empty((n,))
    flags = torch.empty((n,), dtype=torch.int32, device=some.device)
    row_part = some[:0] if row_part is None else row_part
    col_part = some[:0] if col_part is None else col_part
    _combine_lse_kernel[(triton.cdiv(n, _COMBINE_BLOCK),)](
        row_part, row_part.shape[0], row_frame if row_frame is not None else lse, col_part,
        col_part.shape[0], shifts, lse, flags, n, BLOCK=_COMBINE_BLOCK,
        ACC_DTYPE=tl.float64 if some.dtype == torch.float64 else tl.float32)
    return lse, flags


def _fallback_rows(a, b, scale, bias, lse, flags, partner_shift, exclude_self, exclude_partner, *,
                   labels=None, exclude_same_label=False):
    """Recompute, with per-row maxima, the rows that _combine flagged (no host sync: a row block
    without a flagged row runs no tile)."""
    n, d = a.shape
    has_bias = bias is not None
    _row_lse_kernel[_row_grid(n)](
        a, b, b, scale, bias if has_bias else scale, lse, lse, flags, lse,
        labels if labels is not None else lse, n, b.shape[0], 0, partner_shift, d,
        EXCLUDE_SELF=exclude_self, EXCLUDE_PARTNER=exclude_partner, LABELS=labels is not None,
        EXCLUDE_SAME_LABEL=bool(exclude_same_label), IN_BATCH=True, HAS_QUEUE=False,
        SEED_POSITIVE=False, STORE_POSITIVE=False, HAS_BIAS=has_bias, CHECK=True, FOLD=False,
        **_options(a, "fwd"))


def _weight_flags(**overrides):
    flags = dict(SIGLIP=False, USE_ROW_LSE=True, USE_COL_LSE=False, PARTNER_COEF=0.0,
                 EXCLUDE_SELF=False, EXCLUDE_PARTNER=False, SUPCON=_NO_LABELS)
    flags.update(overrides)
    return flags


def _fused_side(a, b, scale, bias, coefs, row_lse, col_lse, grad, partner_shift, flags, *,
                queue=None, in_batch=True, scalar_grads=False, labels=None, row_coef=None):
    """_pair_bwd_kernel for the rows of a; returns the [row blocks, 2] partials. SupCon flags
    read ``labels`` (class ids) and ``row_coef``."""
    n, d = a.shape
    options = _options(a, "bwd")
    part = a.new_zeros((triton.cdiv(n, _min_block("bwd", options, "BLOCK_M")), 2), dtype=_acc_dtype(a))
    has_bias = bias is not None
    _pair_bwd_kernel[_row_grid(n)](
        a, b, queue if queue is not None else b, scale, bias if has_bias else scale, coefs,
        row_lse, col_lse, grad, part, labels if labels is not None else row_lse,
        row_coef if row_coef is not None else row_lse, n, b.shape[0], 0 if queue is None else queue.shape[0],
        partner_shift, d, IN_BATCH=in_batch, HAS_QUEUE=queue is not None, HAS_BIAS=has_bias,
        SCALAR_GRADS=scalar_grads, **flags, **options)
    return part


def _grad_weight_chunks(a, sources, scale, bias, coefs, row_lse, partner_shift, *, scalar_grads=False,
                        labels=None, row_coef=None):
    """The G path: for chunks of a's rows, the gradient weights against each (b, col_lse, flags)
    of ``sources``, side by side in one [chunk, sum of widths] tensor of a's dtype. Yields
    (start, end, [G per source], partial sums [2]). A chunk holds at most _G_CHUNK_BYTES.
    SupCon flags read ``labels`` (class ids) and ``row_coef``."""
    n, d = a.shape
    widths = [b.shape[0] for b, _, _ in sources]
    total = sum(widths)
    rows_per_chunk = max(16, _G_CHUNK_BYTES // max(1, total * a.element_size()))
    options = _options(a, "grad_weight")
    block_m = _min_block("grad_weight", options, "BLOCK_M")
    block_n = _min_block("grad_weight", options, "BLOCK_N")
    has_bias = bias is not None
    for start in range(0, n, rows_per_chunk):
        end = min(n, start + rows_per_chunk)
        g = a.new_empty((end - start, total))
        parts = []
        offset = 0
        for (b, col_lse, flags), width in zip(sources, widths):
            part = a.new_zeros((triton.cdiv(end - start, block_m) * triton.cdiv(width, block_n), 2),
                               dtype=_acc_dtype(a))
            grid = lambda meta, rows=end - start, width=width: (triton.cdiv(rows, meta["BLOCK_M"]),
                                                                triton.cdiv(width, meta["BLOCK_N"]))
            _grad_weight_kernel[grid](
                a, b, scale, bias if has_bias else scale, coefs, row_lse,
                col_lse if col_lse is not None else row_lse, g, part,
                labels if labels is not None else row_lse, row_coef if row_coef is not None else row_lse,
                start, end, width,
                partner_shift, total, offset, d, HAS_BIAS=has_bias, SCALAR_GRADS=scalar_grads,
                **flags, **options)
            parts.append(part.sum(dim=0))
            offset += width
        yield start, end, list(g.split(widths, dim=1)), torch.stack(parts).sum(dim=0)


def _scalar_grads(part, logit_scale, logit_bias):
    # copy=True: both come from one tensor, and the schema promises outputs that do not alias
    grad_scale = part[0].to(logit_scale.dtype, copy=True).reshape(logit_scale.shape)
    if logit_bias is not None:
        grad_bias = part[1].to(logit_bias.dtype, copy=True).reshape(logit_bias.shape)
    else:
        grad_bias = torch.zeros_like(logit_scale)
    return grad_scale, grad_bias


def nt_xent_fwd(z, temperature, exclude_positive):
    z = z.contiguous()
    n, d = z.shape
    acc = _acc_dtype(z)
    inv_t = _device_scalar(1.0 / temperature, z)
    exclude_positive = bool(exclude_positive)
    block = _min_block("fwd", _options(z, "fwd"), "BLOCK_M")
    partial_bytes = (triton.cdiv(n, block) + triton.cdiv(triton.cdiv(n, block), _TILES_PER_PROGRAM)) * n * 4
    if 2 * _LOG2E / temperature <= _SHIFT_MAX_SPREAD_LOG2 and partial_bytes <= _SHIFT_PARTIAL_BYTES:
        row_part, col_part, positive, row_frame, shifts = _shifted_forward(
            _NT_XENT, z, z, inv_t, None, n // 2, exclude_positive)
        lse, flags = _combine(row_part, row_frame, col_part, shifts)
        _fallback_rows(z, z, inv_t, None, lse, flags, n // 2, True, exclude_positive)
    else:
        lse = z.new_empty((n,), dtype=acc)
        positive = z.new_empty((n,), dtype=acc)
        _row_lse_kernel[_row_grid(n)](
            z, z, z, inv_t, inv_t, lse, positive, lse, lse, lse, n, n, 0, n // 2, d,
            EXCLUDE_SELF=True, EXCLUDE_PARTNER=exclude_positive, LABELS=False,
            EXCLUDE_SAME_LABEL=False, IN_BATCH=True, HAS_QUEUE=False,
            SEED_POSITIVE=False, STORE_POSITIVE=True, HAS_BIAS=False, CHECK=False, FOLD=False,
            **_options(z, "fwd"))
    return (lse - positive).mean(), lse


def nt_xent_bwd(grad_loss, z, lse, temperature, exclude_positive):
    z, lse = z.contiguous(), lse.contiguous()
    n, d = z.shape
    inv_t = _device_scalar(1.0 / temperature, z)
    coef = grad_loss.reshape(()).to(_acc_dtype(z)) / (n * temperature)
    coefs = _coefs(coef, coef, z)
    # W is symmetric (S and the allowed pairs are): the column terms fold into row k's gradient.
    flags = _weight_flags(USE_COL_LSE=True, PARTNER_COEF=2.0, EXCLUDE_SELF=True,
                          EXCLUDE_PARTNER=bool(exclude_positive))
    grad_z = torch.empty_like(z)
    if _fused(z):
        _fused_side(z, z, inv_t, None, coefs, lse, lse, grad_z, n // 2, flags)
    else:
        for start, end, (g,), _ in _grad_weight_chunks(z, [(z, lse, flags)], inv_t, None, coefs, lse, n // 2):
            torch.mm(g, z, out=grad_z[start:end])
    return grad_z


def info_nce_fwd(query, key, queue, temperature, in_batch_negatives, fold_queue_grad):
    query, key = query.contiguous(), key.contiguous()
    queue = None if queue is None else queue.contiguous()
    in_batch = bool(in_batch_negatives)
    if fold_queue_grad and (queue is None or in_batch):
        raise RuntimeError("sslfast_triton::info_nce_fwd: fold_queue_grad needs a queue and no "
                           "in-batch negatives (MoCo)")
    n, d = query.shape
    acc = _acc_dtype(query)
    inv_t = _device_scalar(1.0 / temperature, query)
    lse = query.new_empty((n,), dtype=acc)
    positive = query.new_empty((n,), dtype=acc)
    fold_here = bool(fold_queue_grad) and _fused(query)
    folded = query.new_empty((n, d) if fold_queue_grad else (0,), dtype=acc)
    has_queue = queue is not None
    _row_lse_kernel[_row_grid(n)](
        query, key, queue if has_queue else key, inv_t, inv_t, lse, positive, lse,
        folded if fold_here else lse, lse, n, n, queue.shape[0] if has_queue else 0, 0, d,
        EXCLUDE_SELF=False, EXCLUDE_PARTNER=False, LABELS=False, EXCLUDE_SAME_LABEL=False,
        IN_BATCH=in_batch, HAS_QUEUE=has_queue,
        SEED_POSITIVE=not in_batch, STORE_POSITIVE=True, HAS_BIAS=False, CHECK=False,
        FOLD=fold_here, **_options(query, "fold" if fold_here else "fwd"))
    if fold_queue_grad and not fold_here:
        # P_ic for the queue columns, then folded = P @ queue: the G path with unit coefficients.
        ones = _coefs(torch.ones((), device=query.device), torch.ones((), device=query.device), query)
        for start, end, (p,), _ in _grad_weight_chunks(query, [(queue, None, _weight_flags())],
                                                       inv_t, None, ones, lse, 0):
            folded[start:end] = torch.mm(p, queue).to(acc)
    return (lse - positive).mean(), lse, folded


def _own_key_terms(query, key, lse, temperature, coef):
    """MoCo without in-batch negatives: key i is the only key in row i's denominator, so
    dq_i gets coef (P_ii - 1) k_i and dk_i = coef (P_ii - 1) q_i: O(N D), no score tile."""
    acc = _acc_dtype(query)
    q, k = query.to(acc), key.to(acc)
    own = torch.exp((q * k).sum(dim=1) / temperature - lse) - 1.0
    return coef * own[:, None] * k, coef * own[:, None] * q


def info_nce_bwd(grad_loss, query, key, queue, lse, folded, temperature, in_batch_negatives):
    query, key, lse = query.contiguous(), key.contiguous(), lse.contiguous()
    queue = None if queue is None else queue.contiguous()
    in_batch = bool(in_batch_negatives)
    n, d = query.shape
    acc = _acc_dtype(query)
    inv_t = _device_scalar(1.0 / temperature, query)
    coef = grad_loss.reshape(()).to(acc) / (n * temperature)
    if folded.numel():  # MoCo with the queue's share summed in the forward
        own_q, own_k = _own_key_terms(query, key, lse, temperature, coef)
        return (coef * folded + own_q).to(query.dtype), own_k.to(key.dtype)
    coefs = _coefs(coef, coef, query)
    key_flags = _weight_flags(PARTNER_COEF=1.0)
    if _fused(query):
        grad_query = torch.empty_like(query) if in_batch else query.new_empty(query.shape, dtype=acc)
        _fused_side(query, key, inv_t, None, coefs, lse, lse, grad_query, 0, key_flags,
                    queue=queue, in_batch=in_batch)
        if in_batch:
            grad_key = torch.empty_like(key)
            _fused_side(key, query, inv_t, None, coefs, lse, lse, grad_key, 0,
                        _weight_flags(USE_ROW_LSE=False, USE_COL_LSE=True, PARTNER_COEF=1.0))
            return grad_query, grad_key
    else:
        sources = ([(key, None, key_flags)] if in_batch else []) + (
            [(queue, None, _weight_flags())] if queue is not None else [])
        grad_query = query.new_zeros(query.shape, dtype=acc if not in_batch else query.dtype)
        grad_key = key.new_zeros(key.shape, dtype=acc) if in_batch else None
        for start, end, gs, _ in _grad_weight_chunks(query, sources, inv_t, None, coefs, lse, 0):
            values = ([key] if in_batch else []) + ([queue] if queue is not None else [])
            grad_query[start:end] = sum(torch.mm(g, v) for g, v in zip(gs, values)).to(grad_query.dtype)
            if in_batch:
                grad_key += torch.mm(gs[0].t(), query[start:end]).to(acc)
        if in_batch:
            return grad_query, grad_key.to(key.dtype)
    own_q, own_k = _own_key_terms(query, key, lse, temperature, coef)
    return (grad_query + own_q).to(query.dtype), own_k.to(key.dtype)


def clip_loss_fwd(image, text, logit_scale, logit_bias):
    image, text = image.contiguous(), text.contiguous()
    row_part, col_part, positive, row_frame, shifts = _shifted_forward(
        _CLIP, image, text, logit_scale, logit_bias, 0, False)
    row_lse, row_flags = _combine(row_part, row_frame, None, shifts)
    col_lse, col_flags = _combine(None, None, col_part, shifts)
    # S^T = scale * text image^T + bias: the column fallback is the row fallback, swapped.
    _fallback_rows(image, text, logit_scale, logit_bias, row_lse, row_flags, 0, False, False)
    _fallback_rows(text, image, logit_scale, logit_bias, col_lse, col_flags, 0, False, False)
    loss = ((row_lse - positive).mean() + (col_lse - positive).mean()) / 2
    return loss, row_lse, col_lse


def _pair_grads(image, text, logit_scale, logit_bias, coef, row_lse, col_lse, siglip):
    """(grad_image, grad_text, grad_scale, grad_bias) of CLIP (siglip=False, coef =
    g / 2N) or SigLIP (coef = g / N): both sides fused, or G + cuBLAS."""
    image, text = image.contiguous(), text.contiguous()
    acc = _acc_dtype(image)
    scale = logit_scale.reshape(()).to(acc)
    coefs = _coefs(coef * scale, coef, image)
    if siglip:
        flags = _weight_flags(SIGLIP=True, USE_ROW_LSE=False)
    else:
        flags = _weight_flags(USE_COL_LSE=True, PARTNER_COEF=2.0)
    grad_image, grad_text = torch.empty_like(image), torch.empty_like(text)
    if _fused(image):
        part = _fused_side(image, text, logit_scale, logit_bias, coefs, row_lse, col_lse, grad_image,
                           0, flags, scalar_grads=True).sum(dim=0)
        _fused_side(text, image, logit_scale, logit_bias, coefs, col_lse, row_lse, grad_text, 0, flags)
    else:
        grad_text_acc = text.new_zeros(text.shape, dtype=acc)
        parts = []
        for start, end, (g,), part in _grad_weight_chunks(image, [(text, col_lse, flags)], logit_scale,
                                                          logit_bias, coefs, row_lse, 0,
                                                          scalar_grads=True):
            torch.mm(g, text, out=grad_image[start:end])
            grad_text_acc += torch.mm(g.t(), image[start:end]).to(acc)
            parts.append(part)
        part = torch.stack(parts).sum(dim=0)
        grad_text = grad_text_acc.to(text.dtype)
    return (grad_image, grad_text, *_scalar_grads(part, logit_scale, logit_bias))


def clip_loss_bwd(grad_loss, image, text, logit_scale, logit_bias, row_lse, col_lse):
    coef = grad_loss.reshape(()).to(_acc_dtype(image)) / (2 * image.shape[0])
    return _pair_grads(image, text, logit_scale, logit_bias, coef, row_lse.contiguous(),
                       col_lse.contiguous(), siglip=False)


def siglip_loss_fwd(image, text, logit_scale, logit_bias, with_grads):
    image, text = image.contiguous(), text.contiguous()
    n = image.shape[0]
    row_part, *_ = _shifted_forward(_SIGLIP, image, text, logit_scale, logit_bias, 0, False)
    loss = row_part.sum() / n
    if with_grads:
        # SigLIP has no normalizer: the gradients need no forward result, and come from the same
        # launches as siglip_loss_bwd's for an upstream 1. The loss could share each score's
        # exponential with its weight in one pass, but that epilogue spilled on sm_90 (GPU lint).
        coef = torch.ones((), dtype=_acc_dtype(image), device=image.device) / n
        placeholder = coef.reshape(1)  # SigLIP reads no logsumexp
        return (loss, *_pair_grads(image, text, logit_scale, logit_bias, coef, placeholder,
                                   placeholder, siglip=True))
    return (loss, *(image.new_empty((0,)) for _ in range(4)))  # four distinct outputs


def siglip_loss_bwd(grad_loss, image, text, logit_scale, logit_bias):
    coef = grad_loss.reshape(()).to(_acc_dtype(image)) / image.shape[0]
    placeholder = coef.reshape(1)  # SigLIP reads no logsumexp
    return _pair_grads(image, text, logit_scale, logit_bias, coef, placeholder, placeholder,
                       siglip=True)


def _label_classes(labels, z):
    """(class ids [N] int32, positives per row P_i [N] in the accumulation dtype). A row's class id
    is the first position of its label in sorted order: equal ids exactly when labels are equal,
    and int32 whatever the label values (the kernels compare 4-byte ids). P_i = the rows with the
    label, less one. A sort and two binary searches: O(N log N), no N x N mask, no host sync."""
    n = z.shape[0]
    if labels.dim() != 1 or labels.shape[0] != n:
        raise RuntimeError(f"labels must have shape ({n}), got {list(labels.shape)}")
    if labels.dtype not in (torch.int64, torch.int32):
        raise RuntimeError(f"labels must be int64 or int32, got {labels.dtype}")
    if labels.device != z.device:
        raise RuntimeError(f"labels are on {labels.device} but z is on {z.device}")
    labels = labels.contiguous()
    ordered = torch.sort(labels).values
    first = torch.searchsorted(ordered, labels)
    end = torch.searchsorted(ordered, labels, right=True)
    return first.to(torch.int32), (end - first - 1).to(_acc_dtype(z))


def supcon_fwd(z, labels, temperature, pairwise):
    """SupCon's (loss, lse [N], row_stats [2, N]); the C++ contract (csrc/cpu/contrastive.cpp):
    lse over every j != i (Khosla) or over the other labels only (pairwise, -inf without any);
    row_stats[0] = P_i, row_stats[1] = (pairwise) sum over i's positives of sigmoid(lse_i - s_ip).
    """
    if not temperature > 0:
        raise RuntimeError(f"temperature must be > 0, got {temperature}")
    z = z.contiguous()
    n, d = z.shape
    acc = _acc_dtype(z)
    pairwise = bool(pairwise)
    classes, positives = _label_classes(labels, z)
    inv_t = _device_scalar(1.0 / temperature, z)
    splits, row_blocks = _part_slots(z, n)
    # Khosla's positive sums take a second row / column part pair.
    partial_bytes = (splits + row_blocks) * n * 4 * (1 if pairwise else 2)
    if 2 * _LOG2E / temperature <= _SHIFT_MAX_SPREAD_LOG2 and partial_bytes <= _SHIFT_PARTIAL_BYTES:
        # The self score |z_i|^2 / T is the shift (partner = self): the largest score of unit rows,
        # so no exponential overflows; what the shift cannot hold (rows far from unit norm, an
        # anchor without negatives) the combine flags and the fallback redoes.
        aux = (z.new_zeros((splits, n), dtype=acc), z.new_zeros((row_blocks, n), dtype=acc))
        row_part, col_part, self_score, row_frame, shifts = _shifted_forward(
            _SUPCON, z, z, inv_t, None, 0, False, labels=classes, negatives_only=pairwise, aux=aux)
        lse, flags = _combine(row_part, row_frame, col_part, shifts)
        # Khosla's denominator is NT-Xent's (every j != i): its fallback reads no labels.
        _fallback_rows(z, z, inv_t, None, lse, flags, 0, True, False,
                       labels=classes if pairwise else None, exclude_same_label=pairwise)
        # The kernel's same-label dot sums are unscaled and hold each row's own score.
        positive_sum = (aux[0].sum(dim=0) + aux[1].sum(dim=0)) * inv_t - self_score
    else:
        lse = z.new_empty((n,), dtype=acc)
        positive_sum = z.new_empty((n,), dtype=acc)
        _row_lse_kernel[_row_grid(n)](
            z, z, z, inv_t, inv_t, lse, positive_sum, lse, lse, classes, n, n, 0, 0, d,
            EXCLUDE_SELF=True, EXCLUDE_PARTNER=False, LABELS=True, EXCLUDE_SAME_LABEL=pairwise,
            IN_BATCH=True, HAS_QUEUE=False, SEED_POSITIVE=False, STORE_POSITIVE=not pairwise,
            HAS_BIAS=False, CHECK=False, FOLD=False, **_options(z, "fwd"))
    stats = z.new_zeros((2, n), dtype=acc)
    stats[0] = positives
    if not pairwise:
        # where, not a product: an anchor without positives adds 0 even where lse is -inf (N = 1).
        terms = torch.where(positives > 0, lse - positive_sum / positives.clamp(min=1), 0.0)
        return terms.sum() / n, lse, stats
    aux = (z.new_zeros((splits, n), dtype=acc), z.new_zeros((1, n), dtype=acc))
    softplus_part, *_ = _shifted_forward(_SUPCON_PAIRS, z, z, inv_t, None, 0, False, labels=classes,
                                         lse=lse, aux=aux)
    stats[1] = aux[0].sum(dim=0)
    pairs = positives.sum()
    loss = torch.where(pairs > 0, softplus_part.sum() / pairs.clamp(min=1), 0.0)
    return loss, lse, stats


def supcon_bwd(grad_loss, z, labels, lse, row_stats, temperature, pairwise):
    """dz_k = (1/T) sum_j W_kj z_j, W = G + G^T (_grad_weights' SupCon modes): the gradient
    coefficient c (g / N, or g / pairs) goes into the launch's coefficient, the per-row part
    (1 / P_i, or the pairwise sigmoid sums) into row_coef. One launch (W is symmetric)."""
    z, lse, row_stats = z.contiguous(), lse.contiguous(), row_stats.contiguous()
    n, d = z.shape
    acc = _acc_dtype(z)
    classes, _ = _label_classes(labels, z)
    positives = row_stats[0]
    g = grad_loss.reshape(()).to(acc)
    if pairwise:
        pairs = positives.sum()
        coef = torch.where(pairs > 0, g / pairs.clamp(min=1), 0.0) / temperature
        row_coef = row_stats[1]
        flags = _weight_flags(USE_COL_LSE=True, SUPCON=_PAIRWISE)
    else:
        coef = g / (n * temperature)
        row_coef = torch.where(positives > 0, 1.0 / positives.clamp(min=1), 0.0)
        flags = _weight_flags(USE_COL_LSE=True, SUPCON=_KHOSLA)
    coefs = _coefs(coef, coef, z)
    inv_t = _device_scalar(1.0 / temperature, z)
    grad_z = torch.empty_like(z)
    if _fused(z):
        _fused_side(z, z, inv_t, None, coefs, lse, lse, grad_z, 0, flags, labels=classes, row_coef=row_coef)
    else:
        for start, end, (g_rows,), _ in _grad_weight_chunks(z, [(z, lse, flags)], inv_t, None, coefs, lse, 0,
                                                            labels=classes, row_coef=row_coef):
            torch.mm(g_rows, z, out=grad_z[start:end])
    return grad_z


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
    "supcon_fwd": supcon_fwd,
    "supcon_bwd": supcon_bwd,
}

register(_IMPLEMENTATIONS)
