// Autograd of the GNN public ops (spmm, gcn_aggregate, sddmm, gat_aggregate): each forward runs
// its *_fwd kernel and saves what the *_bwd kernel needs; backward runs over the graph's cached
// transpose (deterministic, no float atomics). Kernels: csrc/cpu/spmm.cpp, csrc/cuda/spmm.cpp ->
// kernels/spmm.cu. The family has no Triton kernels, so only the sslfast:: namespace is
// registered. Conventions: common.h.
#include "common.h"

namespace sslfast::autograd {
namespace {

using B = Native;

// ---------------------------------------------------------------- spmm

using SpmmFwd = std::tuple<Tensor, Tensor>(CT, CT, CT, CT, CT, CT, CT, COT, CT, c10::string_view);
using SpmmBwd = std::tuple<Tensor, Tensor>(CT, CT, CT, CT, CT, CT, CT, CT, COT, CT, CT, c10::string_view, bool);

struct Spmm : torch::autograd::Function<Spmm> {
  static Tensor forward(AutogradContext* ctx, CT rowptr, CT col, CT colptr, CT row, CT csc_perm, CT hub_rows,
                        CT hub_cols, COT weight, CT x, c10::string_view reduce) {
    static const auto fwd = kernel<B, SpmmFwd>("spmm_fwd");
    auto [out, arg] = fwd.call(rowptr, col, colptr, row, csc_perm, hub_rows, hub_cols, weight, x, reduce);
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({rowptr, col, colptr, row, csc_perm, hub_rows, hub_cols, opt(weight), x, arg});
    ctx->saved_data["reduce"] = std::string(reduce);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = kernel<B, SpmmBwd>("spmm_bwd");
    variable_list out(10);
    if (!grads[0].defined()) return out;
    const variable_list s = ctx->get_saved_variables();
    const bool weight_grad = s[7].defined() && ctx->needs_input_grad(7);
    auto [grad_x, grad_w] = bwd.call(grads[0], s[0], s[1], s[2], s[3], s[4], s[5], s[6], maybe(s[7]), s[8], s[9],
                                     ctx->saved_data["reduce"].toStringRef(), weight_grad);
    if (weight_grad) out[7] = grad_w;
    out[8] = grad_x;
    return out;
  }
};

Tensor spmm(CT rowptr, CT col, CT colptr, CT row, CT csc_perm, CT hub_rows, CT hub_cols, COT weight, CT x,
            c10::string_view reduce) {
  return Spmm::apply(rowptr, col, colptr, row, csc_perm, hub_rows, hub_cols, weight, x, reduce);
}

Tensor spmm_inference(CT rowptr, CT col, CT colptr, CT row, CT csc_perm, CT hub_rows, CT hub_cols, COT weight, CT x,
                      c10::string_view reduce) {
  static const auto fwd = kernel<B, SpmmFwd>("spmm_fwd");
  return std::get<0>(fwd.call(rowptr, col, colptr, row, csc_perm, hub_rows, hub_cols, weight, x, reduce));
}

// ---------------------------------------------------------------- gcn_aggregate

using GcnFwd = Tensor(CT, CT, CT, CT, CT, CT, CT, CT, bool);
using GcnBwd = Tensor(CT, CT, CT, CT, CT, bool);

struct Gcn : torch::autograd::Function<Gcn> {
  static Tensor forward(AutogradContext* ctx, CT rowptr, CT col, CT colptr, CT row, CT hub_rows, CT hub_cols,
                        CT deg_inv_sqrt, CT x, bool add_self_loops) {
    static const auto fwd = kernel<B, GcnFwd>("gcn_aggregate_fwd");
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({colptr, row, hub_cols, deg_inv_sqrt});
    ctx->saved_data["loops"] = add_self_loops;
    return fwd.call(rowptr, col, colptr, row, hub_rows, hub_cols, deg_inv_sqrt, x, add_self_loops);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = kernel<B, GcnBwd>("gcn_aggregate_bwd");
    variable_list out(9);
    if (!grads[0].defined()) return out;
    const variable_list s = ctx->get_saved_variables();
    out[7] = bwd.call(grads[0], s[0], s[1], s[2], s[3], ctx->saved_data["loops"].toBool());
    return out;
  }
};

Tensor gcn_aggregate(CT rowptr, CT col, CT colptr, CT row, CT hub_rows, CT hub_cols, CT deg_inv_sqrt, CT x,
                     bool add_self_loops) {
  return Gcn::apply(rowptr, col, colptr, row, hub_rows, hub_cols, deg_inv_sqrt, x, add_self_loops);
}

Tensor gcn_aggregate_inference(CT rowptr, CT col, CT colptr, CT row, CT hub_rows, CT hub_cols, CT deg_inv_sqrt, CT x,
                               bool add_self_loops) {
  static const auto fwd = kernel<B, GcnFwd>("gcn_aggregate_fwd");
  return fwd.call(rowptr, col, colptr, row, hub_rows, hub_cols, deg_inv_sqrt, x, add_self_loops);
}

// ---------------------------------------------------------------- sddmm

using SddmmFwd = Tensor(CT, CT, CT, CT, CT, CT, CT, CT, CT);
using SddmmBwd = std::tuple<Tensor, Tensor>(CT, CT, CT, CT, CT, CT, CT, CT, CT, CT);

// The kernel writes CSR order; the op returns the input edge order (out[e] = csr[inv_perm[e]]),
// so the backward gathers the gradient back with perm (both gathers: no scatter, no atomics).
struct Sddmm : torch::autograd::Function<Sddmm> {
  static Tensor forward(AutogradContext* ctx, CT rowptr, CT col, CT colptr, CT row, CT csc_perm, CT hub_rows,
                        CT hub_cols, CT perm, CT inv_perm, CT a, CT b) {
    static const auto fwd = kernel<B, SddmmFwd>("sddmm_fwd");
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({rowptr, col, colptr, row, csc_perm, hub_rows, hub_cols, perm, a, b});
    return fwd.call(rowptr, col, colptr, row, csc_perm, hub_rows, hub_cols, a, b).index_select(0, inv_perm);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = kernel<B, SddmmBwd>("sddmm_bwd");
    variable_list out(11);
    if (!grads[0].defined()) return out;
    const variable_list s = ctx->get_saved_variables();
    auto [grad_a, grad_b] =
        bwd.call(grads[0].index_select(0, s[7]), s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[8], s[9]);
    out[9] = grad_a;
    out[10] = grad_b;
    return out;
  }
};

Tensor sddmm(CT rowptr, CT col, CT colptr, CT row, CT csc_perm, CT hub_rows, CT hub_cols, CT perm, CT inv_perm, CT a,
             CT b) {
  return Sddmm::apply(rowptr, col, colptr, row, csc_perm, hub_rows, hub_cols, perm, inv_perm, a, b);
}

Tensor sddmm_inference(CT rowptr, CT col, CT colptr, CT row, CT csc_perm, CT hub_rows, CT hub_cols, CT perm,
                       CT inv_perm, CT a, CT b) {
  static const auto fwd = kernel<B, SddmmFwd>("sddmm_fwd");
  return fwd.call(rowptr, col, colptr, row, csc_perm, hub_rows, hub_cols, a, b).index_select(0, inv_perm);
}

// ---------------------------------------------------------------- gat_aggregate

using GatFwd = std::tuple<Tensor, Tensor>(CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, double, double, int64_t);
using GatBwd = std::tuple<Tensor, Tensor, Tensor>(CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, double, double,
                                                  int64_t);

struct Gat : torch::autograd::Function<Gat> {
  static Tensor forward(AutogradContext* ctx, CT rowptr, CT col, CT colptr, CT row, CT csc_perm, CT hub_rows,
                        CT hub_cols, CT x, CT alpha_src, CT alpha_dst, double negative_slope, double dropout,
                        int64_t seed) {
    static const auto fwd = kernel<B, GatFwd>("gat_aggregate_fwd");
    auto [out, lse] = fwd.call(rowptr, col, colptr, row, csc_perm, hub_rows, hub_cols, x, alpha_src, alpha_dst,
                               negative_slope, dropout, seed);
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({rowptr, col, colptr, row, csc_perm, hub_rows, hub_cols, x, alpha_src, alpha_dst, out, lse});
    ctx->saved_data["slope"] = negative_slope;
    ctx->saved_data["dropout"] = dropout;
    ctx->saved_data["seed"] = seed;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = kernel<B, GatBwd>("gat_aggregate_bwd");
    variable_list out(13);
    if (!grads[0].defined()) return out;
    const variable_list s = ctx->get_saved_variables();
    auto [grad_x, grad_src, grad_dst] = bwd.call(
        grads[0], s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], s[10], s[11],
        ctx->saved_data["slope"].toDouble(), ctx->saved_data["dropout"].toDouble(), ctx->saved_data["seed"].toInt());
    out[7] = grad_x;
    out[8] = grad_src;
    out[9] = grad_dst;
    return out;
  }
};

Tensor gat_aggregate(CT rowptr, CT col, CT colptr, CT row, CT csc_perm, CT hub_rows, CT hub_cols, CT x, CT alpha_src,
                     CT alpha_dst, double negative_slope, double dropout, int64_t seed) {
  return Gat::apply(rowptr, col, colptr, row, csc_perm, hub_rows, hub_cols, x, alpha_src, alpha_dst, negative_slope,
                    dropout, seed);
}

Tensor gat_aggregate_inference(CT rowptr, CT col, CT colptr, CT row, CT csc_perm, CT hub_rows, CT hub_cols, CT x,
                               CT alpha_src, CT alpha_dst, double negative_slope, double dropout, int64_t seed) {
  static const auto fwd = kernel<B, GatFwd>("gat_aggregate_fwd");
  return std::get<0>(fwd.call(rowptr, col, colptr, row, csc_perm, hub_rows, hub_cols, x, alpha_src, alpha_dst,
                              negative_slope, dropout, seed));
}

}  // namespace

TORCH_LIBRARY_IMPL(sslfast, Autograd, m) {
  m.impl("spmm", &spmm);
  m.impl("gcn_aggregate", &gcn_aggregate);
  m.impl("sddmm", &sddmm);
  m.impl("gat_aggregate", &gat_aggregate);
}

TORCH_LIBRARY_IMPL(sslfast, CompositeExplicitAutograd, m) {
  m.impl("spmm", &spmm_inference);
  m.impl("gcn_aggregate", &gcn_aggregate_inference);
  m.impl("sddmm", &sddmm_inference);
  m.impl("gat_aggregate", &gat_aggregate_inference);
}

}  // namespace sslfast::autograd
