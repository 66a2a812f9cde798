// The spmm CPU kernels and their op entry points, compiled once per instruction set by
// csrc/cpu/spmm.cpp (see isa.h): no include guard; SSLFAST_AVX2 says which pass this is.
#include "tile_math.h"

namespace {

constexpr int64_t kFeatureBlock = 64;  // hub rows: features per parallel task (= kTile below)

enum class Reduce { Sum, Mean, Max, Min };

Reduce parse_reduce(c10::string_view name) {
  if (name == "sum") return Reduce::Sum;
  if (name == "mean") return Reduce::Mean;
  if (name == "max") return Reduce::Max;
  if (name == "min") return Reduce::Min;
  TORCH_CHECK(false, "reduce must be one of 'sum', 'mean', 'max', 'min', got '", std::string(name), "'");
}

void check_csr(const at::Tensor& ptr, const at::Tensor& idx, int64_t rows, const char* what) {
  TORCH_CHECK(ptr.device().is_cpu() && idx.device().is_cpu(), what, ": index tensors must be on CPU");
  TORCH_CHECK(ptr.scalar_type() == at::kLong && idx.scalar_type() == at::kLong, what,
              ": offsets and indices must be int64");
  TORCH_CHECK(ptr.dim() == 1 && ptr.numel() == rows + 1, what, ": offsets must have num_nodes + 1 = ", rows + 1,
              " entries, got ", ptr.sizes());
  TORCH_CHECK(idx.dim() == 1, what, ": indices must be 1-D");
  TORCH_CHECK(ptr.is_contiguous() && idx.is_contiguous(), what, ": must be contiguous");
}

// Chunks of rows with about equal edge counts: chunk c is [bounds[c], bounds[c + 1]).
std::vector<int64_t> edge_balanced_bounds(const int64_t* ptr, int64_t rows) {
  const int64_t edges = ptr[rows];
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(rows, 32 * at::get_num_threads()));
  std::vector<int64_t> bounds(chunks + 1);
  for (int64_t c = 0; c <= chunks; ++c) {
    const int64_t target = edges * c / chunks;
    // first row whose edge range starts at or after target; rows with few edges fill the rest
    bounds[c] = std::lower_bound(ptr, ptr + rows, target) - ptr;
  }
  bounds[0] = 0;
  bounds[chunks] = rows;
  for (int64_t c = 1; c <= chunks; ++c) bounds[c] = std::max(bounds[c], bounds[c - 1]);
  return bounds;
}

// Runs body(row, f0, f1) for every row: non-hub rows in edge-balanced chunks over all features,
// hub rows (is_hub[row]) afterwards, each split into feature blocks run in parallel.
template <typename Body>
void for_rows(const int64_t* ptr, int64_t rows, int64_t features, const at::Tensor& hubs, const Body& body) {
  const int64_t* hub = hubs.data_ptr<int64_t>();
  const int64_t num_hubs = hubs.numel();
  std::vector<uint8_t> is_hub;
  if (num_hubs > 0) {
    is_hub.assign(rows, 0);
    for (int64_t h = 0; h < num_hubs; ++h)
      if (hub[h] >= 0 && hub[h] < rows) is_hub[hub[h]] = 1;
  }
  const auto bounds = edge_balanced_bounds(ptr, rows);
  // Threads take chunks from a shared counter (dynamic schedule): a thread that runs late or
  // slow on a shared machine does not hold the others up. Which thread writes a row changes
  // from run to run, the row's summation order does not: still bitwise deterministic.
  const int64_t chunks = int64_t(bounds.size()) - 1;
  std::atomic<int64_t> next_chunk{0};
  at::parallel_for(0, std::min<int64_t>(at::get_num_threads(), chunks), 1, [&](int64_t, int64_t) {
    for (int64_t c = next_chunk.fetch_add(1); c < chunks; c = next_chunk.fetch_add(1))
      for (int64_t r = bounds[c]; r < bounds[c + 1]; ++r)
        if (num_hubs == 0 || !is_hub[r]) body(r, int64_t(0), features);
  });
  const int64_t blocks = (features + kFeatureBlock - 1) / kFeatureBlock;
  for (int64_t h = 0; h < num_hubs; ++h) {
    const int64_t r = hub[h];
    if (r < 0 || r >= rows) continue;
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      body(r, b0 * kFeatureBlock, std::min(features, b1 * kFeatureBlock));
    });
  }
}

// out[r] = row_scale[r] * sum_k w[k] * nbr_scale[idx[k]] * x[idx[k]] + self_scale[r] * x[r],
// k over ptr[r]..ptr[r+1]; w[k] = weight[edge_of[k]] (edge_of = CSC -> CSR map) or weight[k].
// Every scale / weight is optional (nullptr = 1, self_scale nullptr = no self term).
// Serves spmm sum / mean forward, their x-gradient over CSC, and GCN forward / backward.
//
// Features go in tiles of kTile (or 32 / 16 / 8) held in a local accumulator (VecTile below:
// vector registers, ymm under AVX2) while the row's edges stream by; gathered rows are
// prefetched ahead.
constexpr int64_t kTile = 64;
constexpr int64_t kPrefetch = 8;

// Every cache line of the feature tile of row j (a single prefetch covers only one line).
template <typename T>
inline void prefetch_row(const T* x, int64_t j, int64_t x_rows, int64_t features, int64_t f0, int64_t width) {
  if (j < 0 || j >= x_rows) return;
  const char* p = reinterpret_cast<const char*>(x + j * features + f0);
  for (int64_t b = 0; b < width * int64_t(sizeof(T)); b += 64) __builtin_prefetch(p + b);
}

// The accumulator of a fixed-width tile as explicit 32-byte vectors (GCC / Clang vector
// extension), so no compiler heuristic decides whether it lives in vector registers: a plain
// T[Width] array was split into scalars (16 vfmadd231ss per edge at Width 16), and keeping it
// vectorized took a 64-wide array cleared by `rep stos` on every row. Each lane does the same
// FMAs in the same edge order as the scalar formula (deterministic). Without AVX2 the compiler
// splits each vector into 16-byte or scalar operations: same results, no separate path.
typedef float Float8 __attribute__((vector_size(32)));
typedef double Double4 __attribute__((vector_size(32)));

template <typename T, int64_t Width>
struct VecTile {
  using V = std::conditional_t<std::is_same_v<T, float>, Float8, Double4>;
  static constexpr int64_t kLanes = 32 / int64_t(sizeof(T));
  static_assert(Width % kLanes == 0, "fixed tile widths are multiples of a 32-byte vector");
  V v[Width / kLanes];
  VecTile() {
    for (auto& a : v) a = V{};
  }
  void axpy(T w, const T* __restrict xj) {
    for (int64_t i = 0; i < Width / kLanes; ++i) {
      V xv;
      __builtin_memcpy(&xv, xj + i * kLanes, sizeof(V));
      v[i] += w * xv;
    }
  }
  // o = s * acc + self * xr (xr nullptr: + 0), lane by lane: the scalar epilogue's formula,
  // in vectors (a scalar loop over extracted lanes was 40% of an in-cache F = 64 forward).
  void store(T* __restrict o, T s, const T* __restrict xr, T self) const {
    for (int64_t i = 0; i < Width / kLanes; ++i) {
      V add = V{};
      if (xr) {
        V xv;
        __builtin_memcpy(&xv, xr + i * kLanes, sizeof(V));
        add = self * xv;
      }
      const V r = s * v[i] + add;
      __builtin_memcpy(o + i * kLanes, &r, sizeof(V));
    }
  }
};

