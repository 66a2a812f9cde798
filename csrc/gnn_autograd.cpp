// Autograd of the GNN forward ops (spmm, gcn_aggregate, sddmm, gat_aggregate) in C++, registered
// for the Autograd key (every device). Each forward redispatches below autograd to the device
// kernel and saves what its backward op needs; each backward calls the registered *_bwd op, so
// torch.compile traces both through the fake kernels (sslfast/ops/_gnn_schema.py).
//
// The non-differentiable second outputs (spmm's int64 arg, GAT's lse) leave the autograd
// Function through an out-pointer, computed without grad, instead of mark_non_differentiable:
// compiled autograd (torch._dynamo.compiled_autograd) asserts on C++ nodes that mark outputs.
// Grads are not materialized: an unused output costs no zero tensor, and a backward whose output
// got no gradient returns none.
//
// Why C++ and not torch.library.register_autograd (the default of the shared design notes,
// ../shared/DESIGN.md): on small graphs (Cora size) the Python autograd wrapper was the op's cost. Tiny graph, 1 thread: spmm_fwd with a
// grad-requiring x took 48.8 us through register_autograd and 9.1 us here (6.4 us below
// autograd); forward + backward 143 us -> 60 us (benchmarks/NOTES.md).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

namespace sslfast::autograd {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = c10::optional<Tensor>;
using CT = const Tensor&;

template <typename Signature>
c10::TypedOperatorHandle<Signature> typed_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// ---------------------------------------------------------------- spmm

using SpmmFwd = std::tuple<Tensor, Tensor>(CT, CT, CT, CT, CT, CT, CT, const OptTensor&, CT, c10::string_view);
using SpmmBwd = std::tuple<Tensor, Tensor>(CT, CT, CT, CT, CT, CT, CT, CT, const OptTensor&, CT, CT,
                                           c10::string_view, bool);

struct Spmm : torch::autograd::Function<Spmm> {
  static Tensor forward(AutogradContext* ctx, CT rowptr, CT col, CT colptr, CT row, CT csc_perm, CT hub_rows,
                        CT hub_cols, const OptTensor& weight, CT x, c10::string_view reduce, Tensor* arg_out) {
    static const auto fwd = typed_op<SpmmFwd>("sslfast::spmm_fwd");
    at::AutoDispatchBelowADInplaceOrView below;
    auto [out, arg] = fwd.call(rowptr, col, colptr, row, csc_perm, hub_rows, hub_cols, weight, x, reduce);
    ctx->set_materialize_grads(false);
    ctx->save_for_backward(
        {rowptr, col, colptr, row, csc_perm, hub_rows, hub_cols, weight.value_or(Tensor()), x, arg});
    ctx->saved_data["reduce"] = std::string(reduce);
    ctx->saved_data["weighted"] = weight.has_value();
    *arg_out = arg;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = typed_op<SpmmBwd>("sslfast::spmm_bwd");
    if (!grads[0].defined()) return variable_list(11);
    const variable_list s = ctx->get_saved_variables();
    const bool weighted = ctx->saved_data["weighted"].toBool();
    const bool weight_grad = weighted && ctx->needs_input_grad(7);
    auto [grad_x, grad_w] = bwd.call(grads[0], s[0], s[1], s[2], s[3], s[4], s[5], s[6],
                                     weighted ? OptTensor(s[7]) : OptTensor(), s[8], s[9],
                                     ctx->saved_data["reduce"].toStringRef(), weight_grad);
    variable_list out(11);  // one per forward argument, the out-pointer included
    if (weight_grad) out[7] = grad_w;
    out[8] = grad_x;
    return out;
  }
};

std::tuple<Tensor, Tensor> spmm_fwd(CT rowptr, CT col, CT colptr, CT row, CT csc_perm, CT hub_rows, CT hub_cols,
                                    const OptTensor& weight, CT x, c10::string_view reduce) {
  Tensor arg;
  Tensor out = Spmm::apply(rowptr, col, colptr, row, csc_perm, hub_rows, hub_cols, weight, x, reduce, &arg);
  return {out, arg};
}

// ---------------------------------------------------------------- gcn_aggregate

using GcnFwd = Tensor(CT, CT, CT, CT, CT, CT, CT, CT, bool);
using GcnBwd = Tensor(CT, CT, CT, CT, CT, bool);

struct Gcn : torch::autograd::Function<Gcn> {
  static Tensor forward(AutogradContext* ctx, CT rowptr, CT col, CT colptr, CT row, CT hub_rows, CT hub_cols,
                        CT deg_inv_sqrt, CT x, bool add_self_loops) {
    static const auto fwd = typed_op<GcnFwd>("sslfast::gcn_aggregate_fwd");
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({colptr, row, hub_cols, deg_inv_sqrt});
    ctx->saved_data["loops"] = add_self_loops;
    return fwd.call(rowptr, col, colptr, row, hub_rows, hub_cols, deg_inv_sqrt, x, add_self_loops);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = typed_op<GcnBwd>("sslfast::gcn_aggregate_bwd");
    variable_list out(9);
    if (!grads[0].defined()) return out;
    const variable_list s = ctx->get_saved_variables();
    out[7] = bwd.call(grads[0], s[0], s[1], s[2], s[3], ctx->saved_data["loops"].toBool());
    return out;
  }
};

Tensor gcn_aggregate_fwd(CT rowptr, CT col, CT colptr, CT row, CT hub_rows, CT hub_cols, CT deg_inv_sqrt, CT x,
                         bool add_self_loops) {
  return Gcn::apply(rowptr, col, colptr, row, hub_rows, hub_cols, deg_inv_sqrt, x, add_self_loops);
}

// ---------------------------------------------------------------- sddmm

using SddmmFwd = Tensor(CT, CT, CT, CT, CT, CT, CT, CT, CT);
using SddmmBwd = std::tuple<Tensor, Tensor>(CT, CT, CT, CT, CT, CT, CT, CT, CT, CT);

struct Sddmm : torch::autograd::Function<Sddmm> {
  static Tensor forward(AutogradContext* ctx, CT rowptr, CT col, CT colptr, CT row, CT csc_perm, CT hub_rows,
                        CT hub_cols, CT a, CT b) {
    static const auto fwd = typed_op<SddmmFwd>("sslfast::sddmm_fwd");
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({rowptr, col, colptr, row, csc_perm, hub_rows, hub_cols, a, b});
    return fwd.call(rowptr, col, colptr, row, csc_perm, hub_rows, hub_cols, a, b);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = typed_op<SddmmBwd>("sslfast::sddmm_bwd");
    variable_list out(9);
    if (!grads[0].defined()) return out;
    const variable_list s = ctx->get_saved_variables();
    auto [grad_a, grad_b] = bwd.call(grads[0], s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8]);
    out[7] = grad_a;
    out[8] = grad_b;
    return out;
  }
};

