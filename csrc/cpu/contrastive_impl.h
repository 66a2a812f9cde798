// The contrastive CPU kernels and their op entry points, compiled once per instruction set by
// csrc/cpu/contrastive.cpp (see isa.h): no include guard; SSLFAST_AVX2 says which pass this is.
#include "tile_math.h"

namespace {

constexpr int64_t kColumnBlock = 256;

// Entries of the (r0.., c0..) tile whose global column is the row itself, or (exclude_positive)
// the row's positive partner (i + half) mod 2 * half, get `value`.
template <typename T>
void mask_self_and_positive(T* tile, int64_t r0, int64_t rows, int64_t c0, int64_t cols, int64_t half,
                            bool exclude_positive, T value) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t row = r0 + r;
    const int64_t self = row - c0;
    if (self >= 0 && self < cols) tile[r * cols + self] = value;
    if (exclude_positive) {
      const int64_t partner = (row + half) % (2 * half) - c0;
      if (partner >= 0 && partner < cols) tile[r * cols + partner] = value;
    }
  }
}

// ---------------------------------------------------------------- NT-Xent (SimCLR, DCL)

template <typename T>
double nt_xent_forward(const T* z, int64_t rows, int64_t dim, T inv_t, bool exclude_positive, T* lse) {
  const int64_t half = rows / 2;
  const Blocking blocks(rows);
  Buffer<T> run_max(rows, neg_inf<T>()), run_sum(rows, T(0));
  Scratch<T> scratch(blocks.size * blocks.size + 3 * blocks.size);
  // S is symmetric: tile (I, J), I < J, serves rows I (row direction) and rows J (its columns).
  run_rounds(symmetric_rounds(blocks.count), [&](int64_t bi, int64_t bj, int thread) {
    T* tile = scratch.get(thread);
    const int64_t r0 = blocks.begin(bi), nr = blocks.rows(bi), c0 = blocks.begin(bj), nc = blocks.rows(bj);
    scores_tile(z + r0 * dim, nr, z + c0 * dim, nc, dim, inv_t, tile);
    mask_self_and_positive(tile, r0, nr, c0, nc, half, exclude_positive, neg_inf<T>());
    // A diagonal tile is its own transpose: its columns are the same rows, folded once.
    fold_tile_lse(tile, nr, nc, run_max.data() + r0, run_sum.data() + r0, bi != bj ? run_max.data() + c0 : nullptr,
                  run_sum.data() + c0, tile + nr * nc);
  });
  finish_lse(run_max.data(), run_sum.data(), rows, lse);
  double total = 0;
  for (int64_t i = 0; i < rows; ++i)
    total += double(lse[i]) - double(inv_t) * dot(z + i * dim, z + ((i + half) % rows) * dim, dim);
  return total / double(rows);
}

// dz_k = g / (2N T) * [sum_j (exp(S_kj - lse_k) + exp(S_kj - lse_j)) z_j - 2 z_p(k)]: the
// symmetry of S turns the column softmax into a second exp of the same tile.
template <typename T>
void nt_xent_backward(const T* z, const T* lse, int64_t rows, int64_t dim, T inv_t, bool exclude_positive, double grad,
                      T* dz) {
  const int64_t half = rows / 2;
  const T coef = T(grad * double(inv_t) / double(rows));
  const Blocking blocks(rows);
  Scratch<T> scratch(blocks.size * blocks.size);
  std::fill(dz, dz + rows * dim, T(0));
  run_rounds(symmetric_rounds(blocks.count), [&](int64_t bi, int64_t bj, int thread) {
    T* w = scratch.get(thread);
    const int64_t r0 = blocks.begin(bi), nr = blocks.rows(bi), c0 = blocks.begin(bj), nc = blocks.rows(bj);
    scores_tile(z + r0 * dim, nr, z + c0 * dim, nc, dim, inv_t, w);
    for (int64_t r = 0; r < nr; ++r) softmax_weights(w + r * nc, lse[r0 + r], lse + c0, coef, w + r * nc, nc);
    mask_self_and_positive(w, r0, nr, c0, nc, half, exclude_positive, T(0));
    accumulate_w_b(w, nr, nc, z + c0 * dim, dim, T(1), dz + r0 * dim);
    if (bi != bj) accumulate_wt_a(w, nr, nc, z + r0 * dim, dim, T(1), dz + c0 * dim);
  });
  at::parallel_for(0, rows, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T* partner = z + ((i + half) % rows) * dim;
      for (int64_t d = 0; d < dim; ++d) dz[i * dim + d] -= 2 * coef * partner[d];
    }
  });
}

// ---------------------------------------------------------------- InfoNCE (MoCo, SimCSE)