// Runtime width (Width == 0): a kTile array and a runtime trip count.
template <typename T>
struct ArrayTile {
  alignas(64) T v[kTile];
  int64_t width;
  explicit ArrayTile(int64_t w) : width(w) {
    for (int64_t f = 0; f < width; ++f) v[f] = T(0);  // only the lanes used (no full-tile clear)
  }
  void axpy(T w, const T* __restrict xj) {
    for (int64_t f = 0; f < width; ++f) v[f] += w * xj[f];
  }
  void store(T* __restrict o, T s, const T* __restrict xr, T self) const {
    for (int64_t f = 0; f < width; ++f) o[f] = s * v[f] + (xr ? self * xr[f] : T(0));
  }
};

template <typename T, int64_t Width>
inline void row_sum_tile(const int64_t* __restrict ptr, const int64_t* __restrict idx, const int64_t* edge_of,
                         const T* weight, const T* nbr_scale, const T* row_scale, const T* self_scale,
                         const T* __restrict x, int64_t x_rows, int64_t features, int64_t r, int64_t f0, int64_t width,
                         int64_t prefetch_width, T* __restrict out) {
  auto acc = [&] {
    if constexpr (Width > 0)
      return VecTile<T, Width>();
    else
      return ArrayTile<T>(width);
  }();
  const int64_t begin = ptr[r], end = ptr[r + 1];
  for (int64_t k = begin; k < end; ++k) {
    if (prefetch_width && k + kPrefetch < end)
      prefetch_row(x, idx[k + kPrefetch], x_rows, features, f0, prefetch_width);
    const int64_t j = idx[k];
    if (j < 0 || j >= x_rows) continue;  // validated in Python; never read out of bounds
    T w = T(1);
    if (weight) w = weight[edge_of ? edge_of[k] : k];
    if (nbr_scale) w *= nbr_scale[j];
    acc.axpy(w, x + j * features + f0);
  }
  const T s = row_scale ? row_scale[r] : T(1);
  const T* xr = self_scale ? x + r * features + f0 : nullptr;
  acc.store(out + r * features + f0, s, xr, self_scale ? self_scale[r] : T(0));
}

template <typename T>
void weighted_row_sum(const int64_t* ptr, const int64_t* idx, const int64_t* edge_of, const T* weight,
                      const T* nbr_scale, const T* row_scale, const T* self_scale, const T* x, int64_t rows,
                      int64_t x_rows, int64_t features, const at::Tensor& hubs, T* out) {
  for_rows(ptr, rows, features, hubs, [&](int64_t r, int64_t f0, int64_t f1) {
    for (int64_t t = f0; t < f1; t += kTile) {
      const int64_t width = std::min(kTile, f1 - t);
      // Every 4th tile prefetches the next 4 tiles of each gathered row (one miss per row slice
      // instead of one per tile); the tiles between find theirs in L1 / L2.
      const int64_t prefetch_width = (t - f0) % (4 * kTile) == 0 ? std::min(4 * kTile, f1 - t) : 0;
      // Narrow feature counts (F = 8, 16, 32, common in GNNs) get fixed-width tiles too: with a
      // runtime trip count the accumulator lives in memory and every edge pays a load + store.
      auto tile = [&](auto fixed) {
        row_sum_tile<T, decltype(fixed)::value>(ptr, idx, edge_of, weight, nbr_scale, row_scale, self_scale, x, x_rows,
                                                features, r, t, width, prefetch_width, out);
      };
      switch (width) {
        case kTile:
          tile(std::integral_constant<int64_t, kTile>());
          break;
        case 32:
          tile(std::integral_constant<int64_t, 32>());
          break;
        case 16:
          tile(std::integral_constant<int64_t, 16>());
          break;
        case 8:
          tile(std::integral_constant<int64_t, 8>());
          break;
        default:
          tile(std::integral_constant<int64_t, 0>());
      }
    }
  });
}

// max / min: out[r, f] = extreme over in-edges of w * x[j, f]; arg[r, f] = CSR position of the
// chosen edge (first one on ties), -1 and out = 0 for rows without in-edges (PyG's scatter).
// NaN wins, so NaN in gives NaN out.
//
// Tiles of kExtremeTile features with a fixed trip count, the chosen edge held as Pos = int32
// offset within the row (int64 only for rows of 2^31 edges or more), and a branch-free update:
// value + position stay in vector registers (8 ymm for float) across the row's edges: only
// the two together paid (benchmarks/NOTES.md, "spmm max / min").
constexpr int64_t kExtremeTile = 32;

template <typename T, bool IsMax, int64_t Width, typename Pos>
inline void extreme_tile(const int64_t* __restrict idx, const T* weight, const T* __restrict x, int64_t x_rows,
                         int64_t features, int64_t begin, int64_t end, int64_t t, int64_t width, int64_t prefetch_width,
                         T* __restrict o, int64_t* __restrict a) {
  constexpr int64_t kAcc = Width > 0 ? Width : kExtremeTile;
  const int64_t n = Width > 0 ? Width : width;
  alignas(64) T best[kAcc];
  alignas(64) Pos best_k[kAcc];
  for (int64_t f = 0; f < kAcc; ++f) {
    best[f] = IsMax ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::infinity();
    best_k[f] = Pos(-1);
  }
  for (int64_t k = begin; k < end; ++k) {
    if (prefetch_width && k + kPrefetch < end) prefetch_row(x, idx[k + kPrefetch], x_rows, features, t, prefetch_width);
    const int64_t j = idx[k];
    if (j < 0 || j >= x_rows) continue;
    const T w = weight ? weight[k] : T(1);
    const Pos pos = Pos(k - begin);
    const T* __restrict xj = x + j * features + t;
    for (int64_t f = 0; f < n; ++f) {
      const T v = w * xj[f], b = best[f];
      // Take v if the slot is empty, or v beats b strictly (the first edge wins ties), or v is
      // NaN and b is not (NaN wins, once): !(v <= b) is "v > b or either is NaN", and b == b
      // rules out a NaN already held. Bitwise operators, no branches: the loop vectorizes.
      const bool beats = IsMax ? !(v <= b) : !(v >= b);
      const bool take = (best_k[f] < 0) | (beats & (b == b));
      best[f] = take ? v : b;
      best_k[f] = take ? pos : best_k[f];
    }
  }
  for (int64_t f = 0; f < n; ++f) {
    o[f] = best_k[f] < 0 ? T(0) : best[f];
    a[f] = best_k[f] < 0 ? int64_t(-1) : begin + int64_t(best_k[f]);
  }
}

template <typename T, bool IsMax>
void extreme_rows(const int64_t* ptr, const int64_t* idx, const T* weight, const T* x, int64_t rows, int64_t x_rows,
                  int64_t features, const at::Tensor& hubs, T* out, int64_t* arg) {
  for_rows(ptr, rows, features, hubs, [&](int64_t r, int64_t f0, int64_t f1) {
    const int64_t begin = ptr[r], end = ptr[r + 1];
    const bool narrow = end - begin <= std::numeric_limits<int32_t>::max();
    for (int64_t t = f0; t < f1; t += kExtremeTile) {
      const int64_t width = std::min(kExtremeTile, f1 - t);
      // the first tile of every 8 prefetches all 8 tiles of each gathered row (as in row_sum)
      const int64_t prefetch_width = (t - f0) % (8 * kExtremeTile) == 0 ? std::min(8 * kExtremeTile, f1 - t) : 0;
      T* o = out + r * features + t;
      int64_t* a = arg + r * features + t;
      auto tile = [&](auto fixed, auto pos) {
        extreme_tile<T, IsMax, decltype(fixed)::value, decltype(pos)>(idx, weight, x, x_rows, features, begin, end, t,
                                                                      width, prefetch_width, o, a);
      };
      auto with_pos = [&](auto fixed) {
        if (narrow)
          tile(fixed, int32_t());
        else
          tile(fixed, int64_t());
      };
      switch (width) {
        case kExtremeTile:
          with_pos(std::integral_constant<int64_t, kExtremeTile>());
          break;
        case 16:
          with_pos(std::integral_constant<int64_t, 16>());
          break;
        case 8:
          with_pos(std::integral_constant<int64_t, 8>());
          break;
        default:
          with_pos(std::integral_constant<int64_t, 0>());
      }
    }
  });
}