Tensor sddmm_fwd(CT rowptr, CT col, CT colptr, CT row, CT csc_perm, CT hub_rows, CT hub_cols, CT a, CT b) {
  return Sddmm::apply(rowptr, col, colptr, row, csc_perm, hub_rows, hub_cols, a, b);
}

// ---------------------------------------------------------------- gat_aggregate

using GatFwd = std::tuple<Tensor, Tensor>(CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, double);
using GatBwd = std::tuple<Tensor, Tensor, Tensor>(CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, double);

struct Gat : torch::autograd::Function<Gat> {
  static Tensor forward(AutogradContext* ctx, CT rowptr, CT col, CT colptr, CT row, CT csc_perm, CT hub_rows,
                        CT hub_cols, CT x, CT alpha_src, CT alpha_dst, double negative_slope, Tensor* lse_out) {
    static const auto fwd = typed_op<GatFwd>("sslfast::gat_aggregate_fwd");
    at::AutoDispatchBelowADInplaceOrView below;
    auto [out, lse] = fwd.call(rowptr, col, colptr, row, csc_perm, hub_rows, hub_cols, x, alpha_src, alpha_dst,
                               negative_slope);
    ctx->set_materialize_grads(false);
    ctx->save_for_backward(
        {rowptr, col, colptr, row, csc_perm, hub_rows, hub_cols, x, alpha_src, alpha_dst, out, lse});
    ctx->saved_data["slope"] = negative_slope;
    *lse_out = lse;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = typed_op<GatBwd>("sslfast::gat_aggregate_bwd");
    variable_list out(12);  // one per forward argument, the out-pointer included
    if (!grads[0].defined()) return out;
    const variable_list s = ctx->get_saved_variables();
    auto [grad_x, grad_src, grad_dst] = bwd.call(grads[0], s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8],
                                                 s[9], s[10], s[11], ctx->saved_data["slope"].toDouble());
    out[7] = grad_x;
    out[8] = grad_src;
    out[9] = grad_dst;
    return out;
  }
};

std::tuple<Tensor, Tensor> gat_aggregate_fwd(CT rowptr, CT col, CT colptr, CT row, CT csc_perm, CT hub_rows,
                                             CT hub_cols, CT x, CT alpha_src, CT alpha_dst, double negative_slope) {
  Tensor lse;
  Tensor out = Gat::apply(rowptr, col, colptr, row, csc_perm, hub_rows, hub_cols, x, alpha_src, alpha_dst,
                          negative_slope, &lse);
  return {out, lse};
}

}  // namespace

TORCH_LIBRARY_IMPL(sslfast, Autograd, m) {
  m.impl("spmm_fwd", &spmm_fwd);
  m.impl("gcn_aggregate_fwd", &gcn_aggregate_fwd);
  m.impl("sddmm_fwd", &sddmm_fwd);
  m.impl("gat_aggregate_fwd", &gat_aggregate_fwd);
}

}  // namespace sslfast::autograd
