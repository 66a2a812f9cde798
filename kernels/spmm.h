// Launchers of the CUDA GNN kernels (kernels/spmm.cu), shared with the torch-side host glue
// csrc/cuda/spmm.cpp. Plain pointers + sizes + a cudaStream_t: no torch headers here, so that
// `nvcc -c` compiles the kernels on machines whose torch has no CUDA headers (docs/ARCHITECTURE.md).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace sslfast::cuda {

// Must equal sslfast.graph.HUB_DEGREE: rows with at least this many edges are listed in the
// Graph's hub lists and run one thread block each (deterministic in-block reduction) instead of
// one warp. A listed row of lower degree still runs on its warp; an unlisted hub row is not
// written (the Graph always lists them).
constexpr int64_t kHubDegree = 2048;

enum class DType : int { Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3 };

// out[r] = row_coef(r) * (sum_k w(k) * nbr_coef(idx[k]) * x[idx[k]] + [self_loops] nbr_coef(r) * x[r])
//   w(k)        = weight[edge_of ? edge_of[k] : k], or 1 without weight (weight has x's dtype)
//   nbr_coef(j) = nbr_scale[j], or 1 / degree of j in nbr_mean_ptr (0 if none), or 1
//   row_coef(r) = row_scale[r], or 1 / degree of r in ptr when row_mean (0 if none), or 1
// Scales are float32 (float64 for float64 x). x and out are [rows, features] row-major.
struct RowSumParams {
  DType dtype;
  const int64_t* ptr;
  const int64_t* idx;
  const int64_t* edge_of;
  const void* weight;
  const void* nbr_scale;
  const int64_t* nbr_mean_ptr;
  const void* row_scale;
  bool row_mean;
  bool self_loops;
  const void* x;
  void* out;
  int64_t rows;
  int64_t x_rows;
  int64_t features;
  const int64_t* hubs;  // rows of degree >= kHubDegree
  int64_t num_hubs;
};
cudaError_t launch_row_sum(const RowSumParams& p, cudaStream_t stream);

// max / min forward: out[r, f] = extreme of w(k) * x[idx[k], f]; arg[r, f] = k (first on ties),
// -1 and out = 0 without in-edges.
cudaError_t launch_extreme(DType dtype, bool is_max, const int64_t* ptr, const int64_t* idx, const void* weight,
                           const void* x, void* out, int64_t* arg, int64_t rows, int64_t x_rows, int64_t features,
                           cudaStream_t stream);

// max / min x-gradient over the transpose: grad_x[j, f] = sum over CSC entries q of column j with
// arg[row[q], f] == edge_of[q] of w(edge_of[q]) * grad[row[q], f].
cudaError_t launch_extreme_grad_x(DType dtype, const int64_t* colptr, const int64_t* row, const int64_t* edge_of,
                                  const void* weight, const int64_t* arg, const void* grad, void* grad_x,
                                  int64_t x_rows, int64_t out_rows, int64_t features, cudaStream_t stream);

// Edge-weight gradient (one warp per destination row, fixed-order warp reduction):
// arg == nullptr: grad_w[k] = (row_mean ? 1 / deg(i) : 1) * <grad[i], x[idx[k]]>;
// otherwise:      grad_w[k] = sum_f [arg[i, f] == k] grad[i, f] * x[idx[k], f].
cudaError_t launch_weight_grad(DType dtype, const int64_t* ptr, const int64_t* idx, bool row_mean, const int64_t* arg,
                               const void* grad, const void* x, void* grad_w, int64_t rows, int64_t x_rows,
                               int64_t features, cudaStream_t stream);

// Fused GAT aggregation, x [N, H, F] row-major, alpha_src / alpha_dst [N, H] in x's dtype,
// lse [N, H] in the accumulation type (float32; float64 for float64): for target i and head h,
// out[i, h] = sum_k softmax_k(leaky(alpha_src[j_k, h] + alpha_dst[i, h])) d_kh x[j_k, h] (online
// softmax, one warp per row), d_kh the attention dropout of edge k (1 / (1 - dropout) when
// uniform(seed, k * heads + h) >= dropout, else 0; 1 without dropout: kernels/random.h);
// lse[i, h] = the row's log-sum-exp (0 without in-edges).
cudaError_t launch_gat_forward(DType dtype, const int64_t* ptr, const int64_t* idx, const void* x,
                               const void* alpha_src, const void* alpha_dst, double negative_slope, double dropout,
                               uint64_t seed, void* out, void* lse, int64_t n, int64_t heads, int64_t features,
                               cudaStream_t stream);

// Its backward, by recompute: delta (scratch, [N, H] in the accumulation type: float32, float64
// for float64) = <grad_i, out_i>; a CSR pass writes grad_alpha_dst, a CSC pass (edge_of = the CSR
// position of each CSC entry: the dropout's key) writes grad_x and grad_alpha_src. No atomics.
cudaError_t launch_gat_backward(DType dtype, const int64_t* ptr, const int64_t* idx, const int64_t* colptr,
                                const int64_t* row, const int64_t* edge_of, const void* grad, const void* x,
                                const void* alpha_src, const void* alpha_dst, const void* out, const void* lse,
                                double negative_slope, double dropout, uint64_t seed, void* delta, void* grad_x,
                                void* grad_alpha_src, void* grad_alpha_dst, int64_t n, int64_t heads, int64_t features,
                                cudaStream_t stream);

}  // namespace sslfast::cuda