// folded (MoCo only: a queue, no in-batch negatives; nullptr otherwise): also accumulate
// folded_i = sum_m P_im queue_m, P = exp(S - lse), flash-attention style against the same running
// maximum as the logsumexp. The backward's dq then needs no second pass over the queue: two score
// GEMM passes instead of three. lse comes out bitwise the same with or without it.
template <typename T>
double info_nce_forward(const T* q, const T* k, const T* queue, int64_t n, int64_t queue_rows, int64_t dim, T inv_t,
                        bool in_batch, T* lse, T* folded) {
  const Blocking blocks(n);
  Buffer<T> positive(n, T(0)), run_max(n, neg_inf<T>()), run_sum(n, T(0));
  for (int64_t i = 0; i < n; ++i) positive[i] = T(double(inv_t) * dot(q + i * dim, k + i * dim, dim));
  if (!in_batch) {  // the positive key is always in the denominator
    std::copy(positive.data(), positive.data() + n, run_max.data());
    std::fill(run_sum.data(), run_sum.data() + n, T(1));
  }
  TORCH_INTERNAL_ASSERT(!folded || (queue && !in_batch));
  if (folded) std::fill(folded, folded + n * dim, T(0));
  // tile, fold_tile_lse's scratch (2 * kColumnBlock + rows), then the rows' previous maxima
  Scratch<T> scratch(blocks.size * kColumnBlock + 2 * kColumnBlock + 2 * blocks.size);
  run_blocks(blocks.count, [&](int64_t bi, int thread) {
    T* tile = scratch.get(thread);
    T* previous_max = tile + blocks.size * kColumnBlock + 2 * kColumnBlock + blocks.size;
    const int64_t r0 = blocks.begin(bi), nr = blocks.rows(bi);
    auto fold_columns = [&](const T* columns, int64_t count, T* acc) {
      for (int64_t c0 = 0; c0 < count; c0 += kColumnBlock) {
        const int64_t nc = std::min(kColumnBlock, count - c0);
        scores_tile(q + r0 * dim, nr, columns + c0 * dim, nc, dim, inv_t, tile);
        if (acc) std::copy(run_max.data() + r0, run_max.data() + r0 + nr, previous_max);
        fold_tile_lse(tile, nr, nc, run_max.data() + r0, run_sum.data() + r0, (T*)nullptr, (T*)nullptr, tile + nr * nc);
        if (!acc) continue;
        // acc_r holds sum_m exp(S_rm - run_max_r) queue_m: rescale to the new maximum, add the tile.
        for (int64_t r = 0; r < nr; ++r) {
          const T now = run_max[r0 + r], before = previous_max[r];
          if (before != now) {
            const T scale = before == neg_inf<T>() ? T(0) : T(std::exp(before - now));
            for (int64_t d = 0; d < dim; ++d) acc[r * dim + d] *= scale;
          }
          softmax_weights(tile + r * nc, now, (const T*)nullptr, T(1), tile + r * nc, nc);
        }
        accumulate_w_b(tile, nr, nc, columns + c0 * dim, dim, T(1), acc);
      }
    };
    if (in_batch) fold_columns(k, n, nullptr);
    if (queue) fold_columns(queue, queue_rows, folded ? folded + r0 * dim : nullptr);
  });
  finish_lse(run_max.data(), run_sum.data(), n, lse);
  if (folded)  // exp(run_max - lse) = 1 / run_sum: the weights become P
    at::parallel_for(0, n, 64, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        for (int64_t d = 0; d < dim; ++d) folded[i * dim + d] /= run_sum[i];
    });
  double total = 0;
  for (int64_t i = 0; i < n; ++i) total += double(lse[i]) - double(positive[i]);
  return total / double(n);
}

// dq_i = c [sum_j P_ij k_j + sum_m P_im queue_m - k_i],  dk_j = c [sum_i P_ij q_i - q_j],
// c = g / (N T); without in-batch negatives only the positive column j = i has P.
// folded: the forward's sum_m P_im queue_m (MoCo), or nullptr to recompute the queue tiles.
template <typename T>
void info_nce_backward(const T* q, const T* k, const T* queue, const T* lse, const T* folded, int64_t n,
                       int64_t queue_rows, int64_t dim, T inv_t, bool in_batch, double grad, T* dq, T* dk) {
  const T coef = T(grad * double(inv_t) / double(n));
  const Blocking blocks(n);
  if (folded)
    for (int64_t i = 0; i < n * dim; ++i) dq[i] = coef * folded[i];
  else
    std::fill(dq, dq + n * dim, T(0));
  std::fill(dk, dk + n * dim, T(0));
  Scratch<T> scratch(blocks.size * std::max(blocks.size, kColumnBlock));
  if (in_batch) {
    run_rounds(latin_rounds(blocks.count), [&](int64_t bi, int64_t bj, int thread) {
      T* w = scratch.get(thread);
      const int64_t r0 = blocks.begin(bi), nr = blocks.rows(bi), c0 = blocks.begin(bj), nc = blocks.rows(bj);
      scores_tile(q + r0 * dim, nr, k + c0 * dim, nc, dim, inv_t, w);
      for (int64_t r = 0; r < nr; ++r)
        softmax_weights(w + r * nc, lse[r0 + r], (const T*)nullptr, coef, w + r * nc, nc);
      accumulate_w_b(w, nr, nc, k + c0 * dim, dim, T(1), dq + r0 * dim);
      accumulate_wt_a(w, nr, nc, q + r0 * dim, dim, T(1), dk + c0 * dim);
    });
  }
  if (queue && !folded) {
    run_blocks(blocks.count, [&](int64_t bi, int thread) {
      T* w = scratch.get(thread);
      const int64_t r0 = blocks.begin(bi), nr = blocks.rows(bi);
      for (int64_t c0 = 0; c0 < queue_rows; c0 += kColumnBlock) {
        const int64_t nc = std::min(kColumnBlock, queue_rows - c0);
        scores_tile(q + r0 * dim, nr, queue + c0 * dim, nc, dim, inv_t, w);
        for (int64_t r = 0; r < nr; ++r)
          softmax_weights(w + r * nc, lse[r0 + r], (const T*)nullptr, coef, w + r * nc, nc);
        accumulate_w_b(w, nr, nc, queue + c0 * dim, dim, T(1), dq + r0 * dim);
      }
    });
  }
  at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      T pos_weight = -coef;
      if (!in_batch)
        pos_weight += coef * T(std::exp(double(inv_t) * dot(q + i * dim, k + i * dim, dim) - double(lse[i])));
      for (int64_t d = 0; d < dim; ++d) {
        dq[i * dim + d] += pos_weight * k[i * dim + d];
        dk[i * dim + d] += pos_weight * q[i * dim + d];
      }
    }
  });
}

// ---------------------------------------------------------------- CLIP and SigLIP (paired N x N)

template <typename T>
double clip_forward(const T* image, const T* text, int64_t n, int64_t dim, T scale, T bias, T* row_lse, T* col_lse) {
  const Blocking blocks(n);
  Buffer<T> row_max(n, neg_inf<T>()), row_sum(n, T(0)), col_max(n, neg_inf<T>()), col_sum(n, T(0));
  Scratch<T> scratch(blocks.size * blocks.size + 3 * blocks.size);
  // Both directions from one pass: a round's tiles own disjoint image rows and text columns.
  run_rounds(latin_rounds(blocks.count), [&](int64_t bi, int64_t bj, int thread) {
    T* tile = scratch.get(thread);
    const int64_t r0 = blocks.begin(bi), nr = blocks.rows(bi), c0 = blocks.begin(bj), nc = blocks.rows(bj);
    // S = scale * dots + bias rounded exactly as paired_backward recomputes it, so that
    // exp(S - lse) there is the forward's softmax to the last bit.
    scores_tile(image + r0 * dim, nr, text + c0 * dim, nc, dim, T(1), tile);
    affine(tile, scale, bias, tile, nr * nc);
    fold_tile_lse(tile, nr, nc, row_max.data() + r0, row_sum.data() + r0, col_max.data() + c0, col_sum.data() + c0,
                  tile + nr * nc);
  });
  finish_lse(row_max.data(), row_sum.data(), n, row_lse);
  finish_lse(col_max.data(), col_sum.data(), n, col_lse);
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double diagonal = double(scale) * dot(image + i * dim, text + i * dim, dim) + double(bias);
    total += double(row_lse[i]) + double(col_lse[i]) - 2 * diagonal;
  }
  return total / double(2 * n);
}

