// Autograd of the contrastive public ops (nt_xent, info_nce, clip_loss, siglip_loss, supcon):
// forward = prepare_rows (cat / L2-normalize / compute dtype) + the loss kernel; backward = the
// loss's backward kernel + prepare_rows_bwd. Kernels: csrc/cpu/contrastive.cpp and
// sslfast/triton/contrastive.py. Conventions: common.h.
#include "common.h"

namespace sslfast::autograd {
namespace {

using PrepareFwd = std::tuple<Tensor, Tensor>(CT, COT, bool);
using PrepareBwd = std::tuple<Tensor, Tensor>(CT, CT, CT, c10::SymInt, at::ScalarType);

template <typename B>
std::tuple<Tensor, Tensor> prepare(CT x, COT y, bool normalize) {
  static const auto op = kernel<B, PrepareFwd>("prepare_rows");
  return op.call(x, y, normalize);
}

template <typename B>
std::tuple<Tensor, Tensor> prepare_bwd(CT grad, CT rows, CT norms, c10::SymInt split, at::ScalarType dtype) {
  static const auto op = kernel<B, PrepareBwd>("prepare_rows_bwd");
  return op.call(grad, rows, norms, std::move(split), dtype);
}

// ---------------------------------------------------------------- nt_xent

using NtXentFwd = std::tuple<Tensor, Tensor>(CT, double, bool);
using NtXentBwd = Tensor(CT, CT, CT, double, bool);

template <typename B>
Tensor nt_xent_forward(CT z1, CT z2, double temperature, bool normalize, bool exclude_positive, Tensor* rows_out,
                       Tensor* norms_out, Tensor* lse_out) {
  static const auto fwd = kernel<B, NtXentFwd>("nt_xent_fwd");
  auto [rows, norms] = prepare<B>(z1, z2, normalize);
  auto [loss, lse] = fwd.call(rows, temperature, exclude_positive);
  if (rows_out) *rows_out = rows, *norms_out = norms, *lse_out = lse;
  return loss;
}

template <typename B>
struct NtXent : torch::autograd::Function<NtXent<B>> {
  static Tensor forward(AutogradContext* ctx, CT z1, CT z2, double temperature, bool normalize, bool exclude_positive) {
    Tensor rows, norms, lse;
    Tensor loss = nt_xent_forward<B>(z1, z2, temperature, normalize, exclude_positive, &rows, &norms, &lse);
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({rows, norms, lse});
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["exclude_positive"] = exclude_positive;
    ctx->saved_data["split"] = z1.sym_size(0);
    ctx->saved_data["dtype"] = z1.scalar_type();
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = kernel<B, NtXentBwd>("nt_xent_bwd");
    if (!grads[0].defined()) return variable_list(5);
    const variable_list s = ctx->get_saved_variables();
    Tensor grad_rows = bwd.call(grads[0], s[0], s[2], ctx->saved_data["temperature"].toDouble(),
                                ctx->saved_data["exclude_positive"].toBool());
    auto [grad_z1, grad_z2] = prepare_bwd<B>(grad_rows, s[0], s[1], ctx->saved_data["split"].toSymInt(),
                                             ctx->saved_data["dtype"].toScalarType());
    return {grad_z1, grad_z2, Tensor(), Tensor(), Tensor()};
  }
};

template <typename B>
Tensor nt_xent(CT z1, CT z2, double temperature, bool normalize, bool exclude_positive) {
  return NtXent<B>::apply(z1, z2, temperature, normalize, exclude_positive);
}

template <typename B>
Tensor nt_xent_inference(CT z1, CT z2, double temperature, bool normalize, bool exclude_positive) {
  return nt_xent_forward<B>(z1, z2, temperature, normalize, exclude_positive, nullptr, nullptr, nullptr);
}

// ---------------------------------------------------------------- info_nce

using InfoNceFwd = std::tuple<Tensor, Tensor, Tensor>(CT, CT, COT, double, bool, bool);
using InfoNceBwd = std::tuple<Tensor, Tensor>(CT, CT, CT, COT, CT, CT, double, bool);

struct InfoNceSaved {
  Tensor query, query_norms, key, key_norms, queue, lse, folded;
};

template <typename B>
Tensor info_nce_forward(CT query, CT key, COT queue, double temperature, bool normalize, bool in_batch, bool fold,
                        InfoNceSaved* saved) {
  static const auto fwd = kernel<B, InfoNceFwd>("info_nce_fwd");
  auto [q, q_norms] = prepare<B>(query, OptTensor(), normalize);
  auto [k, k_norms] = prepare<B>(key, OptTensor(), normalize);
  OptTensor negatives;
  if (queue.has_value()) negatives = std::get<0>(prepare<B>(*queue, OptTensor(), normalize));
  auto [loss, lse, folded] = fwd.call(q, k, negatives, temperature, in_batch, fold);
  if (saved) *saved = {q, q_norms, k, k_norms, opt(negatives), lse, folded};
  return loss;
}

template <typename B>
struct InfoNce : torch::autograd::Function<InfoNce<B>> {
  static Tensor forward(AutogradContext* ctx, CT query, CT key, COT queue, double temperature, bool normalize,
                        bool in_batch, bool fold) {
    InfoNceSaved s;
    Tensor loss = info_nce_forward<B>(query, key, queue, temperature, normalize, in_batch, fold, &s);
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({s.query, s.query_norms, s.key, s.key_norms, s.queue, s.lse, s.folded});
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["in_batch"] = in_batch;
    ctx->saved_data["rows"] = query.sym_size(0);
    ctx->saved_data["query_dtype"] = query.scalar_type();
    ctx->saved_data["key_dtype"] = key.scalar_type();
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = kernel<B, InfoNceBwd>("info_nce_bwd");
    variable_list out(7);
    if (!grads[0].defined()) return out;
    const variable_list s = ctx->get_saved_variables();
    auto [grad_q, grad_k] = bwd.call(grads[0], s[0], s[2], maybe(s[4]), s[5], s[6],
                                     ctx->saved_data["temperature"].toDouble(), ctx->saved_data["in_batch"].toBool());
    const c10::SymInt rows = ctx->saved_data["rows"].toSymInt();
    if (ctx->needs_input_grad(0))
      out[0] = std::get<0>(prepare_bwd<B>(grad_q, s[0], s[1], rows, ctx->saved_data["query_dtype"].toScalarType()));
    if (ctx->needs_input_grad(1))
      out[1] = std::get<0>(prepare_bwd<B>(grad_k, s[2], s[3], rows, ctx->saved_data["key_dtype"].toScalarType()));
    return out;
  }
};

template <typename B>
Tensor info_nce(CT query, CT key, COT queue, double temperature, bool normalize, bool in_batch_negatives) {
  // MoCo (a queue, no in-batch negatives): fold the queue's part of dq into the forward pass when
  // dq will be needed: two score-GEMM passes over the queue instead of three.
  const bool fold = queue.has_value() && !in_batch_negatives && wants_grad({&query});
  return InfoNce<B>::apply(query, key, queue, temperature, normalize, in_batch_negatives, fold);
}

template <typename B>
Tensor info_nce_inference(CT query, CT key, COT queue, double temperature, bool normalize, bool in_batch_negatives) {
  return info_nce_forward<B>(query, key, queue, temperature, normalize, in_batch_negatives, false, nullptr);
}

// ---------------------------------------------------------------- clip_loss

using ClipFwd = std::tuple<Tensor, Tensor, Tensor>(CT, CT, CT, COT);
using ClipBwd = std::tuple<Tensor, Tensor, Tensor, Tensor>(CT, CT, CT, CT, COT, CT, CT);

template <typename B>
struct Clip : torch::autograd::Function<Clip<B>> {
  static Tensor forward(AutogradContext* ctx, CT image, CT text, CT scale, COT bias) {
    static const auto fwd = kernel<B, ClipFwd>("clip_loss_fwd");
    auto [loss, row_lse, col_lse] = fwd.call(image, text, scale, bias);
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({image, text, scale, opt(bias), row_lse, col_lse});
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = kernel<B, ClipBwd>("clip_loss_bwd");
    if (!grads[0].defined()) return variable_list(4);
    const variable_list s = ctx->get_saved_variables();
    auto [gi, gt, gs, gb] = bwd.call(grads[0], s[0], s[1], s[2], maybe(s[3]), s[4], s[5]);
    return {gi, gt, gs, s[3].defined() ? gb : Tensor()};
  }
};

template <typename B>
Tensor clip_loss(CT image, CT text, CT scale, COT bias) {
  return Clip<B>::apply(image, text, scale, bias);
}

template <typename B>
Tensor clip_loss_inference(CT image, CT text, CT scale, COT bias) {
  static const auto fwd = kernel<B, ClipFwd>("clip_loss_fwd");
  return std::get<0>(fwd.call(image, text, scale, bias));
}

// ---------------------------------------------------------------- siglip_loss

using SiglipFwd = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>(CT, CT, CT, CT, bool);
using SiglipBwd = std::tuple<Tensor, Tensor, Tensor, Tensor>(CT, CT, CT, CT, CT);

template <typename B>
struct Siglip : torch::autograd::Function<Siglip<B>> {
  // with_grads: SigLIP has no normalizer, so the forward's one pass over the score tiles can also
  // give every gradient (for an upstream 1); the backward then only scales them.
  static Tensor forward(AutogradContext* ctx, CT image, CT text, CT scale, CT bias, bool with_grads) {
    static const auto fwd = kernel<B, SiglipFwd>("siglip_loss_fwd");
    auto [loss, gi, gt, gs, gb] = fwd.call(image, text, scale, bias, with_grads);
    ctx->set_materialize_grads(false);
    ctx->saved_data["from_forward"] = with_grads;
    if (with_grads)
      ctx->save_for_backward({gi, gt, gs, gb});
    else
      ctx->save_for_backward({image, text, scale, bias});
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = kernel<B, SiglipBwd>("siglip_loss_bwd");
    if (!grads[0].defined()) return variable_list(5);
    const variable_list s = ctx->get_saved_variables();
    if (ctx->saved_data["from_forward"].toBool()) {
      variable_list out(5);
      for (int i = 0; i < 4; ++i) out[i] = s[i] * grads[0].to(s[i].scalar_type());
      return out;
    }
    auto [gi, gt, gs, gb] = bwd.call(grads[0], s[0], s[1], s[2], s[3]);
    return {gi, gt, gs, gb, Tensor()};
  }
};

template <typename B>
Tensor siglip_loss(CT image, CT text, CT scale, CT bias) {
  const bool with_grads = wants_grad({&image, &text, &scale, &bias});
  return Siglip<B>::apply(image, text, scale, bias, with_grads);
}

template <typename B>
Tensor siglip_loss_inference(CT image, CT text, CT scale, CT bias) {
  static const auto fwd = kernel<B, SiglipFwd>("siglip_loss_fwd");
  return std::get<0>(fwd.call(image, text, scale, bias, false));
}

// ---------------------------------------------------------------- supcon

using SupconFwd = std::tuple<Tensor, Tensor, Tensor>(CT, CT, double, bool);
using SupconBwd = Tensor(CT, CT, CT, CT, CT, double, bool);

template <typename B>
Tensor supcon_forward(CT features, CT labels, double temperature, bool normalize, bool pairwise, variable_list* saved) {
  static const auto fwd = kernel<B, SupconFwd>("supcon_fwd");
  auto [rows, norms] = prepare<B>(features, OptTensor(), normalize);
  auto [loss, lse, stats] = fwd.call(rows, labels, temperature, pairwise);
  if (saved) *saved = {rows, norms, labels, lse, stats};
  return loss;
}

template <typename B>
struct Supcon : torch::autograd::Function<Supcon<B>> {
  static Tensor forward(AutogradContext* ctx, CT features, CT labels, double temperature, bool normalize,
                        bool pairwise) {
    variable_list saved;
    Tensor loss = supcon_forward<B>(features, labels, temperature, normalize, pairwise, &saved);
    ctx->set_materialize_grads(false);
    ctx->save_for_backward(saved);
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["pairwise"] = pairwise;
    ctx->saved_data["rows"] = features.sym_size(0);
    ctx->saved_data["dtype"] = features.scalar_type();
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = kernel<B, SupconBwd>("supcon_bwd");
    variable_list out(5);
    if (!grads[0].defined()) return out;
    const variable_list s = ctx->get_saved_variables();
    Tensor grad_rows = bwd.call(grads[0], s[0], s[2], s[3], s[4], ctx->saved_data["temperature"].toDouble(),
                                ctx->saved_data["pairwise"].toBool());
    out[0] = std::get<0>(prepare_bwd<B>(grad_rows, s[0], s[1], ctx->saved_data["rows"].toSymInt(),
                                        ctx->saved_data["dtype"].toScalarType()));
    return out;
  }
};

template <typename B>
Tensor supcon(CT features, CT labels, double temperature, bool normalize, bool pairwise) {
  return Supcon<B>::apply(features, labels, temperature, normalize, pairwise);
}

template <typename B>
Tensor supcon_inference(CT features, CT labels, double temperature, bool normalize, bool pairwise) {
  return supcon_forward<B>(features, labels, temperature, normalize, pairwise, nullptr);
}

template <typename B>
void register_autograd(torch::Library& m) {
  m.impl("nt_xent", &nt_xent<B>);
  m.impl("info_nce", &info_nce<B>);
  m.impl("clip_loss", &clip_loss<B>);
  m.impl("siglip_loss", &siglip_loss<B>);
  m.impl("supcon", &supcon<B>);
}

// Below autograd (inference mode, fake-tensor meta fallback): the forward alone.
template <typename B>
void register_inference(torch::Library& m) {
  m.impl("nt_xent", &nt_xent_inference<B>);
  m.impl("info_nce", &info_nce_inference<B>);
  m.impl("clip_loss", &clip_loss_inference<B>);
  m.impl("siglip_loss", &siglip_loss_inference<B>);
  m.impl("supcon", &supcon_inference<B>);
}

}  // namespace

TORCH_LIBRARY_IMPL(sslfast, Autograd, m) { register_autograd<Native>(m); }
TORCH_LIBRARY_IMPL(sslfast_triton, Autograd, m) { register_autograd<Triton>(m); }
TORCH_LIBRARY_IMPL(sslfast, CompositeExplicitAutograd, m) { register_inference<Native>(m); }
TORCH_LIBRARY_IMPL(sslfast_triton, CompositeExplicitAutograd, m) { register_inference<Triton>(m); }

}  // namespace sslfast::autograd