// x-gradient of max / min over the transpose: grad_x[j, f] = sum over out-edges k (CSR position
// edge_of[q]) to target i with arg[i, f] == k of w[k] * grad[i, f].
//
// Branch-free: every lane computes sum + w * grad and keeps it only where arg == k (a blend),
// bitwise the same as adding only on a match; a NaN or inf in a lane not taken is dropped.
// Branching on the compare was mispredicted every few features and kept the loop scalar. Fixed
// tile widths hold the sums in 32-byte vectors: the int64 compare masks are narrowed to T's
// lane width and blend by bits.
typedef int64_t Long4 __attribute__((vector_size(32)));
typedef int32_t Int8 __attribute__((vector_size(32)));
typedef int32_t Int4 __attribute__((vector_size(16)));

// all-ones lanes where a[0..kLanes) == k, in T's lane width (float: 8 x int32, double: 4 x int64)
template <typename T>
inline auto match_mask(const int64_t* __restrict a, int64_t k) {
  const Long4 key = Long4{} + k;
  Long4 lo;
  __builtin_memcpy(&lo, a, sizeof(Long4));
  if constexpr (std::is_same_v<T, float>) {
    Long4 hi;
    __builtin_memcpy(&hi, a + 4, sizeof(Long4));
    const Int4 m0 = __builtin_convertvector(lo == key, Int4), m1 = __builtin_convertvector(hi == key, Int4);
#if defined(__clang__) || __GNUC__ >= 12
    return Int8(__builtin_shufflevector(m0, m1, 0, 1, 2, 3, 4, 5, 6, 7));
#else  // GCC < 12 has no __builtin_shufflevector: the same lanes through memory (slower; NOTES.md)
    Int8 m;
    __builtin_memcpy(&m, &m0, sizeof(m0));
    __builtin_memcpy(reinterpret_cast<char*>(&m) + sizeof(m0), &m1, sizeof(m1));
    return m;
#endif
  } else {
    return Long4(lo == key);
  }
}

template <typename T, int64_t Width>
inline void extreme_grad_tile(int64_t q0, int64_t q1, const int64_t* __restrict row, const int64_t* __restrict edge_of,
                              const T* weight, const int64_t* __restrict arg, const T* __restrict grad,
                              int64_t out_rows, int64_t features, int64_t t, int64_t width, T* __restrict gx) {
  if constexpr (Width > 0) {
    using V = std::conditional_t<std::is_same_v<T, float>, Float8, Double4>;
    using M = std::conditional_t<std::is_same_v<T, float>, Int8, Long4>;
    constexpr int64_t kLanes = 32 / int64_t(sizeof(T));
    V acc[Width / kLanes];
    for (auto& a : acc) a = V{};
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t i = row[q], k = edge_of[q];
      if (i < 0 || i >= out_rows) continue;
      const T w = weight ? weight[k] : T(1);
      const int64_t* ai = arg + i * features + t;
      const T* gi = grad + i * features + t;
      for (int64_t v = 0; v < Width / kLanes; ++v) {
        V g;
        __builtin_memcpy(&g, gi + v * kLanes, sizeof(V));
        const V sum = acc[v] + w * g;  // one expression, as the scalar form (same contraction)
        const M m = match_mask<T>(ai + v * kLanes, k);
        M sum_bits, acc_bits;
        __builtin_memcpy(&sum_bits, &sum, sizeof(V));
        __builtin_memcpy(&acc_bits, &acc[v], sizeof(V));
        const M picked = (sum_bits & m) | (acc_bits & ~m);
        __builtin_memcpy(&acc[v], &picked, sizeof(V));
      }
    }
    __builtin_memcpy(gx + t, acc, sizeof(acc));
  } else {
    for (int64_t f = t; f < t + width; ++f) gx[f] = T(0);
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t i = row[q], k = edge_of[q];
      if (i < 0 || i >= out_rows) continue;
      const T w = weight ? weight[k] : T(1);
      const int64_t* ai = arg + i * features;
      const T* gi = grad + i * features;
      for (int64_t f = t; f < t + width; ++f) {
        const T sum = gx[f] + w * gi[f];
        gx[f] = ai[f] == k ? sum : gx[f];
      }
    }
  }
}

template <typename T>
void extreme_grad_x(const int64_t* colptr, const int64_t* row, const int64_t* edge_of, const T* weight,
                    const int64_t* arg, const T* grad, int64_t x_rows, int64_t out_rows, int64_t features,
                    const at::Tensor& hubs, T* grad_x) {
  for_rows(colptr, x_rows, features, hubs, [&](int64_t j, int64_t f0, int64_t f1) {
    T* gx = grad_x + j * features;
    for (int64_t t = f0; t < f1; t += kExtremeTile) {
      const int64_t width = std::min(kExtremeTile, f1 - t);
      auto tile = [&](auto fixed) {
        extreme_grad_tile<T, decltype(fixed)::value>(colptr[j], colptr[j + 1], row, edge_of, weight, arg, grad,
                                                     out_rows, features, t, width, gx);
      };
      switch (width) {
        case kExtremeTile:
          tile(std::integral_constant<int64_t, kExtremeTile>());
          break;
        case 16:
          tile(std::integral_constant<int64_t, 16>());
          break;
        case 8:
          tile(std::integral_constant<int64_t, 8>());
          break;
        default:
          tile(std::integral_constant<int64_t, 0>());
      }
    }
  });
}

// Edge-weight gradient, one destination row per task (each edge belongs to one row):
// sum / mean: grad_w[k] = row_scale[i] * <grad[i], x[j]>;
// max / min:  grad_w[k] = sum_f [arg[i, f] == k] grad[i, f] * x[j, f].
template <typename T>
void weight_grad(const int64_t* ptr, const int64_t* idx, const T* row_scale, const int64_t* arg, const T* grad,
                 const T* x, int64_t rows, int64_t x_rows, int64_t features, T* grad_w) {
  at::parallel_for(0, rows, 256, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) {
      const T* gi = grad + i * features;
      for (int64_t k = ptr[i]; k < ptr[i + 1]; ++k) {
        const int64_t j = idx[k];
        if (j < 0 || j >= x_rows) {
          grad_w[k] = T(0);
          continue;
        }
        const T* xj = x + j * features;
        T acc = T(0);
        if (arg) {
          const int64_t* ai = arg + i * features;
          for (int64_t f = 0; f < features; ++f) {  // branch-free, as in extreme_grad_tile
            const T sum = acc + gi[f] * xj[f];
            acc = ai[f] == k ? sum : acc;
          }
        } else {
          for (int64_t f = 0; f < features; ++f) acc += gi[f] * xj[f];
          if (row_scale) acc *= row_scale[i];
        }
        grad_w[k] = acc;
      }
    }
  });
}

template <typename T>
std::vector<T> inverse_degrees(const int64_t* ptr, int64_t rows) {
  std::vector<T> inv(rows);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t d = ptr[r + 1] - ptr[r];
    inv[r] = d > 0 ? T(1) / T(d) : T(0);
  }
  return inv;
}

void check_features(const at::Tensor& x, int64_t rows, const char* name) {
  CHECK_CPU(x);
  CHECK_CONTIGUOUS(x);
  CHECK_DIM(x, 2);
  CHECK_FLOAT_OR_DOUBLE(x);
  TORCH_CHECK(x.size(0) == rows, name, " must have num_nodes = ", rows, " rows, got ", x.size(0));
}