template <typename T>
double siglip_forward(const T* image, const T* text, int64_t n, int64_t dim, T scale, T bias) {
  const Blocking blocks(n);
  Buffer<double> block_loss(blocks.count, 0.0);
  Scratch<T> scratch(blocks.size * kColumnBlock);
  run_blocks(blocks.count, [&](int64_t bi, int thread) {
    T* tile = scratch.get(thread);
    const int64_t r0 = blocks.begin(bi), nr = blocks.rows(bi);
    for (int64_t c0 = 0; c0 < n; c0 += kColumnBlock) {
      const int64_t nc = std::min(kColumnBlock, n - c0);
      scores_tile(image + r0 * dim, nr, text + c0 * dim, nc, dim, T(1), tile);
      affine(tile, scale, bias, tile, nr * nc);
      // -logsigmoid(z S) = softplus(-z S): softplus(S) off the diagonal, softplus(-S) on it.
      for (int64_t r = 0; r < nr; ++r) {
        const int64_t self = r0 + r - c0;
        if (self >= 0 && self < nc) tile[r * nc + self] = -tile[r * nc + self];
        block_loss[bi] += double(sum_softplus(tile + r * nc, T(1), nc));
      }
    }
  });
  double total = 0;
  for (int64_t b = 0; b < blocks.count; ++b) total += block_loss[b];
  return total / double(n);
}

// Shared backward of the paired losses: G = weights(S) per tile (S = scale * image_I text_J^T
// + bias); grad_image += scale G text, grad_text += scale G^T image, grad_scale = sum G * dots,
// grad_bias = sum G. `weights(dots, w, r0, nr, c0, nc)` writes G into w.
template <typename T, typename Weights>
std::pair<double, double> paired_backward(const T* image, const T* text, int64_t n, int64_t dim, T scale,
                                          const Weights& weights, T* d_image, T* d_text) {
  const Blocking blocks(n);
  std::fill(d_image, d_image + n * dim, T(0));
  std::fill(d_text, d_text + n * dim, T(0));
  const int64_t tiles = blocks.count * blocks.count;
  Buffer<double> scale_part(tiles, 0.0), bias_part(tiles, 0.0);
  Scratch<T> scratch(2 * blocks.size * blocks.size);
  run_rounds(latin_rounds(blocks.count), [&](int64_t bi, int64_t bj, int thread) {
    T* dots = scratch.get(thread);
    T* w = dots + blocks.size * blocks.size;
    const int64_t r0 = blocks.begin(bi), nr = blocks.rows(bi), c0 = blocks.begin(bj), nc = blocks.rows(bj);
    scores_tile(image + r0 * dim, nr, text + c0 * dim, nc, dim, T(1), dots);
    weights(dots, w, r0, nr, c0, nc);
    const int64_t slot = bi * blocks.count + bj;
    for (int64_t r = 0; r < nr; ++r)
      sum_product_and_sum(w + r * nc, dots + r * nc, nc, scale_part[slot], bias_part[slot]);
    accumulate_w_b(w, nr, nc, text + c0 * dim, dim, scale, d_image + r0 * dim);
    accumulate_wt_a(w, nr, nc, image + r0 * dim, dim, scale, d_text + c0 * dim);
  });
  double grad_scale = 0, grad_bias = 0;
  for (int64_t s = 0; s < tiles; ++s) {
    grad_scale += scale_part[s];
    grad_bias += bias_part[s];
  }
  return {grad_scale, grad_bias};
}

// ---------------------------------------------------------------- SupCon (supervised contrastive)
//
// Anchor i's positives are the other rows with its label. Two reductions (sslfast/reference):
//   supcon (Khosla et al.): L_i = lse_i - mean over positives p of s_ip, lse over all j != i;
//     the loss is the mean over all N anchors (anchors without a positive contribute 0).
//   pairwise (pytorch-metric-learning NTXentLoss): one term per positive pair,
//     softplus(nlse_i - s_ip), nlse_i = logsumexp over the anchor's negatives (other labels);
//     the loss is the mean over positive pairs.
// Labels are compared inside the symmetric score tiles: no N x N mask or matrix exists.

// Entry (r, c) of a tile: -1 on the diagonal (self), 1 when labels match, 0 otherwise.
inline int pair_kind(const int64_t* labels, int64_t row, int64_t col) {
  return row == col ? -1 : (labels[row] == labels[col] ? 1 : 0);
}

// supcon: row state = (lse over j != i, sum of positive scores, positive count);
// pairwise pass 1: lse over negatives only (self and positives masked).
template <typename T>
void supcon_fold(const T* z, const int64_t* labels, int64_t rows, int64_t dim, T inv_t, bool negatives_only, T* lse,
                 double* pos_sum, double* pos_count) {
  const Blocking blocks(rows);
  Buffer<T> run_max(rows, neg_inf<T>()), run_sum(rows, T(0));
  Buffer<double> part_sum(rows * blocks.count, 0.0), part_count(rows * blocks.count, 0.0);
  Scratch<T> scratch(blocks.size * blocks.size + 3 * blocks.size);
  run_rounds(symmetric_rounds(blocks.count), [&](int64_t bi, int64_t bj, int thread) {
    T* tile = scratch.get(thread);
    const int64_t r0 = blocks.begin(bi), nr = blocks.rows(bi), c0 = blocks.begin(bj), nc = blocks.rows(bj);
    scores_tile(z + r0 * dim, nr, z + c0 * dim, nc, dim, inv_t, tile);
    // Positive sums per (row, column block) slot: each slot has one writer, summed in a fixed order.
    for (int64_t r = 0; r < nr; ++r)
      for (int64_t c = 0; c < nc; ++c) {
        const int kind = pair_kind(labels, r0 + r, c0 + c);
        T& v = tile[r * nc + c];
        if (kind == 1 && !negatives_only) {
          part_sum[(r0 + r) * blocks.count + bj] += double(v);
          part_count[(r0 + r) * blocks.count + bj] += 1.0;
          if (bi != bj) {
            part_sum[(c0 + c) * blocks.count + bi] += double(v);
            part_count[(c0 + c) * blocks.count + bi] += 1.0;
          }
        }
        if (kind == -1 || (kind == 1 && negatives_only)) v = neg_inf<T>();
      }
    fold_tile_lse(tile, nr, nc, run_max.data() + r0, run_sum.data() + r0, bi != bj ? run_max.data() + c0 : nullptr,
                  run_sum.data() + c0, tile + nr * nc);
  });
  for (int64_t i = 0; i < rows; ++i) {
    lse[i] = run_sum[i] == T(0) ? neg_inf<T>() : T(run_max[i] + std::log(run_sum[i]));
    if (pos_sum) {
      double sum = 0, count = 0;
      for (int64_t b = 0; b < blocks.count; ++b) {
        sum += part_sum[i * blocks.count + b];
        count += part_count[i * blocks.count + b];
      }
      pos_sum[i] = sum;
      pos_count[i] = count;
    }
  }
}

