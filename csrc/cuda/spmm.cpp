// Host glue of the CUDA GNN kernels: tensors -> kernels/spmm.cu launchers on the current stream,
// registered as TORCH_LIBRARY_IMPL(sslfast, CUDA). Same ops and contract as csrc/cpu/spmm.cpp;
// half types run natively (float32 accumulation), so the scale vectors are float32 for every
// dtype but float64. Compiled only with a CUDA torch (setup.py).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../../kernels/spmm.h"

namespace sslfast::cuda_glue {
namespace {

using sslfast::cuda::DType;

DType dtype_of(const at::Tensor& x) {
  switch (x.scalar_type()) {
    case at::kFloat:
      return DType::Float32;
    case at::kDouble:
      return DType::Float64;
    case at::kHalf:
      return DType::Float16;
    case at::kBFloat16:
      return DType::BFloat16;
    default:
      TORCH_CHECK(false, "x must be float16, bfloat16, float32 or float64, got ", x.scalar_type());
  }
}

at::ScalarType acc_type(const at::Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

void check_cuda_long(const at::Tensor& t, const at::Tensor& x, const char* name) {
  TORCH_CHECK(t.is_cuda() && t.device() == x.device(), name, " must be on the device of x");
  TORCH_CHECK(t.scalar_type() == at::kLong && t.dim() == 1 && t.is_contiguous(), name,
              " must be a contiguous 1-D int64 tensor");
}

void check_graph(const at::Tensor& ptr, const at::Tensor& idx, const at::Tensor& hubs, const at::Tensor& x,
                 const char* name) {
  check_cuda_long(ptr, x, name);
  check_cuda_long(idx, x, name);
  check_cuda_long(hubs, x, "hub list");
  TORCH_CHECK(ptr.numel() == x.size(0) + 1, name, ": offsets must have num_nodes + 1 entries");
}

void check_x(const at::Tensor& x) {
  TORCH_CHECK(x.is_cuda() && x.dim() == 2 && x.is_contiguous(), "x must be a contiguous 2-D CUDA tensor");
  dtype_of(x);
}

void check_weight(const c10::optional<at::Tensor>& weight, const at::Tensor& x, int64_t edges) {
  if (!weight) return;
  TORCH_CHECK(weight->device() == x.device() && weight->dim() == 1 && weight->numel() == edges &&
                  weight->is_contiguous() && weight->scalar_type() == x.scalar_type(),
              "edge_weight must be a contiguous [E] tensor with the device and dtype of x");
}

void check_launch(cudaError_t status) {
  TORCH_CHECK(status == cudaSuccess, "sslfast CUDA kernel launch failed: ", cudaGetErrorString(status));
}

sslfast::cuda::RowSumParams row_sum_params(const at::Tensor& ptr, const at::Tensor& idx, const at::Tensor& hubs,
                                           const at::Tensor& x, at::Tensor& out) {
  sslfast::cuda::RowSumParams p{};
  p.dtype = dtype_of(x);
  p.ptr = ptr.data_ptr<int64_t>();
  p.idx = idx.data_ptr<int64_t>();
  p.x = x.data_ptr();
  p.out = out.data_ptr();
  p.rows = ptr.numel() - 1;
  p.x_rows = x.size(0);
  p.features = x.size(1);
  p.hubs = hubs.data_ptr<int64_t>();
  p.num_hubs = hubs.numel();
  return p;
}

bool is_extreme(c10::string_view reduce) { return reduce == "max" || reduce == "min"; }

void check_reduce(c10::string_view reduce) {
  TORCH_CHECK(reduce == "sum" || reduce == "mean" || is_extreme(reduce),
              "reduce must be one of 'sum', 'mean', 'max', 'min', got '", std::string(reduce), "'");
}

std::tuple<at::Tensor, at::Tensor> spmm_fwd(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& colptr,
                                            const at::Tensor& row, const at::Tensor& csc_perm,
                                            const at::Tensor& hub_rows, const at::Tensor& hub_cols,
                                            const c10::optional<at::Tensor>& weight, const at::Tensor& x,
                                            c10::string_view reduce) {
  check_reduce(reduce);
  check_x(x);
  check_graph(rowptr, col, hub_rows, x, "rowptr/col");
  check_weight(weight, x, col.numel());
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  at::Tensor out = at::empty_like(x);
  const auto long_opts = x.options().dtype(at::kLong);
  if (is_extreme(reduce)) {
    at::Tensor arg = at::empty(x.sizes(), long_opts);
    check_launch(sslfast::cuda::launch_extreme(dtype_of(x), reduce == "max", rowptr.data_ptr<int64_t>(),
                                               col.data_ptr<int64_t>(), weight ? weight->data_ptr() : nullptr,
                                               x.data_ptr(), out.data_ptr(), arg.data_ptr<int64_t>(), x.size(0),
                                               x.size(0), x.size(1), stream));
    return {out, arg};
  }
  auto p = row_sum_params(rowptr, col, hub_rows, x, out);
  p.weight = weight ? weight->data_ptr() : nullptr;
  p.row_mean = reduce == "mean";
  check_launch(sslfast::cuda::launch_row_sum(p, stream));
  return {out, at::empty({0}, long_opts)};
}

std::tuple<at::Tensor, at::Tensor> spmm_bwd(const at::Tensor& grad_out, const at::Tensor& rowptr, const at::Tensor& col,
                                            const at::Tensor& colptr, const at::Tensor& row, const at::Tensor& csc_perm,
                                            const at::Tensor& hub_rows, const at::Tensor& hub_cols,
                                            const c10::optional<at::Tensor>& weight, const at::Tensor& x,
                                            const at::Tensor& arg, c10::string_view reduce, bool weight_requires_grad) {
  check_reduce(reduce);
  check_x(x);
  check_graph(rowptr, col, hub_rows, x, "rowptr/col");
  check_graph(colptr, row, hub_cols, x, "colptr/row");
  check_cuda_long(csc_perm, x, "csc_perm");
  TORCH_CHECK(csc_perm.numel() == col.numel() && row.numel() == col.numel(), "csc_perm/row must have E entries");
  check_weight(weight, x, col.numel());
  const at::Tensor grad = grad_out.contiguous();
  TORCH_CHECK(grad.sizes() == x.sizes() && grad.scalar_type() == x.scalar_type() && grad.device() == x.device(),
              "grad_out must match x");
  const bool extreme = is_extreme(reduce);
  if (extreme)
    TORCH_CHECK(
        arg.sizes() == x.sizes() && arg.scalar_type() == at::kLong && arg.device() == x.device() && arg.is_contiguous(),
        "arg must be a contiguous int64 tensor shaped like x");
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  at::Tensor grad_x = at::empty_like(x);
  const bool want_w = weight.has_value() && weight_requires_grad;
  at::Tensor grad_w = want_w ? at::empty_like(*weight) : at::empty({0}, x.options());
  const void* w = weight ? weight->data_ptr() : nullptr;
  if (extreme) {
    check_launch(sslfast::cuda::launch_extreme_grad_x(
        dtype_of(x), colptr.data_ptr<int64_t>(), row.data_ptr<int64_t>(), csc_perm.data_ptr<int64_t>(), w,
        arg.data_ptr<int64_t>(), grad.data_ptr(), grad_x.data_ptr(), x.size(0), x.size(0), x.size(1), stream));
  } else {  // the transpose: grad_x[j] = sum over out-edges of w * grad[i] (/ deg(i) for mean)
    auto p = row_sum_params(colptr, row, hub_cols, grad, grad_x);
    p.edge_of = csc_perm.data_ptr<int64_t>();
    p.weight = w;
    p.nbr_mean_ptr = reduce == "mean" ? rowptr.data_ptr<int64_t>() : nullptr;
    check_launch(sslfast::cuda::launch_row_sum(p, stream));
  }
  if (want_w)
    check_launch(sslfast::cuda::launch_weight_grad(dtype_of(x), rowptr.data_ptr<int64_t>(), col.data_ptr<int64_t>(),
                                                   reduce == "mean", extreme ? arg.data_ptr<int64_t>() : nullptr,
                                                   grad.data_ptr(), x.data_ptr(), grad_w.data_ptr(), x.size(0),
                                                   x.size(0), x.size(1), stream));
  return {grad_x, grad_w};
}

at::Tensor gcn_run(const at::Tensor& ptr, const at::Tensor& idx, const at::Tensor& hubs, const at::Tensor& dinv,
                   const at::Tensor& x_in, bool self_loops, const char* name) {
  const at::Tensor x = x_in.contiguous();
  check_x(x);
  check_graph(ptr, idx, hubs, x, name);
  TORCH_CHECK(dinv.device() == x.device() && dinv.dim() == 1 && dinv.numel() == x.size(0) && dinv.is_contiguous() &&
                  dinv.scalar_type() == acc_type(x),
              "deg_inv_sqrt must be a contiguous [num_nodes] tensor, float64 for float64 x and float32 otherwise");
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty_like(x);
  auto p = row_sum_params(ptr, idx, hubs, x, out);
  p.nbr_scale = dinv.data_ptr();
  p.row_scale = dinv.data_ptr();
  p.self_loops = self_loops;
  check_launch(sslfast::cuda::launch_row_sum(p, at::cuda::getCurrentCUDAStream()));
  return out;
}

at::Tensor gcn_aggregate_fwd(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& colptr,
                             const at::Tensor& row, const at::Tensor& hub_rows, const at::Tensor& hub_cols,
                             const at::Tensor& deg_inv_sqrt, const at::Tensor& x, bool add_self_loops) {
  return gcn_run(rowptr, col, hub_rows, deg_inv_sqrt, x, add_self_loops, "rowptr/col");
}

at::Tensor gcn_aggregate_bwd(const at::Tensor& grad_out, const at::Tensor& colptr, const at::Tensor& row,
                             const at::Tensor& hub_cols, const at::Tensor& deg_inv_sqrt, bool add_self_loops) {
  return gcn_run(colptr, row, hub_cols, deg_inv_sqrt, grad_out, add_self_loops, "colptr/row");
}

// scores[k] = <a[col[k]], b[i]>: the edge-weight-gradient kernel with grad = b and x = a.
at::Tensor sddmm_fwd(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& colptr, const at::Tensor& row,
                     const at::Tensor& csc_perm, const at::Tensor& hub_rows, const at::Tensor& hub_cols,
                     const at::Tensor& a, const at::Tensor& b) {
  check_x(a);
  check_x(b);
  TORCH_CHECK(a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() && a.device() == b.device(),
              "a and b must have the same shape, dtype and device");
  check_graph(rowptr, col, hub_rows, a, "rowptr/col");
  const c10::cuda::CUDAGuard guard(a.device());
  at::Tensor out = at::empty({col.numel()}, a.options());
  check_launch(sslfast::cuda::launch_weight_grad(dtype_of(a), rowptr.data_ptr<int64_t>(), col.data_ptr<int64_t>(),
                                                 false, nullptr, b.data_ptr(), a.data_ptr(), out.data_ptr(), a.size(0),
                                                 a.size(0), a.size(1), at::cuda::getCurrentCUDAStream()));
  return out;
}

std::tuple<at::Tensor, at::Tensor> sddmm_bwd(const at::Tensor& grad_out, const at::Tensor& rowptr,
                                             const at::Tensor& col, const at::Tensor& colptr, const at::Tensor& row,
                                             const at::Tensor& csc_perm, const at::Tensor& hub_rows,
                                             const at::Tensor& hub_cols, const at::Tensor& a, const at::Tensor& b) {
  check_x(a);
  check_x(b);
  check_graph(rowptr, col, hub_rows, a, "rowptr/col");
  check_graph(colptr, row, hub_cols, a, "colptr/row");
  check_cuda_long(csc_perm, a, "csc_perm");
  const at::Tensor grad = grad_out.contiguous();
  TORCH_CHECK(grad.dim() == 1 && grad.numel() == col.numel() && grad.scalar_type() == a.scalar_type() &&
                  grad.device() == a.device() && csc_perm.numel() == col.numel() && row.numel() == col.numel(),
              "grad_out, row and csc_perm must have E entries (grad_out with the dtype of a)");
  const c10::cuda::CUDAGuard guard(a.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  at::Tensor grad_a = at::empty_like(a), grad_b = at::empty_like(b);
  auto pb = row_sum_params(rowptr, col, hub_rows, a, grad_b);  // grad_b[i] = sum g[k] a[col[k]]
  pb.weight = grad.data_ptr();
  check_launch(sslfast::cuda::launch_row_sum(pb, stream));
  auto pa = row_sum_params(colptr, row, hub_cols, b, grad_a);  // grad_a[j] = sum g[k] b[i]
  pa.edge_of = csc_perm.data_ptr<int64_t>();
  pa.weight = grad.data_ptr();
  check_launch(sslfast::cuda::launch_row_sum(pa, stream));
  return {grad_a, grad_b};
}

void check_gat(const at::Tensor& x, const at::Tensor& alpha_src, const at::Tensor& alpha_dst) {
  TORCH_CHECK(x.is_cuda() && x.dim() == 3 && x.is_contiguous(), "x must be a contiguous [N, H, F] CUDA tensor");
  dtype_of(x);
  for (const at::Tensor* a : {&alpha_src, &alpha_dst})
    TORCH_CHECK(a->device() == x.device() && a->is_contiguous() && a->scalar_type() == x.scalar_type() &&
                    a->sizes() == at::IntArrayRef({x.size(0), x.size(1)}),
                "alpha_src / alpha_dst must be contiguous [num_nodes, heads] tensors with the dtype of x");
}

std::tuple<at::Tensor, at::Tensor> gat_aggregate_fwd(const at::Tensor& rowptr, const at::Tensor& col,
                                                     const at::Tensor& colptr, const at::Tensor& row,
                                                     const at::Tensor& csc_perm, const at::Tensor& hub_rows,
                                                     const at::Tensor& hub_cols, const at::Tensor& x,
                                                     const at::Tensor& alpha_src, const at::Tensor& alpha_dst,
                                                     double negative_slope, double dropout, int64_t seed) {
  TORCH_CHECK_VALUE(dropout >= 0 && dropout < 1, "dropout must be in [0, 1), got ", dropout);
  check_gat(x, alpha_src, alpha_dst);
  check_graph(rowptr, col, hub_rows, x, "rowptr/col");
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty_like(x);
  at::Tensor lse = at::empty({x.size(0), x.size(1)}, x.options().dtype(acc_type(x)));
  check_launch(sslfast::cuda::launch_gat_forward(
      dtype_of(x), rowptr.data_ptr<int64_t>(), col.data_ptr<int64_t>(), x.data_ptr(), alpha_src.data_ptr(),
      alpha_dst.data_ptr(), negative_slope, dropout, uint64_t(seed), out.data_ptr(), lse.data_ptr(), x.size(0),
      x.size(1), x.size(2), at::cuda::getCurrentCUDAStream()));
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gat_aggregate_bwd(
    const at::Tensor& grad_out, const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& colptr,
    const at::Tensor& row, const at::Tensor& csc_perm, const at::Tensor& hub_rows, const at::Tensor& hub_cols,
    const at::Tensor& x, const at::Tensor& alpha_src, const at::Tensor& alpha_dst, const at::Tensor& out,
    const at::Tensor& lse, double negative_slope, double dropout, int64_t seed) {
  TORCH_CHECK_VALUE(dropout >= 0 && dropout < 1, "dropout must be in [0, 1), got ", dropout);
  check_gat(x, alpha_src, alpha_dst);
  check_cuda_long(csc_perm, x, "csc_perm");
  check_graph(rowptr, col, hub_rows, x, "rowptr/col");
  check_graph(colptr, row, hub_cols, x, "colptr/row");
  const at::Tensor grad = grad_out.contiguous();
  TORCH_CHECK(grad.sizes() == x.sizes() && out.sizes() == x.sizes() && grad.scalar_type() == x.scalar_type() &&
                  out.scalar_type() == x.scalar_type() && out.is_contiguous() && grad.device() == x.device() &&
                  out.device() == x.device(),
              "grad_out and out must match x");
  TORCH_CHECK(lse.device() == x.device() && lse.is_contiguous() && lse.scalar_type() == acc_type(x) &&
                  lse.sizes() == alpha_src.sizes(),
              "lse must be the [num_nodes, heads] accumulation-type tensor from gat_aggregate_fwd");
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor grad_x = at::empty_like(x), grad_src = at::empty_like(alpha_src), grad_dst = at::empty_like(alpha_dst);
  at::Tensor delta = at::empty(alpha_src.sizes(), x.options().dtype(acc_type(x)));
  check_launch(sslfast::cuda::launch_gat_backward(
      dtype_of(x), rowptr.data_ptr<int64_t>(), col.data_ptr<int64_t>(), colptr.data_ptr<int64_t>(),
      row.data_ptr<int64_t>(), csc_perm.data_ptr<int64_t>(), grad.data_ptr(), x.data_ptr(), alpha_src.data_ptr(),
      alpha_dst.data_ptr(), out.data_ptr(), lse.data_ptr(), negative_slope, dropout, uint64_t(seed), delta.data_ptr(),
      grad_x.data_ptr(), grad_src.data_ptr(), grad_dst.data_ptr(), x.size(0), x.size(1), x.size(2),
      at::cuda::getCurrentCUDAStream()));
  return {grad_x, grad_src, grad_dst};
}

}  // namespace

TORCH_LIBRARY_IMPL(sslfast, CUDA, m) {
  m.impl("gat_aggregate_fwd", &gat_aggregate_fwd);
  m.impl("gat_aggregate_bwd", &gat_aggregate_bwd);
  m.impl("sddmm_fwd", &sddmm_fwd);
  m.impl("sddmm_bwd", &sddmm_bwd);
  m.impl("spmm_fwd", &spmm_fwd);
  m.impl("spmm_bwd", &spmm_bwd);
  m.impl("gcn_aggregate_fwd", &gcn_aggregate_fwd);
  m.impl("gcn_aggregate_bwd", &gcn_aggregate_bwd);
}

}  // namespace sslfast::cuda_glue