void check_weight(const c10::optional<at::Tensor>& weight, const at::Tensor& x, int64_t edges) {
  if (!weight) return;
  CHECK_CPU(*weight);
  CHECK_CONTIGUOUS(*weight);
  TORCH_CHECK(weight->dim() == 1 && weight->numel() == edges, "edge_weight must have E = ", edges, " entries, got ",
              weight->sizes());
  TORCH_CHECK(weight->scalar_type() == x.scalar_type(), "edge_weight must have the dtype of x");
}

// ---------------------------------------------------------------- spmm

std::tuple<at::Tensor, at::Tensor> spmm_fwd(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& colptr,
                                            const at::Tensor& row, const at::Tensor& csc_perm,
                                            const at::Tensor& hub_rows, const at::Tensor& hub_cols,
                                            const c10::optional<at::Tensor>& weight_, const at::Tensor& x_,
                                            c10::string_view reduce_name) {
  const Reduce reduce = parse_reduce(reduce_name);
  const at::Tensor x = x_.contiguous();
  const c10::optional<at::Tensor> weight = weight_ ? c10::optional<at::Tensor>(weight_->contiguous()) : c10::nullopt;
  const int64_t n = rowptr.numel() - 1;
  check_csr(rowptr, col, n, "rowptr/col");
  check_features(x, n, "x");
  const int64_t edges = col.numel();
  TORCH_CHECK(rowptr.const_data_ptr<int64_t>()[n] == edges, "rowptr[-1] must equal E");
  check_weight(weight, x, edges);
  const int64_t features = x.size(1);
  at::Tensor out = empty_output_like(x);
  const bool extreme = reduce == Reduce::Max || reduce == Reduce::Min;
  at::Tensor arg = extreme ? empty_output({n, features}, x.options().dtype(at::kLong))
                           : at::empty({0}, x.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spmm_fwd", [&] {
    const int64_t* ptr = rowptr.data_ptr<int64_t>();
    const scalar_t* w = weight ? weight->data_ptr<scalar_t>() : nullptr;
    if (extreme) {
      if (reduce == Reduce::Max)
        extreme_rows<scalar_t, true>(ptr, col.data_ptr<int64_t>(), w, x.data_ptr<scalar_t>(), n, n, features, hub_rows,
                                     out.data_ptr<scalar_t>(), arg.data_ptr<int64_t>());
      else
        extreme_rows<scalar_t, false>(ptr, col.data_ptr<int64_t>(), w, x.data_ptr<scalar_t>(), n, n, features, hub_rows,
                                      out.data_ptr<scalar_t>(), arg.data_ptr<int64_t>());
      return;
    }
    std::vector<scalar_t> inv;
    if (reduce == Reduce::Mean) inv = inverse_degrees<scalar_t>(ptr, n);
    weighted_row_sum<scalar_t>(ptr, col.data_ptr<int64_t>(), nullptr, w, nullptr,
                               reduce == Reduce::Mean ? inv.data() : nullptr, nullptr, x.data_ptr<scalar_t>(), n, n,
                               features, hub_rows, out.data_ptr<scalar_t>());
  });
  return {out, arg};
}

std::tuple<at::Tensor, at::Tensor> spmm_bwd(const at::Tensor& grad_out, const at::Tensor& rowptr, const at::Tensor& col,
                                            const at::Tensor& colptr, const at::Tensor& row, const at::Tensor& csc_perm,
                                            const at::Tensor& hub_rows, const at::Tensor& hub_cols,
                                            const c10::optional<at::Tensor>& weight_, const at::Tensor& x_,
                                            const at::Tensor& arg, c10::string_view reduce_name,
                                            bool weight_requires_grad) {
  const Reduce reduce = parse_reduce(reduce_name);
  const at::Tensor x = x_.contiguous();
  const c10::optional<at::Tensor> weight = weight_ ? c10::optional<at::Tensor>(weight_->contiguous()) : c10::nullopt;
  const int64_t n = rowptr.numel() - 1;
  check_csr(rowptr, col, n, "rowptr/col");
  check_csr(colptr, row, n, "colptr/row");
  TORCH_CHECK(csc_perm.numel() == col.numel() && row.numel() == col.numel(), "csc_perm/row must have E entries");
  check_features(x, n, "x");
  const at::Tensor grad = grad_out.contiguous();
  TORCH_CHECK(grad.sizes() == x.sizes() && grad.scalar_type() == x.scalar_type(),
              "grad_out must match x in shape and dtype");
  check_weight(weight, x, col.numel());
  const bool extreme = reduce == Reduce::Max || reduce == Reduce::Min;
  if (extreme) TORCH_CHECK(arg.sizes() == x.sizes() && arg.scalar_type() == at::kLong, "arg must be int64 like x");
  const int64_t features = x.size(1);
  at::Tensor grad_x = empty_output_like(x);
  at::Tensor grad_w = weight && weight_requires_grad ? at::empty_like(*weight) : at::empty({0}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spmm_bwd", [&] {
    const scalar_t* w = weight ? weight->data_ptr<scalar_t>() : nullptr;
    const int64_t* ptr = rowptr.data_ptr<int64_t>();
    std::vector<scalar_t> inv;
    if (reduce == Reduce::Mean) inv = inverse_degrees<scalar_t>(ptr, n);
    const scalar_t* inv_deg = reduce == Reduce::Mean ? inv.data() : nullptr;
    const int64_t* arg_ptr = extreme ? arg.data_ptr<int64_t>() : nullptr;
    if (extreme)
      extreme_grad_x<scalar_t>(colptr.data_ptr<int64_t>(), row.data_ptr<int64_t>(), csc_perm.data_ptr<int64_t>(), w,
                               arg_ptr, grad.data_ptr<scalar_t>(), n, n, features, hub_cols,
                               grad_x.data_ptr<scalar_t>());
    else  // the transpose: grad_x[j] = sum over out-edges of w * grad[i] / deg(i)
      weighted_row_sum<scalar_t>(colptr.data_ptr<int64_t>(), row.data_ptr<int64_t>(), csc_perm.data_ptr<int64_t>(), w,
                                 inv_deg, nullptr, nullptr, grad.data_ptr<scalar_t>(), n, n, features, hub_cols,
                                 grad_x.data_ptr<scalar_t>());
    if (grad_w.numel() > 0)
      weight_grad<scalar_t>(ptr, col.data_ptr<int64_t>(), inv_deg, arg_ptr, grad.data_ptr<scalar_t>(),
                            x.data_ptr<scalar_t>(), n, n, features, grad_w.data_ptr<scalar_t>());
  });
  return {grad_x, grad_w};
}

// ---------------------------------------------------------------- GCN aggregation

// out = D^-1/2 (A + I) D^-1/2 x with dinv = D^-1/2 given per node (normalize=False: dinv = 1);
// self_loops adds the dinv[i]^2 x[i] term. Backward is the same kernel on the transpose.
at::Tensor gcn_run(const at::Tensor& ptr, const at::Tensor& idx, const at::Tensor& hubs, const at::Tensor& dinv,
                   const at::Tensor& x_, bool self_loops, const char* name) {
  const at::Tensor x = x_.contiguous();
  const int64_t n = ptr.numel() - 1;
  check_csr(ptr, idx, n, name);
  check_features(x, n, "x");
  TORCH_CHECK(dinv.dim() == 1 && dinv.numel() == n && dinv.scalar_type() == x.scalar_type() && dinv.is_contiguous(),
              "deg_inv_sqrt must be a contiguous [num_nodes] tensor with the dtype of x");
  at::Tensor out = empty_output_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gcn_aggregate", [&] {
    const scalar_t* d = dinv.data_ptr<scalar_t>();
    std::vector<scalar_t> self;
    if (self_loops) {
      self.resize(n);
      for (int64_t i = 0; i < n; ++i) self[i] = d[i] * d[i];
    }
    weighted_row_sum<scalar_t>(ptr.data_ptr<int64_t>(), idx.data_ptr<int64_t>(), nullptr, nullptr, d, d,
                               self_loops ? self.data() : nullptr, x.data_ptr<scalar_t>(), n, n, x.size(1), hubs,
                               out.data_ptr<scalar_t>());
  });
  return out;
}