// pairwise pass 2: per row, the sums over its positive pairs of softplus(nlse_i - s_ip) (loss)
// and sigmoid(nlse_i - s_ip) (the backward's negative-weight factor), and the pair count.
template <typename T>
void supcon_pairs(const T* z, const int64_t* labels, const T* nlse, int64_t rows, int64_t dim, T inv_t,
                  double* loss_rows, double* sigmoid_rows, double* pair_count) {
  const Blocking blocks(rows);
  const int64_t slots = rows * blocks.count;
  Buffer<double> part_loss(slots, 0.0), part_sigmoid(slots, 0.0), part_count(slots, 0.0);
  Scratch<T> scratch(blocks.size * blocks.size);
  run_rounds(symmetric_rounds(blocks.count), [&](int64_t bi, int64_t bj, int thread) {
    T* tile = scratch.get(thread);
    const int64_t r0 = blocks.begin(bi), nr = blocks.rows(bi), c0 = blocks.begin(bj), nc = blocks.rows(bj);
    scores_tile(z + r0 * dim, nr, z + c0 * dim, nc, dim, inv_t, tile);
    auto add = [&](int64_t anchor, int64_t block, double s) {
      const double x = double(nlse[anchor]) - s;  // -inf without negatives: softplus = sigmoid = 0
      const int64_t slot = anchor * blocks.count + block;
      part_loss[slot] += scalar_softplus(x);
      part_sigmoid[slot] += x == -std::numeric_limits<double>::infinity() ? 0.0 : 1.0 / (1.0 + std::exp(-x));
      part_count[slot] += 1.0;
    };
    for (int64_t r = 0; r < nr; ++r)
      for (int64_t c = 0; c < nc; ++c) {
        if (pair_kind(labels, r0 + r, c0 + c) != 1) continue;
        add(r0 + r, bj, double(tile[r * nc + c]));
        if (bi != bj) add(c0 + c, bi, double(tile[r * nc + c]));
      }
  });
  for (int64_t i = 0; i < rows; ++i) {
    double l = 0, g = 0, n = 0;
    for (int64_t b = 0; b < blocks.count; ++b) {
      l += part_loss[i * blocks.count + b];
      g += part_sigmoid[i * blocks.count + b];
      n += part_count[i * blocks.count + b];
    }
    loss_rows[i] = l;
    sigmoid_rows[i] = g;
    pair_count[i] = n;
  }
}

// Backward: dz_k = inv_t * sum_j (G_kj + G_jk) z_j over symmetric tiles, with
//   supcon:   G_ij = c_i (exp(s_ij - lse_i) - [pos] / P_i),  c_i = g / N if P_i > 0 else 0;
//   pairwise: G_ij = c sig_i exp(s_ij - nlse_i) for negatives, -c sigmoid(nlse_i - s_ij) for
//             positives, c = g / (number of positive pairs), sig_i = sum_p sigmoid(nlse_i - s_ip).
// The exp terms come from softmax_weights with the coefficients folded into the shifts
// (c exp(s - l) = exp(s - (l - log c)); c = 0 shifts by +inf); label-matching entries are then
// rewritten.
template <typename T>
void supcon_backward(const T* z, const int64_t* labels, const T* lse, const T* stats, int64_t rows, int64_t dim,
                     T inv_t, bool pairwise, double grad, T* dz) {
  const T* positives = stats;
  const T* sigmoids = stats + rows;
  double pairs = 0;
  for (int64_t i = 0; i < rows; ++i) pairs += double(positives[i]);
  // Coefficients from |grad| (their logs are the shifts); its sign goes into the accumulation.
  const double magnitude = std::abs(grad);
  const T sign = grad < 0 ? T(-1) : T(1);
  const double inf = std::numeric_limits<double>::infinity();
  Buffer<T> shift(rows, T(0)), pos_weight(rows, T(0));
  for (int64_t i = 0; i < rows; ++i) {
    double coef;
    if (pairwise) {
      coef = pairs > 0 ? magnitude / pairs * double(sigmoids[i]) : 0.0;
    } else {
      coef = positives[i] > 0 ? magnitude / double(rows) : 0.0;
      pos_weight[i] = positives[i] > 0 ? T(coef / double(positives[i])) : T(0);
    }
    // coef = 0 (no positives / no pairs): exp(s - inf) = 0; NaN stays NaN.
    shift[i] = coef == 0.0 || std::isinf(double(lse[i])) ? T(inf) : T(double(lse[i]) - std::log(coef));
  }
  const double pair_coef = pairs > 0 ? magnitude / pairs : 0.0;
  const Blocking blocks(rows);
  Scratch<T> scratch(blocks.size * blocks.size + blocks.size);
  std::fill(dz, dz + rows * dim, T(0));
  run_rounds(symmetric_rounds(blocks.count), [&](int64_t bi, int64_t bj, int thread) {
    T* w = scratch.get(thread);
    T* raw = w + blocks.size * blocks.size;
    const int64_t r0 = blocks.begin(bi), nr = blocks.rows(bi), c0 = blocks.begin(bj), nc = blocks.rows(bj);
    scores_tile(z + r0 * dim, nr, z + c0 * dim, nc, dim, inv_t, w);
    for (int64_t r = 0; r < nr; ++r) {
      T* row = w + r * nc;
      std::copy(row, row + nc, raw);
      // Both anchors' exp terms for every entry (vectorized), then the label-matching entries.
      softmax_weights(row, shift[r0 + r], shift.data() + c0, T(1), row, nc);
      for (int64_t c = 0; c < nc; ++c) {
        const int kind = pair_kind(labels, r0 + r, c0 + c);
        if (kind == -1) {
          row[c] = T(0);
        } else if (kind == 1 && pairwise) {
          auto sig = [&](int64_t anchor) {
            const double x = double(lse[anchor]) - double(raw[c]);
            return x == -inf ? 0.0 : 1.0 / (1.0 + std::exp(-x));
          };
          row[c] = T(-pair_coef * (sig(r0 + r) + sig(c0 + c)));
        } else if (kind == 1) {
          row[c] -= pos_weight[r0 + r] + pos_weight[c0 + c];
        }
      }
    }
    accumulate_w_b(w, nr, nc, z + c0 * dim, dim, sign * inv_t, dz + r0 * dim);
    if (bi != bj) accumulate_wt_a(w, nr, nc, z + r0 * dim, dim, sign * inv_t, dz + c0 * dim);
  });
}

