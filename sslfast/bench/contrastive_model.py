"""Time model of the Triton contrastive kernels (sslfast/triton/contrastive.py), per kernel launch:

    t(kernel) = max(FLOPs / bf16 peak, HBM bytes / HBM bandwidth, special-function ops / SFU rate)

summed over the launches of an op. The three rates (Hopper, H100 SXM):
  * bf16 dense MMA 785 TFLOP/s: the 8192^3 bf16 matmul measured on the H100 on 2026-11-23
    (benchmarks/NOTES.md, 774-785);
  * HBM 2995 GB/s: the device copy (read + write) measured there;
  * 4.18e12 special-function ops/s: 16 MUFU results per clock per SM (the CUDA programming guide's
    throughput table for exp2 / log2 / rcp on compute capability 9.0) x 132 SMs x 1.98 GHz (the
    H100 SXM boost clock). Not measured.
The max assumes the three overlap (tensor cores, SFU and memory are separate units); launch and
host overhead, tile quantization and pipeline bubbles are not modelled, so the model is a floor.
``python -m sslfast.bench.contrastive_model`` prints the bench shapes' predictions.
"""

from __future__ import annotations

import math

BF16_TFLOPS = 785.0
HBM_GBPS = 2995.0
SFU_PER_S = 16 * 132 * 1.98e9

# Tile sizes of the GPU configs the model assumes (sslfast/triton/contrastive.py _gpu_shapes).
BLOCK = 128
TILES_PER_PROGRAM = 8
FUSED_MAX_D = 256


def kernel_ms(flops=0.0, hbm_bytes=0.0, sfu_ops=0.0):
    return 1e3 * max(flops / (BF16_TFLOPS * 1e12), hbm_bytes / (HBM_GBPS * 1e9), sfu_ops / SFU_PER_S)


def _shift_partials(n_rows, n_cols):
    """Bytes the fixed-shift forward's log-domain partials cost: filled, written, then read by
    the combine (fp32)."""
    row_blocks = math.ceil(n_rows / BLOCK)
    splits = math.ceil(math.ceil(n_cols / BLOCK) / TILES_PER_PROGRAM)
    return 3 * 4 * (splits * n_rows + row_blocks * n_cols)


def _gradient_launches(n, m, d, exps_per_score, sides, elt=2):
    """Backward: fused (D <= 256; each side recomputes S and multiplies G back: 4 n m d FLOPs)
    or G + cuBLAS (one G kernel: 2 n m d FLOPs, G written in bf16; cuBLAS: 2 n m d per side)."""
    if d <= FUSED_MAX_D:
        return [kernel_ms(4 * n * m * d, elt * (n + m) * d * 2, exps_per_score * n * m) for _ in range(sides)]
    launches = [kernel_ms(2 * n * m * d, elt * n * m + elt * (n + m) * d, exps_per_score * n * m)]
    launches += [kernel_ms(2 * n * m * d, elt * n * m + elt * (n + m) * d) for _ in range(sides)]
    return launches