at::Tensor gcn_aggregate_fwd(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& colptr,
                             const at::Tensor& row, const at::Tensor& hub_rows, const at::Tensor& hub_cols,
                             const at::Tensor& deg_inv_sqrt, const at::Tensor& x, bool add_self_loops) {
  return gcn_run(rowptr, col, hub_rows, deg_inv_sqrt, x, add_self_loops, "rowptr/col");
}

at::Tensor gcn_aggregate_bwd(const at::Tensor& grad_out, const at::Tensor& colptr, const at::Tensor& row,
                             const at::Tensor& hub_cols, const at::Tensor& deg_inv_sqrt, bool add_self_loops) {
  return gcn_run(colptr, row, hub_cols, deg_inv_sqrt, grad_out.contiguous(), add_self_loops, "colptr/row");
}

// ---------------------------------------------------------------- sddmm

// scores[k] = <a[col[k]], b[i]> for the CSR edge k of target i: edge ranges split evenly over
// threads (a hub's edges spread over all of them), each range walks rowptr from its first row.
at::Tensor sddmm_fwd(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& colptr, const at::Tensor& row,
                     const at::Tensor& csc_perm, const at::Tensor& hub_rows, const at::Tensor& hub_cols,
                     const at::Tensor& a_, const at::Tensor& b_) {
  const at::Tensor a = a_.contiguous(), b = b_.contiguous();
  const int64_t n = rowptr.numel() - 1;
  check_csr(rowptr, col, n, "rowptr/col");
  check_features(a, n, "a");
  check_features(b, n, "b");
  CHECK_SAME_DTYPE(a, b);
  TORCH_CHECK(a.size(1) == b.size(1), "a and b must have the same number of features");
  const int64_t edges = col.numel(), features = a.size(1);
  TORCH_CHECK(rowptr.const_data_ptr<int64_t>()[n] == edges, "rowptr[-1] must equal E");
  at::Tensor out = at::empty({edges}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "sddmm_fwd", [&] {
    const int64_t* ptr = rowptr.data_ptr<int64_t>();
    const int64_t* idx = col.data_ptr<int64_t>();
    const scalar_t* pa = a.data_ptr<scalar_t>();
    const scalar_t* pb = b.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, edges, 1024, [&](int64_t k0, int64_t k1) {
      int64_t i = std::upper_bound(ptr, ptr + n + 1, k0) - ptr - 1;
      for (int64_t k = k0; k < k1; ++k) {
        while (ptr[i + 1] <= k) ++i;
        const int64_t j = idx[k];
        if (j < 0 || j >= n) {
          o[k] = scalar_t(0);
          continue;
        }
        const scalar_t* __restrict aj = pa + j * features;
        const scalar_t* __restrict bi = pb + i * features;
        scalar_t acc = scalar_t(0);
        for (int64_t f = 0; f < features; ++f) acc += aj[f] * bi[f];
        o[k] = acc;
      }
    });
  });
  return out;
}

// grad_b[i] = sum over in-edges k of g[k] a[col[k]] (CSR); grad_a[j] = sum over out-edges of
// g[k] b[i] (the transpose): both are the weighted row sum with the edge gradient as weight.
std::tuple<at::Tensor, at::Tensor> sddmm_bwd(const at::Tensor& grad_out, const at::Tensor& rowptr,
                                             const at::Tensor& col, const at::Tensor& colptr, const at::Tensor& row,
                                             const at::Tensor& csc_perm, const at::Tensor& hub_rows,
                                             const at::Tensor& hub_cols, const at::Tensor& a_, const at::Tensor& b_) {
  const at::Tensor a = a_.contiguous(), b = b_.contiguous();
  const int64_t n = rowptr.numel() - 1;
  check_csr(rowptr, col, n, "rowptr/col");
  check_csr(colptr, row, n, "colptr/row");
  check_features(a, n, "a");
  check_features(b, n, "b");
  TORCH_CHECK(csc_perm.numel() == col.numel() && row.numel() == col.numel(), "csc_perm/row must have E entries");
  const at::Tensor grad = grad_out.contiguous();
  TORCH_CHECK(grad.dim() == 1 && grad.numel() == col.numel() && grad.scalar_type() == a.scalar_type(),
              "grad_out must be [E] with the dtype of a");
  at::Tensor grad_a = at::empty_like(a), grad_b = at::empty_like(b);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "sddmm_bwd", [&] {
    const scalar_t* g = grad.data_ptr<scalar_t>();
    weighted_row_sum<scalar_t>(rowptr.data_ptr<int64_t>(), col.data_ptr<int64_t>(), nullptr, g, nullptr, nullptr,
                               nullptr, a.data_ptr<scalar_t>(), n, n, a.size(1), hub_rows, grad_b.data_ptr<scalar_t>());
    weighted_row_sum<scalar_t>(colptr.data_ptr<int64_t>(), row.data_ptr<int64_t>(), csc_perm.data_ptr<int64_t>(), g,
                               nullptr, nullptr, nullptr, b.data_ptr<scalar_t>(), n, n, b.size(1), hub_cols,
                               grad_a.data_ptr<scalar_t>());
  });
  return {grad_a, grad_b};
}

// ---------------------------------------------------------------- fused GAT aggregation

// out[i, h] = sum over in-edges j -> i of softmax_i(leaky(alpha_src[j, h] + alpha_dst[i, h])) x[j, h];
// lse[i, h] = the row's log-sum-exp, the only saved state (O(N * H)). Backward recomputes the
// edge probabilities from it: deterministic, no E x H x F.
//
// Per row (and per CSC row in backward), the scores of its edges and heads go to a thread-local
// [kGatChunk, heads] buffer, a chunk of edges at a time, and are exponentiated together: float
// through exp8 (tile_math.h, Cephes, ~2 ulp, 8 lanes) instead of one libm call per edge and
// head, which with the register spills around each call cost most of the time at small head
// widths (Cora: 8 heads x 8 features). The forward takes the row's maximum score first (no
// online rescale); x is still read once.
//
// v > 0 ? v : slope * v, without a branch (the sign of a score is a coin flip: the branch was
// mispredicted half the time); v * 1 == v exactly, so the values are the same.
template <typename T>
inline T leaky_factor(T v, T slope) {
  const T factor[2] = {slope, T(1)};
  return factor[v > T(0)];
}
template <typename T>
inline T leaky(T v, T slope) {
  return v * leaky_factor(v, slope);
}

// v[0, n) = 0 with vector stores: GCC turns a plain zeroing loop of runtime length into
// `rep stos`, whose startup cost made the per-row clears of the GAT kernels (8 to 64 values)
// about a sixth of the Cora backward's perf samples.
template <typename T>
inline void zero_fill(T* __restrict v, int64_t n) {
  int64_t f = 0;
#if SSLFAST_AVX2
  if constexpr (std::is_same_v<T, float>)
    for (; f + 8 <= n; f += 8) _mm256_storeu_ps(v + f, _mm256_setzero_ps());
#endif
  for (; f < n; ++f) v[f] = T(0);
}