// ---------------------------------------------------------------- prepare_rows
//
// The rows a loss kernel reads: cat(x, y), each row L2-normalized when asked (F.normalize: divided
// by max(norm, 1e-12)), in float32 / float64 (half inputs widened). Norms are summed in double.

constexpr double kNormEps = 1e-12;

template <typename in_t, typename out_t>
void copy_rows(const at::Tensor& src, int64_t row0, int64_t dim, bool normalize, out_t* rows, out_t* norms) {
  const in_t* p = src.const_data_ptr<in_t>();
  const int64_t n = src.size(0), s0 = src.stride(0), s1 = src.stride(1);
  at::parallel_for(0, n, std::max<int64_t>(1, 16384 / std::max<int64_t>(dim, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      out_t* dst = rows + (row0 + i) * dim;
      const in_t* from = p + i * s0;
      double sq = 0;
      for (int64_t d = 0; d < dim; ++d) {
        const out_t v = out_t(from[d * s1]);
        dst[d] = v;
        sq += double(v) * double(v);
      }
      if (!normalize) continue;
      const double norm = std::sqrt(sq);
      norms[row0 + i] = out_t(norm);
      const out_t scale = out_t(1.0 / std::max(norm, kNormEps));
      for (int64_t d = 0; d < dim; ++d) dst[d] *= scale;
    }
  });
}

void check_rows_input(const at::Tensor& x, const char* name) {
  CHECK_CPU(x);
  TORCH_CHECK(x.dim() == 2, name, " must be 2-D, got shape ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), name, " must be floating point, got ", x.scalar_type());
}

// float32 / float64 stay, half types compute in float32 (the CPU kernels' dtypes)
at::ScalarType compute_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

std::tuple<at::Tensor, at::Tensor> prepare_rows(const at::Tensor& x, const std::optional<at::Tensor>& y,
                                                bool normalize) {
  check_rows_input(x, "x");
  if (y) {
    check_rows_input(*y, "y");
    CHECK_SAME_DTYPE(x, (*y));
    TORCH_CHECK(y->size(1) == x.size(1), "y must have ", x.size(1), " columns, got ", y->size(1));
  }
  const int64_t n = x.size(0) + (y ? y->size(0) : 0), dim = x.size(1);
  const auto options = x.options().dtype(compute_dtype(x.scalar_type()));
  at::Tensor rows = empty_output({n, dim}, options);
  at::Tensor norms = at::empty({normalize ? n : 0}, options);
  AT_DISPATCH_FLOATING_TYPES(rows.scalar_type(), "prepare_rows", [&] {
    using out_t = scalar_t;
    out_t* r = rows.data_ptr<out_t>();
    out_t* nr = normalize ? norms.data_ptr<out_t>() : nullptr;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "prepare_rows_in", [&] {
      copy_rows<scalar_t, out_t>(x, 0, dim, normalize, r, nr);
      if (y) copy_rows<scalar_t, out_t>(*y, x.size(0), dim, normalize, r, nr);
    });
  });
  return {rows, norms};
}

// d/dx of x / max(|x|, eps): (g - y (y . g)) / |x| where |x| > eps, g / eps where it was clamped.
std::tuple<at::Tensor, at::Tensor> prepare_rows_bwd(const at::Tensor& grad_, const at::Tensor& rows,
                                                    const at::Tensor& norms, int64_t split, at::ScalarType dtype) {
  CHECK_CPU(grad_);
  TORCH_CHECK(grad_.sizes() == rows.sizes(), "grad must have the shape of rows ", rows.sizes(), ", got ",
              grad_.sizes());
  const int64_t n = rows.size(0), dim = rows.size(1);
  TORCH_CHECK(split >= 0 && split <= n, "split must be in [0, ", n, "], got ", split);
  const bool normalized = norms.numel() > 0;
  TORCH_CHECK(!normalized || norms.numel() == n, "norms must have ", n, " entries, got ", norms.numel());
  const at::Tensor grad = grad_.to(rows.scalar_type()).contiguous();
  at::Tensor out = empty_output({n, dim}, rows.options());
  AT_DISPATCH_FLOATING_TYPES(rows.scalar_type(), "prepare_rows_bwd", [&] {
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const scalar_t* y = rows.const_data_ptr<scalar_t>();
    const scalar_t* nm = normalized ? norms.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, n, std::max<int64_t>(1, 16384 / std::max<int64_t>(dim, 1)), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const scalar_t* gi = g + i * dim;
        const scalar_t* yi = y + i * dim;
        scalar_t* oi = o + i * dim;
        if (!nm) {
          std::copy(gi, gi + dim, oi);
          continue;
        }
        const double norm = double(nm[i]);
        if (norm <= kNormEps) {  // clamped: the divisor was eps, a constant (NaN takes the other path)
          for (int64_t d = 0; d < dim; ++d) oi[d] = scalar_t(double(gi[d]) / kNormEps);
          continue;
        }
        const double proj = dot(yi, gi, dim);
        for (int64_t d = 0; d < dim; ++d) oi[d] = scalar_t((double(gi[d]) - double(yi[d]) * proj) / norm);
      }
    });
  });
  if (dtype != out.scalar_type()) out = out.to(dtype);
  return {out.narrow(0, 0, split).contiguous(), out.narrow(0, split, n - split).contiguous()};
}

// ---------------------------------------------------------------- op entry points

double scalar_of(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.numel() == 1, name, " must have one element, got shape ", t.sizes());
  return t.item<double>();
}