def predict(op, n, d, queue=0):
    """Modelled (fwd_ms, fwd_bwd_ms) of one op in bf16 at the bench's size conventions:
    nt_xent n = 2N rows; clip / siglip N x N; info_nce N queries against a queue of K rows (MoCo,
    no in-batch negatives, the fold on when a gradient is needed); supcon (Khosla) and
    supcon_pairwise N rows (labels cost O(N) bytes: not counted)."""
    elt = 2
    if op in ("nt_xent", "supcon", "supcon_pairwise"):  # upper triangle: half the tiles; one exp per score
        half = n * n / 2
        # Khosla's positive-score sums: a second set of parts, filled, written and summed.
        parts = 2 if op == "supcon" else 1
        fwd = [kernel_ms(2 * half * d, elt * n * d + parts * _shift_partials(n, n), half)]
        fwd += [kernel_ms(0, _shift_partials(n, n) / 3, 0) for _ in range(parts)]  # combine (+ sums)
        if op == "supcon_pairwise":  # positive pairs over full rows: exp + 2 reciprocals per score
            fwd.append(kernel_ms(2 * n * n * d, elt * n * d, 3 * n * n))
        # symmetric W: one fused side (2 exps per score: row and column lse; pairwise's positive
        # weights add 2 reciprocals, computed for every score of the tile)
        bwd = _gradient_launches(n, n, d, 4 if op == "supcon_pairwise" else 2, 1)
    elif op == "clip":
        fwd = [kernel_ms(2 * n * n * d, 2 * elt * n * d + _shift_partials(n, n), n * n),
               kernel_ms(0, _shift_partials(n, n) / 3, 0)]
        bwd = _gradient_launches(n, n, d, 2, 2)
    elif op == "siglip":  # exp + 2 reciprocals per loss score; exp + reciprocal per gradient score
        fwd = [kernel_ms(2 * n * n * d, 2 * elt * n * d, 3 * n * n)]
        bwd = _gradient_launches(n, n, d, 2, 2)
    elif op == "info_nce_queue":
        k = queue
        fwd = [kernel_ms(2 * n * k * d, elt * (n + k) * d, n * k)]
        if d <= FUSED_MAX_D:  # the fold: P @ queue in the same pass
            fwd_bwd = [kernel_ms(4 * n * k * d, elt * (n + k) * d + 4 * n * d, n * k)]
        else:
            fwd_bwd = fwd + [kernel_ms(2 * n * k * d, elt * n * k + elt * (n + k) * d, n * k),
                             kernel_ms(2 * n * k * d, elt * n * k + elt * k * d)]
        return sum(fwd), sum(fwd_bwd)
    else:
        raise ValueError(op)
    return sum(fwd), sum(fwd) + sum(bwd)


# The 2026-11-23 H100 measurements of the previous kernels (benchmarks/NOTES.md), bf16, ms:
# (op, n, d, queue) -> (sslfast fwd, eager fwd, compile fwd, sslfast fwd+bwd, eager, compile)
MEASURED_2026_11_23 = {
    ("nt_xent", 8192, 128, 0): (0.433, 1.77, 0.368, 1.22, 3.70, 0.994),
    ("nt_xent", 8192, 512, 0): (0.576, 1.80, 0.375, 2.60, 4.03, 1.57),
    ("info_nce_queue", 256, 128, 16384): (0.621, 0.661, 0.443, 1.98, 2.04, 1.27),
    ("clip", 8192, 512, 0): (0.875, 1.79, 0.550, 3.57, 4.27, 1.43),
    ("siglip", 8192, 512, 0): (0.692, 1.86, 0.378, 3.23, 3.22, 1.24),
}

BENCH_SHAPES = [(op, n, d, 0) for op in ("nt_xent", "clip", "siglip") for n in (8192, 32768) for d in (128, 512)] + [
    ("info_nce_queue", 256, 128, 16384), ("info_nce_queue", 256, 128, 65536)] + [
    (op, 8192, d, 0) for op in ("supcon", "supcon_pairwise") for d in (128, 512)]


def table():
    lines = ["| op | size | model fwd ms | model fwd+bwd ms | 2026-11-23 old kernels fwd / fwd+bwd "
             "| compile fwd / fwd+bwd |",
             "|---|---|---|---|---|---|"]
    for op, n, d, k in BENCH_SHAPES:
        fwd, both = predict(op, n, d, k)
        size = f"N={n} K={k} D={d}" if k else (f"2N={n} D={d}" if op == "nt_xent" else f"N={n} D={d}")
        old = MEASURED_2026_11_23.get((op, n, d, k))
        measured = f"{old[0]} / {old[3]}" if old else "-"
        compiled = f"{old[2]} / {old[5]}" if old else "-"
        lines.append(f"| {op} | {size} | {fwd:.3f} | {both:.3f} | {measured} | {compiled} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