// The per-head steps of one edge, over heads [0, nh) with a[h] = alpha_src[j], b[h] =
// alpha_dst[i] (raw score a + b): 8 heads per AVX2 step for float, the scalar form's operations
// in its order otherwise and for the tail, so the bits do not depend on the path (a NaN's sign
// can: which operand's NaN an fma keeps depends on the instruction form). At 8 heads of 8
// features these loops, one head at a time, were most of the GAT kernels' instructions.
// Products that meet an add are spelled as fused multiply-adds on both paths (the compiler would
// contract the scalar form, and not necessarily the vector one).
#if SSLFAST_AVX2
inline __m256 leaky_factor8(__m256 raw, __m256 slope) {  // raw > 0 ? 1 : slope, as leaky_factor()
  return _mm256_blendv_ps(slope, _mm256_set1_ps(1.0f), _mm256_cmp_ps(raw, _mm256_setzero_ps(), _CMP_GT_OQ));
}
#endif

// out[h] = leaky(a[h] + b[h]) - shift[h]: the edge's logits less the row max (forward) or the
// row's log-sum-exp (backward).
template <typename T>
inline void shifted_scores(const T* __restrict a, const T* __restrict b, const T* __restrict shift, T slope, int64_t nh,
                           T* __restrict out) {
  int64_t h = 0;
#if SSLFAST_AVX2
  if constexpr (std::is_same_v<T, float>) {
    const __m256 vs = _mm256_set1_ps(slope);
    for (; h + 8 <= nh; h += 8) {
      const __m256 raw = _mm256_add_ps(_mm256_loadu_ps(a + h), _mm256_loadu_ps(b + h));
      _mm256_storeu_ps(out + h, _mm256_fmsub_ps(raw, leaky_factor8(raw, vs), _mm256_loadu_ps(shift + h)));
    }
  }
#endif
  for (; h < nh; ++h) {
    const T raw = a[h] + b[h];
    out[h] = std::fma(raw, leaky_factor(raw, slope), -shift[h]);
  }
}

// m[h] = max(m[h], leaky(a[h] + b[h])), a NaN score skipped (its exp, NaN, poisons the sum later).
template <typename T>
inline void max_scores(const T* __restrict a, const T* __restrict b, T slope, int64_t nh, T* __restrict m) {
  int64_t h = 0;
#if SSLFAST_AVX2
  if constexpr (std::is_same_v<T, float>) {
    const __m256 vs = _mm256_set1_ps(slope);
    for (; h + 8 <= nh; h += 8) {
      const __m256 raw = _mm256_add_ps(_mm256_loadu_ps(a + h), _mm256_loadu_ps(b + h));
      const __m256 e = _mm256_mul_ps(raw, leaky_factor8(raw, vs));
      const __m256 old = _mm256_loadu_ps(m + h);
      _mm256_storeu_ps(m + h, _mm256_blendv_ps(old, e, _mm256_cmp_ps(e, old, _CMP_GT_OQ)));
    }
  }
#endif
  for (; h < nh; ++h) {
    const T e = leaky(a[h] + b[h], slope);
    m[h] = e > m[h] ? e : m[h];
  }
}

// acc[h] += p[h] * (dp[h] - delta[h]) * leaky'(a[h] + b[h]): the score gradient ds of the edge
// (p its probability, dp = <grad_out_i, x_j> per head, delta = <grad_out_i, out_i>).
template <typename T>
inline void add_score_grads(const T* __restrict a, const T* __restrict b, const T* __restrict p, const T* __restrict dp,
                            const T* __restrict delta, T slope, int64_t nh, T* __restrict acc) {
  int64_t h = 0;
#if SSLFAST_AVX2
  if constexpr (std::is_same_v<T, float>) {
    const __m256 vs = _mm256_set1_ps(slope);
    for (; h + 8 <= nh; h += 8) {
      const __m256 raw = _mm256_add_ps(_mm256_loadu_ps(a + h), _mm256_loadu_ps(b + h));
      const __m256 de =
          _mm256_mul_ps(_mm256_loadu_ps(p + h), _mm256_sub_ps(_mm256_loadu_ps(dp + h), _mm256_loadu_ps(delta + h)));
      _mm256_storeu_ps(acc + h, _mm256_fmadd_ps(de, leaky_factor8(raw, vs), _mm256_loadu_ps(acc + h)));
    }
  }
#endif
  for (; h < nh; ++h) acc[h] = std::fma(p[h] * (dp[h] - delta[h]), leaky_factor(a[h] + b[h], slope), acc[h]);
}

// <a, b> over n values in 8 interleaved partial sums added pairwise at the end (a fixed order:
// deterministic). One running sum was a chain of dependent adds, the longest path of the GAT
// backward at 8 features per head. Each partial sum takes explicit fused multiply-adds, so
// head_dots' vector path below gives the same bits whatever the compiler contracts.
template <typename T>
inline T dot8(const T* __restrict a, const T* __restrict b, int64_t n) {
  T lane[8] = {};
  int64_t f = 0;
  for (; f + 8 <= n; f += 8)
    for (int l = 0; l < 8; ++l) lane[l] = std::fma(a[f + l], b[f + l], lane[l]);
  T acc = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  for (; f < n; ++f) acc += a[f] * b[f];
  return acc;
}

// dp[h] = dot8(a + h * features, b + h * features, features) for h in [0, nh): the per-head
// scores' inner products of the GAT backward. float with AVX2 and features % 8 == 0: 8 heads per
// step, each head's partial sums in one vector, the 8 reduced together by a hadd tree in dot8's
// order (bitwise the same as dot8); at 8 features per head one dot8 call cost about as much as
// the rest of the edge's work.
template <typename T>
inline void head_dots(const T* __restrict a, const T* __restrict b, int64_t nh, int64_t features, T* __restrict dp) {
  int64_t h = 0;
#if SSLFAST_AVX2
  if constexpr (std::is_same_v<T, float>) {
    if (features % 8 == 0) {
      for (; h + 8 <= nh; h += 8) {
        __m256 lane[8];
        for (int k = 0; k < 8; ++k) {
          const float* ak = a + (h + k) * features;
          const float* bk = b + (h + k) * features;
          lane[k] = _mm256_setzero_ps();
          for (int64_t f = 0; f < features; f += 8)
            lane[k] = _mm256_fmadd_ps(_mm256_loadu_ps(ak + f), _mm256_loadu_ps(bk + f), lane[k]);
        }
        // hadd(x, y) = (x0+x1, x2+x3, y0+y1, y2+y3 | x4+x5, x6+x7, y4+y5, y6+y7); two levels leave
        // ((l0+l1)+(l2+l3)) of heads k..k+3 in the low half and ((l4+l5)+(l6+l7)) in the high one.
        const __m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps(lane[0], lane[1]), _mm256_hadd_ps(lane[2], lane[3]));
        const __m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps(lane[4], lane[5]), _mm256_hadd_ps(lane[6], lane[7]));
        const __m256 lo = _mm256_permute2f128_ps(t0, t1, 0x20), hi = _mm256_permute2f128_ps(t0, t1, 0x31);
        _mm256_storeu_ps(dp + h, _mm256_add_ps(lo, hi));
      }
    }
  }
#endif
  for (; h < nh; ++h) dp[h] = dot8(a + h * features, b + h * features, features);
}

// v[0, n) = exp(v[0, n)). float with AVX2: every element through exp8, the last partial vector
// padded (v must hold exp_capacity(n) values), so an element's result never depends on where
// it falls (hub rows split their heads by thread count); otherwise std::exp.
inline int64_t exp_capacity(int64_t n) { return (n + 7) / 8 * 8; }

template <typename T>
inline void exp_inplace(T* v, int64_t n) {
#if SSLFAST_AVX2
  if constexpr (std::is_same_v<T, float>) {
    for (int64_t c = n; c < exp_capacity(n); ++c) v[c] = 0.0f;
    for (int64_t c = 0; c < n; c += 8) _mm256_storeu_ps(v + c, exp8(_mm256_loadu_ps(v + c)));
    return;
  }
#endif
  for (int64_t c = 0; c < n; ++c) v[c] = std::exp(v[c]);
}