void check_lse(const at::Tensor& lse, const at::Tensor& like, const char* name) {
  TORCH_CHECK(lse.dim() == 1 && lse.size(0) == like.size(0), name, " must have shape (", like.size(0), "), got ",
              lse.sizes());
  TORCH_CHECK(lse.scalar_type() == like.scalar_type(), name, " must have dtype ", like.scalar_type());
  CHECK_CONTIGUOUS(lse);
}

void check_pair(const at::Tensor& image, const at::Tensor& text) {
  CHECK_EMBEDDINGS(image);
  CHECK_EMBEDDINGS(text);
  CHECK_SAME_DTYPE(image, text);
  TORCH_CHECK(image.sizes() == text.sizes(), "image and text must have the same shape, got ", image.sizes(), " and ",
              text.sizes());
}

// CLIP / SigLIP take the user's tensors directly (no prepare_rows): half inputs are widened to
// float32 and other strides made contiguous here; gradients go back in the input dtype.
std::pair<at::Tensor, at::Tensor> paired_rows(const at::Tensor& image, const at::Tensor& text) {
  check_rows_input(image, "image");
  check_rows_input(text, "text");
  const auto dtype = compute_dtype(image.scalar_type());
  auto rows = std::make_pair(image.to(dtype).contiguous(), text.to(dtype).contiguous());
  check_pair(rows.first, rows.second);
  TORCH_CHECK(image.scalar_type() == text.scalar_type(), "image and text must have the same dtype");
  return rows;
}

std::tuple<at::Tensor, at::Tensor> nt_xent_fwd(const at::Tensor& z, double temperature, bool exclude_positive) {
  CHECK_EMBEDDINGS(z);
  TORCH_CHECK(z.size(0) % 2 == 0, "z must hold 2N rows (both views), got ", z.size(0));
  TORCH_CHECK(temperature > 0, "temperature must be > 0, got ", temperature);
  auto lse = at::empty({z.size(0)}, z.options());
  double loss = 0;
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "nt_xent_fwd", [&] {
    loss = nt_xent_forward<scalar_t>(z.data_ptr<scalar_t>(), z.size(0), z.size(1), scalar_t(1.0 / temperature),
                                     exclude_positive, lse.data_ptr<scalar_t>());
  });
  return {at::scalar_tensor(loss, z.options()), lse};
}

at::Tensor nt_xent_bwd(const at::Tensor& grad_loss, const at::Tensor& z, const at::Tensor& lse, double temperature,
                       bool exclude_positive) {
  CHECK_EMBEDDINGS(z);
  TORCH_CHECK(z.size(0) % 2 == 0, "z must hold 2N rows (both views), got ", z.size(0));
  check_lse(lse, z, "lse");
  auto dz = empty_output_like(z);
  const double grad = scalar_of(grad_loss, "grad_loss");
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "nt_xent_bwd", [&] {
    nt_xent_backward<scalar_t>(z.data_ptr<scalar_t>(), lse.data_ptr<scalar_t>(), z.size(0), z.size(1),
                               scalar_t(1.0 / temperature), exclude_positive, grad, dz.data_ptr<scalar_t>());
  });
  return dz;
}

