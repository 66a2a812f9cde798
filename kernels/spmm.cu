// CUDA GNN kernels: SpMM sum / mean (and GCN aggregation, SDDMM's backward, and every x-gradient
// over the transpose) as one weighted row-sum kernel, max / min with argmax, the edge-weight
// gradient (also SDDMM's forward), and the fused GAT aggregation (online softmax) + its backward.
// Math: sslfast/reference/gnn.py; contract: kernels/spmm.h. Plain CUDA, no torch headers.
//
// Layout: one warp per destination row, lanes across features with 16- or 8-byte vector loads when
// the feature count and pointers allow; the warp loads 32 (index, coefficient) pairs at once,
// broadcasts them with shuffles and keeps 4 gathers in flight per lane. Rows of degree >=
// kHubDegree get a whole block per feature tile in the same launch (8 warps take contiguous
// ranges of about an eighth of the edges each; the 8 partial sums are added in warp order through
// shared memory), so a power-law hub does not serialize one warp. Every output element has one
// writer (a hub listed twice: two writers of the same bits) and a fixed summation order: bitwise
// deterministic, no atomics. Half types accumulate in float32.
#include "spmm.h"

#include "random.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

namespace sslfast::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kThreads = 256;
constexpr int kHubWarps = kThreads / kWarp;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kUnroll = 4;  // gathers in flight per lane in the row sum (sum_edges)
static_assert(kWarp % kUnroll == 0, "sum_edges reads shuffle lanes t0 + u < kWarp");