// A thread's scratch of at least `size` values (grown, never shrunk; one per thread).
template <typename T>
inline T* gat_scratch(int64_t size) {
  thread_local std::vector<T> buffer;
  if (int64_t(buffer.size()) < size) buffer.resize(size);
  return buffer.data();
}

// Edges per scratch chunk: the buffer holds kGatChunk x heads probabilities, whatever the degree.
constexpr int64_t kGatChunk = 256;

// Attention dropout (PyG GATConv's dropout on the attention coefficients): the probability of
// the edge at CSR position e and head h is kept, scaled by 1 / (1 - p), when
// uniform(seed, e * heads + h) >= p (kernels/random.h); regenerated in the backward, never stored.
struct AttentionDropout {
  float p = 0.0f;
  uint64_t seed = 0;
  bool active() const { return p > 0.0f; }
  // scale[h] for heads h0 .. h0 + nh of edge e: 1 / (1 - p) when kept, 0 when dropped.
  template <typename T>
  void scales(int64_t e, int64_t heads, int64_t h0, int64_t nh, T* scale) const {
    const T kept = T(1) / (T(1) - T(p));
    for (int64_t h = 0; h < nh; ++h) scale[h] = hash_keep(seed, uint64_t(e * heads + h0 + h), p) ? kept : T(0);
  }
};