void check_info_nce(const at::Tensor& query, const at::Tensor& key, const std::optional<at::Tensor>& queue) {
  check_pair(query, key);
  if (queue) {
    CHECK_EMBEDDINGS((*queue));
    CHECK_SAME_DTYPE(query, (*queue));
    TORCH_CHECK(queue->size(1) == query.size(1), "queue must have D = ", query.size(1), " columns, got ",
                queue->size(1));
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> info_nce_fwd(const at::Tensor& query, const at::Tensor& key,
                                                            const std::optional<at::Tensor>& queue, double temperature,
                                                            bool in_batch_negatives, bool fold_queue_grad) {
  check_info_nce(query, key, queue);
  TORCH_CHECK(temperature > 0, "temperature must be > 0, got ", temperature);
  TORCH_CHECK(!fold_queue_grad || (queue && !in_batch_negatives),
              "fold_queue_grad needs a queue and in_batch_negatives=False");
  auto lse = at::empty({query.size(0)}, query.options());
  auto folded = fold_queue_grad ? empty_output_like(query) : at::empty({0}, query.options());
  double loss = 0;
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "info_nce_fwd", [&] {
    loss = info_nce_forward<scalar_t>(
        query.data_ptr<scalar_t>(), key.data_ptr<scalar_t>(), queue ? queue->data_ptr<scalar_t>() : nullptr,
        query.size(0), queue ? queue->size(0) : 0, query.size(1), scalar_t(1.0 / temperature), in_batch_negatives,
        lse.data_ptr<scalar_t>(), fold_queue_grad ? folded.data_ptr<scalar_t>() : nullptr);
  });
  return {at::scalar_tensor(loss, query.options()), lse, folded};
}

std::tuple<at::Tensor, at::Tensor> info_nce_bwd(const at::Tensor& grad_loss, const at::Tensor& query,
                                                const at::Tensor& key, const std::optional<at::Tensor>& queue,
                                                const at::Tensor& lse, const at::Tensor& folded, double temperature,
                                                bool in_batch_negatives) {
  check_info_nce(query, key, queue);
  check_lse(lse, query, "lse");
  const bool use_folded = folded.numel() > 0;
  if (use_folded) {
    TORCH_CHECK(queue && !in_batch_negatives, "folded needs a queue and in_batch_negatives=False");
    CHECK_CPU(folded);
    CHECK_CONTIGUOUS(folded);
    CHECK_SAME_DTYPE(folded, query);
    TORCH_CHECK(folded.sizes() == query.sizes(), "folded must have the shape of query, got ", folded.sizes());
  }
  auto d_query = empty_output_like(query);
  auto d_key = empty_output_like(key);
  const double grad = scalar_of(grad_loss, "grad_loss");
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "info_nce_bwd", [&] {
    info_nce_backward<scalar_t>(query.data_ptr<scalar_t>(), key.data_ptr<scalar_t>(),
                                queue ? queue->data_ptr<scalar_t>() : nullptr, lse.data_ptr<scalar_t>(),
                                use_folded ? folded.data_ptr<scalar_t>() : nullptr, query.size(0),
                                queue ? queue->size(0) : 0, query.size(1), scalar_t(1.0 / temperature),
                                in_batch_negatives, grad, d_query.data_ptr<scalar_t>(), d_key.data_ptr<scalar_t>());
  });
  return {d_query, d_key};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> clip_loss_fwd(const at::Tensor& image_, const at::Tensor& text_,
                                                             const at::Tensor& logit_scale,
                                                             const std::optional<at::Tensor>& logit_bias) {
  const auto [image, text] = paired_rows(image_, text_);
  const double scale = scalar_of(logit_scale, "logit_scale");
  const double bias = logit_bias ? scalar_of(*logit_bias, "logit_bias") : 0.0;
  auto row_lse = at::empty({image.size(0)}, image.options());
  auto col_lse = at::empty({image.size(0)}, image.options());
  double loss = 0;
  AT_DISPATCH_FLOATING_TYPES(image.scalar_type(), "clip_loss_fwd", [&] {
    loss = clip_forward<scalar_t>(image.data_ptr<scalar_t>(), text.data_ptr<scalar_t>(), image.size(0), image.size(1),
                                  scalar_t(scale), scalar_t(bias), row_lse.data_ptr<scalar_t>(),
                                  col_lse.data_ptr<scalar_t>());
  });
  return {at::scalar_tensor(loss, image.options()), row_lse, col_lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> clip_loss_bwd(
    const at::Tensor& grad_loss, const at::Tensor& image_, const at::Tensor& text_, const at::Tensor& logit_scale,
    const std::optional<at::Tensor>& logit_bias, const at::Tensor& row_lse, const at::Tensor& col_lse) {
  const auto [image, text] = paired_rows(image_, text_);
  check_lse(row_lse, image, "row_lse");
  check_lse(col_lse, text, "col_lse");
  const double scale = scalar_of(logit_scale, "logit_scale");
  const double bias = logit_bias ? scalar_of(*logit_bias, "logit_bias") : 0.0;
  const double grad = scalar_of(grad_loss, "grad_loss");
  const int64_t n = image.size(0);
  auto d_image = empty_output_like(image);
  auto d_text = empty_output_like(text);
  std::pair<double, double> scale_bias_grads;
  AT_DISPATCH_FLOATING_TYPES(image.scalar_type(), "clip_loss_bwd", [&] {
    using T = scalar_t;
    const T coef = T(grad / double(2 * n)), s = T(scale), b = T(bias);
    const T* rl = row_lse.data_ptr<T>();
    const T* cl = col_lse.data_ptr<T>();
    // G_ij = g / 2N * (exp(S_ij - row_lse_i) + exp(S_ij - col_lse_j) - 2 [i == j])
    auto weights = [&](const T* dots, T* w, int64_t r0, int64_t nr, int64_t c0, int64_t nc) {
      for (int64_t r = 0; r < nr; ++r) {
        affine(dots + r * nc, s, b, w + r * nc, nc);
        softmax_weights(w + r * nc, rl[r0 + r], cl + c0, coef, w + r * nc, nc);
        const int64_t self = r0 + r - c0;
        if (self >= 0 && self < nc) w[r * nc + self] -= 2 * coef;
      }
    };
    scale_bias_grads = paired_backward<T>(image.data_ptr<T>(), text.data_ptr<T>(), n, image.size(1), s, weights,
                                          d_image.data_ptr<T>(), d_text.data_ptr<T>());
  });
  auto grad_scale = at::full_like(logit_scale, scale_bias_grads.first);
  auto grad_bias = logit_bias ? at::full_like(*logit_bias, scale_bias_grads.second) : at::zeros_like(logit_scale);
  return {d_image.to(image_.scalar_type()), d_text.to(text_.scalar_type()), grad_scale, grad_bias};
}

// One row of SigLIP's gradient weights from raw dots: G_ij = -(coef) z_ij sigmoid(-z_ij S_ij),
// S = scale * dots + bias, z = +1 on the diagonal (column `self` of this row, if in the tile) and
// -1 elsewhere. With `loss`, also adds the row's sum of -logsigmoid(z S) = softplus(-z S) to it.
template <typename T>
void siglip_weight_row(const T* dots, T* w, int64_t self, int64_t nc, T s, T b, T coef, double* loss) {
  const bool has_self = self >= 0 && self < nc;
  affine(dots, s, b, w, nc);
  if (loss) {
    if (has_self) w[self] = -w[self];
    *loss += double(sum_softplus(w, T(1), nc));
    if (has_self) w[self] = -w[self];
  }
  scaled_sigmoid(w, coef, w, nc);
  if (has_self) w[self] = -coef * scalar_sigmoid(-(s * dots[self] + b));
}

// with_grads (the public function asks when anything needs a gradient): the loss and its
// gradients for an upstream gradient of 1 from one pass over the score tiles, since SigLIP has no
// normalizer that must be known first. The backward then only scales them: three score-GEMM
// passes instead of four. The loss is summed tile by tile there, so it can differ from the
// no-gradient value in the last bits.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> siglip_loss_fwd(const at::Tensor& image_,
                                                                                       const at::Tensor& text_,
                                                                                       const at::Tensor& logit_scale,
                                                                                       const at::Tensor& logit_bias,
                                                                                       bool with_grads) {
  const auto [image, text] = paired_rows(image_, text_);
  const double scale = scalar_of(logit_scale, "logit_scale");
  const double bias = scalar_of(logit_bias, "logit_bias");
  const int64_t n = image.size(0);
  double loss = 0;
  if (!with_grads) {
    AT_DISPATCH_FLOATING_TYPES(image.scalar_type(), "siglip_loss_fwd", [&] {
      loss = siglip_forward<scalar_t>(image.data_ptr<scalar_t>(), text.data_ptr<scalar_t>(), n, image.size(1),
                                      scalar_t(scale), scalar_t(bias));
    });
    auto none = [&] { return at::empty({0}, image.options()); };  // four distinct (non-aliasing) outputs
    return {at::scalar_tensor(loss, image.options()), none(), none(), none(), none()};
  }
  auto d_image = empty_output_like(image);
  auto d_text = empty_output_like(text);
  std::pair<double, double> scale_bias_grads;
  AT_DISPATCH_FLOATING_TYPES(image.scalar_type(), "siglip_loss_fwd", [&] {
    using T = scalar_t;
    const T coef = T(1.0 / double(n)), s = T(scale), b = T(bias);
    const Blocking blocks(n);  // paired_backward's tiling: one loss slot per (row block, column block)
    Buffer<double> loss_part(blocks.count * blocks.count, 0.0);
    auto weights = [&](const T* dots, T* w, int64_t r0, int64_t nr, int64_t c0, int64_t nc) {
      double part = 0;
      for (int64_t r = 0; r < nr; ++r) siglip_weight_row(dots + r * nc, w + r * nc, r0 + r - c0, nc, s, b, coef, &part);
      loss_part[(r0 / blocks.size) * blocks.count + c0 / blocks.size] = part;
    };
    scale_bias_grads = paired_backward<T>(image.data_ptr<T>(), text.data_ptr<T>(), n, image.size(1), s, weights,
                                          d_image.data_ptr<T>(), d_text.data_ptr<T>());
    for (int64_t t = 0; t < blocks.count * blocks.count; ++t) loss += loss_part[t];  // fixed order
    loss /= double(n);
  });
  return {at::scalar_tensor(loss, image.options()), d_image.to(image_.scalar_type()), d_text.to(text_.scalar_type()),
          at::full_like(logit_scale, scale_bias_grads.first), at::full_like(logit_bias, scale_bias_grads.second)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> siglip_loss_bwd(const at::Tensor& grad_loss,
                                                                           const at::Tensor& image_,
                                                                           const at::Tensor& text_,
                                                                           const at::Tensor& logit_scale,
                                                                           const at::Tensor& logit_bias) {
  const auto [image, text] = paired_rows(image_, text_);
  const double scale = scalar_of(logit_scale, "logit_scale");
  const double bias = scalar_of(logit_bias, "logit_bias");
  const double grad = scalar_of(grad_loss, "grad_loss");
  const int64_t n = image.size(0);
  auto d_image = empty_output_like(image);
  auto d_text = empty_output_like(text);
  std::pair<double, double> scale_bias_grads;
  AT_DISPATCH_FLOATING_TYPES(image.scalar_type(), "siglip_loss_bwd", [&] {
    using T = scalar_t;
    const T coef = T(grad / double(n)), s = T(scale), b = T(bias);
    // G_ij = -(g / N) z_ij sigmoid(-z_ij S_ij): (g / N) sigmoid(S) off the diagonal,
    // -(g / N) sigmoid(-S) on it.
    auto weights = [&](const T* dots, T* w, int64_t r0, int64_t nr, int64_t c0, int64_t nc) {
      for (int64_t r = 0; r < nr; ++r)
        siglip_weight_row(dots + r * nc, w + r * nc, r0 + r - c0, nc, s, b, coef, (double*)nullptr);
    };
    scale_bias_grads = paired_backward<T>(image.data_ptr<T>(), text.data_ptr<T>(), n, image.size(1), s, weights,
                                          d_image.data_ptr<T>(), d_text.data_ptr<T>());
  });
  return {d_image.to(image_.scalar_type()), d_text.to(text_.scalar_type()),
          at::full_like(logit_scale, scale_bias_grads.first), at::full_like(logit_bias, scale_bias_grads.second)};
}

// ---------------------------------------------------------------- supcon entry points

at::Tensor checked_labels(const at::Tensor& labels, int64_t rows) {
  CHECK_CPU(labels);
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == rows, "labels must have shape (", rows, "), got ", labels.sizes());
  TORCH_CHECK(labels.scalar_type() == at::kLong || labels.scalar_type() == at::kInt,
              "labels must be int64 or int32, got ", labels.scalar_type());
  return labels.to(at::kLong).contiguous();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> supcon_fwd(const at::Tensor& z, const at::Tensor& labels_,
                                                          double temperature, bool pairwise) {
  CHECK_EMBEDDINGS(z);
  TORCH_CHECK(temperature > 0, "temperature must be > 0, got ", temperature);
  const at::Tensor labels = checked_labels(labels_, z.size(0));
  const int64_t n = z.size(0), dim = z.size(1);
  auto lse = at::empty({n}, z.options());
  auto stats = at::zeros({2, n}, z.options());
  double loss = 0;
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "supcon_fwd", [&] {
    using T = scalar_t;
    const T* zp = z.data_ptr<T>();
    const int64_t* y = labels.const_data_ptr<int64_t>();
    T* st = stats.data_ptr<T>();
    const T inv_t = T(1.0 / temperature);
    Buffer<double> a(n, 0.0), b(n, 0.0), c(n, 0.0);
    if (!pairwise) {
      supcon_fold<T>(zp, y, n, dim, inv_t, false, lse.data_ptr<T>(), a.data(), b.data());
      const T* l = lse.data_ptr<T>();
      for (int64_t i = 0; i < n; ++i) {
        st[i] = T(b[i]);
        if (b[i] > 0) loss += double(l[i]) - a[i] / b[i];
      }
      loss /= double(n);
    } else {
      supcon_fold<T>(zp, y, n, dim, inv_t, true, lse.data_ptr<T>(), nullptr, nullptr);
      supcon_pairs<T>(zp, y, lse.data_ptr<T>(), n, dim, inv_t, a.data(), b.data(), c.data());
      double pairs = 0;
      for (int64_t i = 0; i < n; ++i) {
        loss += a[i];
        pairs += c[i];
        st[i] = T(c[i]);
        st[n + i] = T(b[i]);
      }
      loss = pairs > 0 ? loss / pairs : 0.0;
    }
  });
  return {at::scalar_tensor(loss, z.options()), lse, stats};
}

at::Tensor supcon_bwd(const at::Tensor& grad_loss, const at::Tensor& z, const at::Tensor& labels_,
                      const at::Tensor& lse, const at::Tensor& stats, double temperature, bool pairwise) {
  CHECK_EMBEDDINGS(z);
  const at::Tensor labels = checked_labels(labels_, z.size(0));
  check_lse(lse, z, "lse");
  TORCH_CHECK(stats.sizes() == at::IntArrayRef({2, z.size(0)}) && stats.scalar_type() == z.scalar_type() &&
                  stats.is_contiguous(),
              "row_stats must be a contiguous [2, N] tensor in the dtype of z");
  auto dz = empty_output_like(z);
  const double grad = scalar_of(grad_loss, "grad_loss");
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "supcon_bwd", [&] {
    supcon_backward<scalar_t>(z.data_ptr<scalar_t>(), labels.const_data_ptr<int64_t>(), lse.data_ptr<scalar_t>(),
                              stats.data_ptr<scalar_t>(), z.size(0), z.size(1), scalar_t(1.0 / temperature), pairwise,
                              grad, dz.data_ptr<scalar_t>());
  });
  return dz;
}

}  // namespace