template <typename T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_acc(typename AccOf<T>::type v);
template <>
__device__ __forceinline__ float from_acc<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ double from_acc<double>(double v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_acc<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <typename T>
struct RowSum {
  using A = typename AccOf<T>::type;
  const int64_t* ptr;
  const int64_t* idx;
  const int64_t* edge_of;
  const T* weight;
  const A* nbr_scale;
  const int64_t* nbr_mean_ptr;
  const A* row_scale;
  bool row_mean;
  bool self_loops;
  const T* x;
  T* out;
  int64_t rows, x_rows, features;

  __device__ __forceinline__ A nbr_coef(int64_t j) const {
    if (nbr_scale) return nbr_scale[j];
    if (nbr_mean_ptr) {
      const int64_t d = nbr_mean_ptr[j + 1] - nbr_mean_ptr[j];
      return d > 0 ? A(1) / A(d) : A(0);
    }
    return A(1);
  }
  __device__ __forceinline__ A edge_coef(int64_t k, int64_t j) const {
    const A w = weight ? to_acc(weight[edge_of ? edge_of[k] : k]) : A(1);
    return w * nbr_coef(j);
  }
  __device__ __forceinline__ A row_coef(int64_t r) const {
    if (row_scale) return row_scale[r];
    if (row_mean) {
      const int64_t d = ptr[r + 1] - ptr[r];
      return d > 0 ? A(1) / A(d) : A(0);
    }
    return A(1);
  }
};

template <typename T, int V>
__device__ __forceinline__ void load_pack(const T* src, typename AccOf<T>::type* dst) {
  const Pack<T, V> pack = *reinterpret_cast<const Pack<T, V>*>(src);
#pragma unroll
  for (int v = 0; v < V; ++v) dst[v] = to_acc(pack.v[v]);
}

// acc = the sum of the edges [kbegin, kend) of one row, in edge order, at this lane's V features
// f0 = base + lane * V of the feature tile at base; returns whether the lane has features there
// (V > 1 only when features % V == 0). The warp loads 32 (index, coefficient) pairs at once and
// broadcasts them with shuffles, then issues kUnroll gathers before their FMAs, so a long row
// keeps kUnroll loads in flight per lane instead of one (the one-load loop ran power-law graphs
// at 0.23x cuSPARSE on an H100, which benchmarks/NOTES.md estimates to be the latency of one
// gather per edge). The order of the FMAs is the edge order whatever kUnroll is.
template <typename T, int V>
__device__ __forceinline__ bool sum_edges(const RowSum<T>& p, int64_t kbegin, int64_t kend, int64_t base, int lane,
                                          typename AccOf<T>::type* acc) {
  using A = typename AccOf<T>::type;
  const int64_t f0 = base + int64_t(lane) * V;
  const bool active = f0 < p.features;
#pragma unroll
  for (int v = 0; v < V; ++v) acc[v] = A(0);
  for (int64_t kb = kbegin; kb < kend; kb += kWarp) {
    const int64_t k = kb + lane;
    int64_t my_j = -1;  // lanes past kend and out-of-range indices stay -1: skipped below
    A my_c = A(0);
    if (k < kend) {
      const int64_t j = p.idx[k];
      if (j >= 0 && j < p.x_rows) {
        my_j = j;
        my_c = p.edge_coef(k, j);
      }
    }
    const int n = int(kend - kb < kWarp ? kend - kb : kWarp);
    for (int t0 = 0; t0 < n; t0 += kUnroll) {  // t0 + u <= 31: kWarp % kUnroll == 0
      int64_t j[kUnroll];
      A c[kUnroll];
      Pack<T, V> xv[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        j[u] = __shfl_sync(kFullMask, my_j, t0 + u);
        c[u] = __shfl_sync(kFullMask, my_c, t0 + u);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
        if (j[u] >= 0 && active) xv[u] = *reinterpret_cast<const Pack<T, V>*>(p.x + j[u] * p.features + f0);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (j[u] < 0 || !active) continue;
#pragma unroll
        for (int v = 0; v < V; ++v) acc[v] += c[u] * to_acc(xv[u].v[v]);
      }
    }
  }
  return active;
}

// Self loop, row coefficient, store: out[r, f0 .. f0 + V) from the row's edge sum.
template <typename T, int V>
__device__ __forceinline__ void finish_row(const RowSum<T>& p, int64_t r, int64_t f0, typename AccOf<T>::type* acc) {
  using A = typename AccOf<T>::type;
  if (p.self_loops && r < p.x_rows) {
    const A self_coef = p.nbr_coef(r);
    A xv[V];
    load_pack<T, V>(p.x + r * p.features + f0, xv);
#pragma unroll
    for (int v = 0; v < V; ++v) acc[v] += self_coef * xv[v];
  }
  const A rc = p.row_coef(r);
  Pack<T, V> result;
#pragma unroll
  for (int v = 0; v < V; ++v) result.v[v] = from_acc<T>(rc * acc[v]);
  *reinterpret_cast<Pack<T, V>*>(p.out + r * p.features + f0) = result;
}

// One feature tile [base, base + 32 V) of a hub row (degree >= kHubDegree) on a whole block: warp w
// sums the w-th contiguous chunk of the edges (an eighth, rounded up to whole 32-edge batches), and
// the 8 partial sums are added in warp order through shared memory: deterministic, no atomics.
template <typename T, int V>
__device__ __forceinline__ void hub_row(const RowSum<T>& p, int64_t r, int64_t base) {
  using A = typename AccOf<T>::type;
  __shared__ A partial[kHubWarps][kWarp * V];
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t begin = p.ptr[r], end = p.ptr[r + 1];
  const int64_t chunk = ((end - begin + kHubWarps - 1) / kHubWarps + kWarp - 1) / kWarp * kWarp;
  const int64_t kb = begin + warp * chunk < end ? begin + warp * chunk : end;
  const int64_t ke = kb + chunk < end ? kb + chunk : end;
  A acc[V];
  const bool active = sum_edges<T, V>(p, kb, ke, base, lane, acc);
#pragma unroll
  for (int v = 0; v < V; ++v) partial[warp][lane * V + v] = acc[v];
  __syncthreads();
  if (warp != 0 || !active) return;
#pragma unroll
  for (int v = 0; v < V; ++v) {
    A sum = A(0);
#pragma unroll
    for (int w = 0; w < kHubWarps; ++w) sum += partial[w][lane * V + v];
    acc[v] = sum;
  }
  finish_row<T, V>(p, r, base + int64_t(lane) * V, acc);
}

// One launch for the whole row sum: blocks [0, hub_blocks) take one (hub row, feature tile) each
// (first, so the long ones start early and overlap the rest); every later block takes kHubWarps
// ordinary rows, one warp each (rows of degree >= kHubDegree are skipped there: they are the hub
// blocks' work).
template <typename T, int V>
__global__ void __launch_bounds__(kThreads) row_sum_kernel(RowSum<T> p, const int64_t* hubs, int64_t hub_blocks) {
  using A = typename AccOf<T>::type;
  const int64_t tile_width = int64_t(kWarp) * V, tiles = (p.features + tile_width - 1) / tile_width;
  if (int64_t(blockIdx.x) < hub_blocks) {        // block-uniform
    const int64_t r = hubs[blockIdx.x / tiles];  // a listed row of lower degree is left to its warp
    if (r >= 0 && r < p.rows && p.ptr[r + 1] - p.ptr[r] >= kHubDegree)
      hub_row<T, V>(p, r, (blockIdx.x % tiles) * tile_width);
    return;
  }
  const int64_t r = ((int64_t(blockIdx.x) - hub_blocks) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (r >= p.rows) return;  // warp-uniform
  const int64_t begin = p.ptr[r], end = p.ptr[r + 1];
  if (end - begin >= kHubDegree) return;
  for (int64_t base = 0; base < p.features; base += tile_width) {
    A acc[V];
    if (sum_edges<T, V>(p, begin, end, base, lane, acc)) finish_row<T, V>(p, r, base + int64_t(lane) * V, acc);
  }
}

template <typename T, bool IsMax>
__global__ void __launch_bounds__(kThreads)
    extreme_kernel(const int64_t* ptr, const int64_t* idx, const T* weight, const T* x, T* out, int64_t* arg,
                   int64_t rows, int64_t x_rows, int64_t features) {
  using A = typename AccOf<T>::type;
  const int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (r >= rows) return;
  const int64_t begin = ptr[r], end = ptr[r + 1];
  for (int64_t f = lane; f < features; f += kWarp) {
    A best = A(0);
    int64_t best_k = -1;
    for (int64_t k = begin; k < end; ++k) {
      const int64_t j = idx[k];
      if (j < 0 || j >= x_rows) continue;
      const A w = weight ? to_acc(weight[k]) : A(1);
      const A v = w * to_acc(x[j * features + f]);
      const bool better = IsMax ? (v > best) : (v < best);
      if (best_k < 0 || better || (isnan(v) && !isnan(best))) {
        best = v;
        best_k = k;
      }
    }
    out[r * features + f] = from_acc<T>(best_k < 0 ? A(0) : best);
    arg[r * features + f] = best_k;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    extreme_grad_x_kernel(const int64_t* colptr, const int64_t* row, const int64_t* edge_of, const T* weight,
                          const int64_t* arg, const T* grad, T* grad_x, int64_t x_rows, int64_t out_rows,
                          int64_t features) {
  using A = typename AccOf<T>::type;
  const int64_t j = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (j >= x_rows) return;
  const int64_t begin = colptr[j], end = colptr[j + 1];
  for (int64_t f = lane; f < features; f += kWarp) {
    A acc = A(0);
    for (int64_t q = begin; q < end; ++q) {
      const int64_t i = row[q], k = edge_of[q];
      if (i < 0 || i >= out_rows) continue;
      if (arg[i * features + f] != k) continue;
      const A w = weight ? to_acc(weight[k]) : A(1);
      acc += w * to_acc(grad[i * features + f]);
    }
    grad_x[j * features + f] = from_acc<T>(acc);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    weight_grad_kernel(const int64_t* ptr, const int64_t* idx, bool row_mean, const int64_t* arg, const T* grad,
                       const T* x, T* grad_w, int64_t rows, int64_t x_rows, int64_t features) {
  using A = typename AccOf<T>::type;
  const int64_t i = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (i >= rows) return;
  const int64_t begin = ptr[i], end = ptr[i + 1];
  const A scale = row_mean ? (end > begin ? A(1) / A(end - begin) : A(0)) : A(1);
  for (int64_t k = begin; k < end; ++k) {
    const int64_t j = idx[k];
    const bool valid = j >= 0 && j < x_rows;  // warp-uniform
    A acc = A(0);
    if (valid) {
      for (int64_t f = lane; f < features; f += kWarp) {
        if (arg && arg[i * features + f] != k) continue;
        acc += to_acc(grad[i * features + f]) * to_acc(x[j * features + f]);
      }
    }
#pragma unroll
    for (int offset = kWarp / 2; offset > 0; offset /= 2) acc += __shfl_xor_sync(kFullMask, acc, offset);
    if (lane == 0) grad_w[k] = from_acc<T>(arg ? acc : scale * acc);
  }
}

// ---------------------------------------------------------------- fused GAT

template <typename A>
__device__ __forceinline__ A leaky(A v, A slope) {
  return v > A(0) ? v : slope * v;
}

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

__device__ __forceinline__ float exp_acc(float v) { return __expf(v); }
__device__ __forceinline__ double exp_acc(double v) { return exp(v); }
__device__ __forceinline__ float log_acc(float v) { return __logf(v); }
__device__ __forceinline__ double log_acc(double v) { return log(v); }

// One warp per target row; per head, lanes over 32-feature chunks; every lane computes the same
// edge score, so the online-softmax state is warp-uniform.
// Attention dropout: the weight of edge e (CSR position) at head h is scaled by 1 / (1 - p) when
// kept, 0 when dropped; uniform(seed, e * heads + h) >= p keeps it (kernels/random.h), the same
// decision as the CPU kernels', regenerated in the backward.
struct GatDropout {
  float p;
  uint64_t seed;
  __device__ __forceinline__ float scale(int64_t e, int64_t heads, int64_t h) const {
    if (p <= 0.0f) return 1.0f;
    return sslfast::hash_keep(seed, uint64_t(e * heads + h), p) ? 1.0f / (1.0f - p) : 0.0f;
  }
};

template <typename T>
__global__ void __launch_bounds__(kThreads)
    gat_forward_kernel(const int64_t* ptr, const int64_t* idx, const T* x, const T* a_src, const T* a_dst,
                       double slope_f, GatDropout dropout, T* out, typename AccOf<T>::type* lse, int64_t n,
                       int64_t heads, int64_t features) {
  using A = typename AccOf<T>::type;
  const int64_t i = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (i >= n) return;
  const A slope = A(slope_f);
  const int64_t begin = ptr[i], end = ptr[i + 1], width = heads * features;
  for (int64_t h = 0; h < heads; ++h) {
    const A dst_score = to_acc(a_dst[i * heads + h]);
    for (int64_t f0 = 0; f0 < features; f0 += kWarp) {
      const int64_t f = f0 + lane;
      A run_max = A(0), run_sum = A(0), acc = A(0);
      bool any = false;
      for (int64_t k = begin; k < end; ++k) {
        const int64_t j = idx[k];
        if (j < 0 || j >= n) continue;
        const A e = leaky(to_acc(a_src[j * heads + h]) + dst_score, slope);
        if (!any || e > run_max) {
          const A scale = any ? exp_acc(run_max - e) : A(0);
          run_sum *= scale;
          acc *= scale;
          run_max = e;
          any = true;
        }
        const A p = exp_acc(e - run_max);
        run_sum += p;  // the softmax's normalizer: every edge, dropped or not
        if (f < features) acc += p * A(dropout.scale(k, heads, h)) * to_acc(x[j * width + h * features + f]);
      }
      if (f < features) out[i * width + h * features + f] = from_acc<T>(run_sum > A(0) ? acc / run_sum : A(0));
      if (f0 == 0 && lane == 0) lse[i * heads + h] = run_sum > A(0) ? run_max + log_acc(run_sum) : A(0);
    }
  }
}

// Edge (j -> i) at CSR position e, head h: p = exp(leaky(raw) - lse_i), its dropout scale k and
// the warp-reduced dp = <grad_i, x_j> k.
template <typename T>
struct GatEdge {
  using A = typename AccOf<T>::type;
  const T *grad, *x, *a_src, *a_dst;
  const A *lse, *delta;
  A slope;
  GatDropout dropout;
  int64_t heads, features;

  // (p k, ds) for the edge; all lanes of the warp must call it together.
  __device__ __forceinline__ void terms(int64_t i, int64_t j, int64_t e, int64_t h, int lane, A& pk, A& ds) const {
    const int64_t width = heads * features;
    const A raw = to_acc(a_src[j * heads + h]) + to_acc(a_dst[i * heads + h]);
    const A p = exp_acc(leaky(raw, slope) - lse[i * heads + h]);
    const A k = A(dropout.scale(e, heads, h));
    A dp = A(0);
    for (int64_t f = lane; f < features; f += kWarp)
      dp += to_acc(grad[i * width + h * features + f]) * to_acc(x[j * width + h * features + f]);
    dp = warp_sum(dp);
    pk = p * k;
    ds = p * (dp * k - delta[i * heads + h]) * (raw > A(0) ? A(1) : slope);
  }
};

template <typename T>
__global__ void __launch_bounds__(kThreads)
    gat_delta_kernel(const T* grad, const T* out, typename AccOf<T>::type* delta, int64_t n, int64_t heads,
                     int64_t features) {
  using A = typename AccOf<T>::type;
  const int64_t pair = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;  // (i, h)
  const int lane = threadIdx.x % kWarp;
  if (pair >= n * heads) return;
  A acc = A(0);
  for (int64_t f = lane; f < features; f += kWarp)
    acc += to_acc(grad[pair * features + f]) * to_acc(out[pair * features + f]);
  acc = warp_sum(acc);
  if (lane == 0) delta[pair] = acc;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    gat_grad_dst_kernel(const int64_t* ptr, const int64_t* idx, GatEdge<T> e, T* grad_dst, int64_t n) {
  using A = typename AccOf<T>::type;
  const int64_t i = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (i >= n) return;
  for (int64_t h = 0; h < e.heads; ++h) {
    A acc = A(0);
    for (int64_t k = ptr[i]; k < ptr[i + 1]; ++k) {
      const int64_t j = idx[k];
      if (j < 0 || j >= n) continue;  // warp-uniform
      A pk, ds;
      e.terms(i, j, k, h, lane, pk, ds);
      acc += ds;
    }
    if (lane == 0) grad_dst[i * e.heads + h] = from_acc<T>(acc);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    gat_grad_src_kernel(const int64_t* colptr, const int64_t* row, const int64_t* edge_of, GatEdge<T> e, T* grad_x,
                        T* grad_src, int64_t n) {
  using A = typename AccOf<T>::type;
  const int64_t j = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (j >= n) return;
  const int64_t width = e.heads * e.features;
  for (int64_t h = 0; h < e.heads; ++h) {
    for (int64_t f0 = 0; f0 < e.features; f0 += kWarp) {
      const int64_t f = f0 + lane;
      A acc_x = A(0), acc_s = A(0);
      for (int64_t q = colptr[j]; q < colptr[j + 1]; ++q) {
        const int64_t i = row[q];
        if (i < 0 || i >= n) continue;  // warp-uniform
        A pk, ds;
        e.terms(i, j, edge_of[q], h, lane, pk, ds);
        acc_s += ds;
        if (f < e.features) acc_x += pk * to_acc(e.grad[i * width + h * e.features + f]);
      }
      if (f < e.features) grad_x[j * width + h * e.features + f] = from_acc<T>(acc_x);
      if (f0 == 0 && lane == 0) grad_src[j * e.heads + h] = from_acc<T>(acc_s);
    }
  }
}

int64_t warp_blocks(int64_t rows) { return (rows * kWarp + kThreads - 1) / kThreads; }

bool aligned(const void* p, uintptr_t bytes) { return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0; }

template <typename T>
cudaError_t row_sum(const RowSumParams& q, cudaStream_t stream) {
  using A = typename AccOf<T>::type;
  RowSum<T> p{q.ptr,
              q.idx,
              q.edge_of,
              static_cast<const T*>(q.weight),
              static_cast<const A*>(q.nbr_scale),
              q.nbr_mean_ptr,
              static_cast<const A*>(q.row_scale),
              q.row_mean,
              q.self_loops,
              static_cast<const T*>(q.x),
              static_cast<T*>(q.out),
              q.rows,
              q.x_rows,
              q.features};
  if (q.rows == 0 || q.features == 0) return cudaSuccess;
  // Lanes across features with 16-byte loads, or 8-byte ones where those cover the features in one
  // pass of the warp (F <= 32 * 8 / sizeof(T)): the same passes, all lanes busy, half the
  // registers per lane. Scalar where the feature count or pointers allow neither.
  constexpr int V16 = int(16 / sizeof(T)), V8 = int(8 / sizeof(T));
  const auto fits = [&](int v, uintptr_t align) {
    return q.features % v == 0 && aligned(q.x, align) && aligned(q.out, align);
  };
  const auto launch = [&](auto v) {
    constexpr int kV = decltype(v)::value;
    const int64_t tiles = (q.features + int64_t(kWarp) * kV - 1) / (int64_t(kWarp) * kV);
    const int64_t hub_blocks = q.num_hubs * tiles;
    row_sum_kernel<T, kV>
        <<<dim3(unsigned(hub_blocks + warp_blocks(q.rows))), kThreads, 0, stream>>>(p, q.hubs, hub_blocks);
  };
  if (fits(V8, 8) && q.features <= int64_t(kWarp) * V8)
    launch(std::integral_constant<int, V8>{});
  else if (fits(V16, 16))
    launch(std::integral_constant<int, V16>{});
  else if (fits(V8, 8))
    launch(std::integral_constant<int, V8>{});
  else
    launch(std::integral_constant<int, 1>{});
  return cudaGetLastError();
}

// Calls fn(T{}) with T the C++ type of dtype.
template <typename Fn>
cudaError_t dispatch(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::Float32:
      return fn(float{});
    case DType::Float64:
      return fn(double{});
    case DType::Float16:
      return fn(__half{});
    case DType::BFloat16:
      return fn(__nv_bfloat16{});
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t launch_row_sum(const RowSumParams& p, cudaStream_t stream) {
  return dispatch(p.dtype, [&](auto tag) { return row_sum<decltype(tag)>(p, stream); });
}

cudaError_t launch_extreme(DType dtype, bool is_max, const int64_t* ptr, const int64_t* idx, const void* weight,
                           const void* x, void* out, int64_t* arg, int64_t rows, int64_t x_rows, int64_t features,
                           cudaStream_t stream) {
  if (rows == 0 || features == 0) return cudaSuccess;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    const dim3 grid(unsigned(warp_blocks(rows)));
    if (is_max)
      extreme_kernel<T, true><<<grid, kThreads, 0, stream>>>(ptr, idx, static_cast<const T*>(weight),
                                                             static_cast<const T*>(x), static_cast<T*>(out), arg, rows,
                                                             x_rows, features);
    else
      extreme_kernel<T, false><<<grid, kThreads, 0, stream>>>(ptr, idx, static_cast<const T*>(weight),
                                                              static_cast<const T*>(x), static_cast<T*>(out), arg, rows,
                                                              x_rows, features);
    return cudaGetLastError();
  });
}

cudaError_t launch_extreme_grad_x(DType dtype, const int64_t* colptr, const int64_t* row, const int64_t* edge_of,
                                  const void* weight, const int64_t* arg, const void* grad, void* grad_x,
                                  int64_t x_rows, int64_t out_rows, int64_t features, cudaStream_t stream) {
  if (x_rows == 0 || features == 0) return cudaSuccess;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    extreme_grad_x_kernel<T><<<dim3(unsigned(warp_blocks(x_rows))), kThreads, 0, stream>>>(
        colptr, row, edge_of, static_cast<const T*>(weight), arg, static_cast<const T*>(grad), static_cast<T*>(grad_x),
        x_rows, out_rows, features);
    return cudaGetLastError();
  });
}

cudaError_t launch_weight_grad(DType dtype, const int64_t* ptr, const int64_t* idx, bool row_mean, const int64_t* arg,
                               const void* grad, const void* x, void* grad_w, int64_t rows, int64_t x_rows,
                               int64_t features, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    weight_grad_kernel<T><<<dim3(unsigned(warp_blocks(rows))), kThreads, 0, stream>>>(
        ptr, idx, row_mean, arg, static_cast<const T*>(grad), static_cast<const T*>(x), static_cast<T*>(grad_w), rows,
        x_rows, features);
    return cudaGetLastError();
  });
}

cudaError_t launch_gat_forward(DType dtype, const int64_t* ptr, const int64_t* idx, const void* x,
                               const void* alpha_src, const void* alpha_dst, double negative_slope, double dropout,
                               uint64_t seed, void* out, void* lse, int64_t n, int64_t heads, int64_t features,
                               cudaStream_t stream) {
  if (n == 0 || heads == 0) return cudaSuccess;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    gat_forward_kernel<T><<<dim3(unsigned(warp_blocks(n))), kThreads, 0, stream>>>(
        ptr, idx, static_cast<const T*>(x), static_cast<const T*>(alpha_src), static_cast<const T*>(alpha_dst),
        negative_slope, GatDropout{float(dropout), seed}, static_cast<T*>(out),
        static_cast<typename AccOf<T>::type*>(lse), n, heads, features);
    return cudaGetLastError();
  });
}

cudaError_t launch_gat_backward(DType dtype, const int64_t* ptr, const int64_t* idx, const int64_t* colptr,
                                const int64_t* row, const int64_t* edge_of, const void* grad, const void* x,
                                const void* alpha_src, const void* alpha_dst, const void* out, const void* lse,
                                double negative_slope, double dropout, uint64_t seed, void* delta, void* grad_x,
                                void* grad_alpha_src, void* grad_alpha_dst, int64_t n, int64_t heads, int64_t features,
                                cudaStream_t stream) {
  if (n == 0 || heads == 0) return cudaSuccess;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename AccOf<T>::type;
    A* d = static_cast<A*>(delta);
    gat_delta_kernel<T><<<dim3(unsigned(warp_blocks(n * heads))), kThreads, 0, stream>>>(
        static_cast<const T*>(grad), static_cast<const T*>(out), d, n, heads, features);
    GatEdge<T> e{static_cast<const T*>(grad),
                 static_cast<const T*>(x),
                 static_cast<const T*>(alpha_src),
                 static_cast<const T*>(alpha_dst),
                 static_cast<const A*>(lse),
                 d,
                 A(negative_slope),
                 GatDropout{float(dropout), seed},
                 heads,
                 features};
    const dim3 grid(unsigned(warp_blocks(n)));
    gat_grad_dst_kernel<T><<<grid, kThreads, 0, stream>>>(ptr, idx, e, static_cast<T*>(grad_alpha_dst), n);
    gat_grad_src_kernel<T><<<grid, kThreads, 0, stream>>>(colptr, row, edge_of, e, static_cast<T*>(grad_x),
                                                          static_cast<T*>(grad_alpha_src), n);
    return cudaGetLastError();
  });
}

}  // namespace sslfast::cuda