template <typename T>
void gat_forward(const int64_t* ptr, const int64_t* idx, const T* x, const T* a_src, const T* a_dst, T slope,
                 const AttentionDropout& dropout, int64_t n, int64_t heads, int64_t features, const at::Tensor& hubs,
                 T* out, T* lse) {
  const int64_t width = heads * features;
  for_rows(ptr, n, heads, hubs, [&](int64_t i, int64_t h0, int64_t h1) {
    const int64_t nh = h1 - h0, begin = ptr[i], deg = ptr[i + 1] - begin;
    T* scratch = gat_scratch<T>(3 * nh + exp_capacity(kGatChunk * nh));
    T* __restrict row_max = scratch;
    T* __restrict row_sum = scratch + nh;
    T* __restrict keep = scratch + 2 * nh;  // this edge's dropout scales
    T* __restrict prob = scratch + 3 * nh;  // [chunk, nh]
    const int64_t* __restrict nbr = idx + begin;
    const T* __restrict src = a_src + h0;  // src[j * heads + h]
    const T* __restrict dst = a_dst + i * heads + h0;
    for (int64_t h = 0; h < nh; ++h) row_max[h] = -std::numeric_limits<T>::infinity();
    for (int64_t k = 0; k < deg; ++k) {
      const int64_t j = nbr[k];
      if (j < 0 || j >= n) continue;  // validated in Python; never read out of bounds
      max_scores(src + j * heads, dst, slope, nh, row_max);
    }
    zero_fill(row_sum, nh);
    T* __restrict o = out + i * width + h0 * features;
    zero_fill(o, nh * features);
    for (int64_t c0 = 0; c0 < deg; c0 += kGatChunk) {
      const int64_t count = std::min(kGatChunk, deg - c0);
      for (int64_t k = 0; k < count; ++k) {
        const int64_t j = nbr[c0 + k];
        if (j >= 0 && j < n)
          shifted_scores(src + j * heads, dst, row_max, slope, nh, prob + k * nh);
        else
          std::fill(prob + k * nh, prob + (k + 1) * nh, T(0));
      }
      exp_inplace(prob, count * nh);
      for (int64_t k = 0; k < count; ++k) {
        const int64_t j = nbr[c0 + k];
        if (j < 0 || j >= n) continue;
        const T* __restrict xj = x + j * width + h0 * features;
        if (dropout.active()) dropout.scales(begin + c0 + k, heads, h0, nh, keep);
        for (int64_t h = 0; h < nh; ++h) {
          const T p = prob[k * nh + h];
          row_sum[h] += p;  // the softmax's normalizer: every edge, dropped or not
          const T w = dropout.active() ? p * keep[h] : p;
          for (int64_t f = 0; f < features; ++f) o[h * features + f] += w * xj[h * features + f];
        }
      }
    }
    for (int64_t h = 0; h < nh; ++h) {
      const T sum = row_sum[h];
      const T inv = sum > T(0) ? T(1) / sum : T(0);
      for (int64_t f = 0; f < features; ++f) o[h * features + f] *= inv;
      lse[i * heads + h0 + h] = sum > T(0) ? row_max[h] + std::log(sum) : T(0);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> gat_aggregate_fwd(const at::Tensor& rowptr, const at::Tensor& col,
                                                     const at::Tensor& colptr, const at::Tensor& row,
                                                     const at::Tensor& csc_perm, const at::Tensor& hub_rows,
                                                     const at::Tensor& hub_cols, const at::Tensor& x_,
                                                     const at::Tensor& alpha_src_, const at::Tensor& alpha_dst_,
                                                     double negative_slope, double dropout, int64_t seed) {
  TORCH_CHECK_VALUE(dropout >= 0 && dropout < 1, "dropout must be in [0, 1), got ", dropout);
  const AttentionDropout drop{float(dropout), uint64_t(seed)};
  const at::Tensor x = x_.contiguous();
  const at::Tensor alpha_src = alpha_src_.to(x.scalar_type()).contiguous();
  const at::Tensor alpha_dst = alpha_dst_.to(x.scalar_type()).contiguous();
  const int64_t n = rowptr.numel() - 1;
  check_csr(rowptr, col, n, "rowptr/col");
  CHECK_CPU(x);
  CHECK_CONTIGUOUS(x);
  CHECK_DIM(x, 3);
  CHECK_FLOAT_OR_DOUBLE(x);
  TORCH_CHECK(x.size(0) == n, "x must have num_nodes rows");
  const int64_t heads = x.size(1), features = x.size(2);
  for (const at::Tensor* a : {&alpha_src, &alpha_dst}) {
    TORCH_CHECK(a->device().is_cpu() && a->is_contiguous() && a->scalar_type() == x.scalar_type() &&
                    a->sizes() == at::IntArrayRef({n, heads}),
                "alpha_src / alpha_dst must be contiguous [num_nodes, heads] tensors with the dtype of x");
  }
  at::Tensor out = empty_output_like(x);
  at::Tensor lse = at::empty({n, heads}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gat_aggregate_fwd", [&] {
    gat_forward<scalar_t>(rowptr.data_ptr<int64_t>(), col.data_ptr<int64_t>(), x.data_ptr<scalar_t>(),
                          alpha_src.data_ptr<scalar_t>(), alpha_dst.data_ptr<scalar_t>(), scalar_t(negative_slope),
                          drop, n, heads, features, hub_rows, out.data_ptr<scalar_t>(), lse.data_ptr<scalar_t>());
  });
  return {out, lse};
}

// With p = exp(e - lse_i), dp = <g_i, x_j> k_ij (k the edge's dropout scale, 1 without dropout),
// delta_i = <g_i, out_i>: de = p (dp - delta_i) and ds = de * leaky'(raw). grad_alpha_dst[i] sums
// ds over in-edges (CSR pass); grad_x[j] sums p k g_i and grad_alpha_src[j] sums ds over
// out-edges (CSC pass, recomputing p, k and dp; csc_perm gives an entry's CSR position, k's key).
std::tuple<at::Tensor, at::Tensor, at::Tensor> gat_aggregate_bwd(
    const at::Tensor& grad_out, const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& colptr,
    const at::Tensor& row, const at::Tensor& csc_perm, const at::Tensor& hub_rows, const at::Tensor& hub_cols,
    const at::Tensor& x_, const at::Tensor& alpha_src_, const at::Tensor& alpha_dst_, const at::Tensor& out,
    const at::Tensor& lse, double negative_slope, double dropout, int64_t seed) {
  TORCH_CHECK_VALUE(dropout >= 0 && dropout < 1, "dropout must be in [0, 1), got ", dropout);
  const AttentionDropout drop{float(dropout), uint64_t(seed)};
  const int64_t n = rowptr.numel() - 1;
  const at::Tensor x = x_.contiguous();
  const at::Tensor alpha_src = alpha_src_.to(x.scalar_type()).contiguous();
  const at::Tensor alpha_dst = alpha_dst_.to(x.scalar_type()).contiguous();
  check_csr(rowptr, col, n, "rowptr/col");
  check_csr(colptr, row, n, "colptr/row");
  CHECK_CPU(x);
  CHECK_CONTIGUOUS(x);
  CHECK_DIM(x, 3);
  CHECK_FLOAT_OR_DOUBLE(x);
  TORCH_CHECK(x.size(0) == n, "x must have num_nodes rows");
  const int64_t heads = x.size(1), features = x.size(2), width = heads * features;
  const at::Tensor g = grad_out.contiguous();
  TORCH_CHECK(g.sizes() == x.sizes() && out.sizes() == x.sizes() && g.scalar_type() == x.scalar_type() &&
                  out.scalar_type() == x.scalar_type() && out.is_contiguous(),
              "grad_out and out must match x");
  for (const at::Tensor* a : {&alpha_src, &alpha_dst, &lse})
    TORCH_CHECK(a->is_contiguous() && a->scalar_type() == x.scalar_type() && a->sizes() == at::IntArrayRef({n, heads}),
                "alpha_src, alpha_dst and lse must be contiguous [num_nodes, heads] tensors with the dtype of x");
  at::Tensor grad_x = empty_output_like(x), grad_src = at::empty_like(alpha_src), grad_dst = at::empty_like(alpha_dst);
  at::Tensor delta = at::empty({n, heads}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gat_aggregate_bwd", [&] {
    using T = scalar_t;
    const T slope = T(negative_slope);
    const T *px = x.data_ptr<T>(), *pg = g.data_ptr<T>(), *po = out.data_ptr<T>(), *as = alpha_src.data_ptr<T>(),
            *ad = alpha_dst.data_ptr<T>(), *pl = lse.data_ptr<T>();
    T *pd = delta.data_ptr<T>(), *gx = grad_x.data_ptr<T>(), *gs = grad_src.data_ptr<T>(), *gd = grad_dst.data_ptr<T>();
    // p of edges (j -> i) of one row, heads h0..h1, into prob[q * nh + h]: one exp8 sweep (see
    // gat_forward). src_of(q) / dst_of(q) name the edge's ends; an invalid edge is skipped later.
    auto edge_probs = [&](int64_t count, int64_t h0, int64_t nh, T* __restrict prob, auto src_of, auto dst_of) {
      for (int64_t q = 0; q < count; ++q) {
        const int64_t j = src_of(q), i = dst_of(q);
        if (j >= 0 && j < n && i >= 0 && i < n)
          shifted_scores(as + j * heads + h0, ad + i * heads + h0, pl + i * heads + h0, slope, nh, prob + q * nh);
        else
          std::fill(prob + q * nh, prob + (q + 1) * nh, T(0));
      }
      exp_inplace(prob, count * nh);
    };
    // acc[h] += ds of edge (j -> i) at heads h0 + h, given p and dp = <grad_out[i], x[j]> per head
    auto add_edge_ds = [&](int64_t i, int64_t j, int64_t h0, int64_t nh, const T* p, const T* dp, T* acc) {
      add_score_grads(as + j * heads + h0, ad + i * heads + h0, p, dp, pd + i * heads + h0, slope, nh, acc);
    };
    const int64_t* ptr = rowptr.data_ptr<int64_t>();
    const int64_t* idx = col.data_ptr<int64_t>();
    for_rows(ptr, n, heads, hub_rows, [&](int64_t i, int64_t h0, int64_t h1) {
      const int64_t nh = h1 - h0, begin = ptr[i], deg = ptr[i + 1] - begin;
      head_dots(pg + i * width + h0 * features, po + i * width + h0 * features, nh, features, pd + i * heads + h0);
      T* scratch = gat_scratch<T>(3 * nh + exp_capacity(kGatChunk * nh));
      T* __restrict acc = scratch;
      T* __restrict dp = scratch + nh;
      T* __restrict keep = scratch + 2 * nh;
      T* __restrict prob = scratch + 3 * nh;
      zero_fill(acc, nh);
      for (int64_t c0 = 0; c0 < deg; c0 += kGatChunk) {
        const int64_t count = std::min(kGatChunk, deg - c0);
        edge_probs(count, h0, nh, prob, [&](int64_t q) { return idx[begin + c0 + q]; }, [&](int64_t) { return i; });
        for (int64_t q = 0; q < count; ++q) {  // per head, edges in order: the sums' order
          const int64_t j = idx[begin + c0 + q];
          if (j < 0 || j >= n) continue;
          head_dots(pg + i * width + h0 * features, px + j * width + h0 * features, nh, features, dp);
          if (drop.active()) {
            drop.scales(begin + c0 + q, heads, h0, nh, keep);
            for (int64_t h = 0; h < nh; ++h) dp[h] *= keep[h];
          }
          add_edge_ds(i, j, h0, nh, prob + q * nh, dp, acc);
        }
      }
      for (int64_t h = 0; h < nh; ++h) gd[i * heads + h0 + h] = acc[h];
    });
    const int64_t* cptr = colptr.data_ptr<int64_t>();
    const int64_t* ridx = row.data_ptr<int64_t>();
    const int64_t* csr_of = csc_perm.data_ptr<int64_t>();
    for_rows(cptr, n, heads, hub_cols, [&](int64_t j, int64_t h0, int64_t h1) {
      const int64_t nh = h1 - h0, begin = cptr[j], deg = cptr[j + 1] - begin;
      T* scratch = gat_scratch<T>(3 * nh + exp_capacity(kGatChunk * nh));
      T* __restrict acc = scratch;
      T* __restrict dp = scratch + nh;
      T* __restrict keep = scratch + 2 * nh;
      T* __restrict prob = scratch + 3 * nh;
      T* __restrict gxj = gx + j * width + h0 * features;  // [nh, features]
      zero_fill(acc, nh);
      zero_fill(gxj, nh * features);
      for (int64_t c0 = 0; c0 < deg; c0 += kGatChunk) {
        const int64_t count = std::min(kGatChunk, deg - c0);
        edge_probs(count, h0, nh, prob, [&](int64_t) { return j; }, [&](int64_t q) { return ridx[begin + c0 + q]; });
        for (int64_t q = 0; q < count; ++q) {  // per head and feature, edges in order: the sums' order
          const int64_t i = ridx[begin + c0 + q];
          if (i < 0 || i >= n) continue;
          const T* __restrict gi = pg + i * width + h0 * features;
          head_dots(gi, px + j * width + h0 * features, nh, features, dp);
          if (drop.active()) {
            drop.scales(csr_of[begin + c0 + q], heads, h0, nh, keep);
            for (int64_t h = 0; h < nh; ++h) dp[h] *= keep[h];
          }
          add_edge_ds(i, j, h0, nh, prob + q * nh, dp, acc);
          for (int64_t h = 0; h < nh; ++h) {
            const T p = drop.active() ? prob[q * nh + h] * keep[h] : prob[q * nh + h];
            for (int64_t f = 0; f < features; ++f) gxj[h * features + f] += p * gi[h * features + f];
          }
        }
      }
      for (int64_t h = 0; h < nh; ++h) gs[j * heads + h0 + h] = acc[h];
    });
  });
  return {grad_x, grad_src.to(alpha_src_.scalar_type()), grad_dst.to(alpha_dst_.scalar_type())};
}

}  // namespace
