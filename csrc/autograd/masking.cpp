// Autograd of the masking public ops (random_masking, unshuffle, masked_patch_loss). Kernels:
// csrc/cpu/masking.cpp and sslfast/triton/masking.py. Conventions: common.h.
#include "common.h"

namespace sslfast::autograd {
namespace {

// pos_embed ([1, T, D] or [T, D]) is added to every sample: its gradient is the batch sum.
Tensor pos_embed_grad(CT grad_rows, CT pos_embed) {
  return grad_rows.sum(0).reshape_symint(pos_embed.sym_sizes()).to(pos_embed.scalar_type());
}

// ---------------------------------------------------------------- random_masking

using MaskingFwd = std::tuple<Tensor, Tensor, Tensor>(CT, CT, COT, int64_t, int64_t, bool);
using MaskingBwd = Tensor(CT, CT, int64_t);

template <typename B>
struct RandomMasking : torch::autograd::Function<RandomMasking<B>> {
  // mask and ids_restore carry no gradient: they leave through out-pointers (common.h).
  static Tensor forward(AutogradContext* ctx, CT x, CT noise, COT pos_embed, int64_t len_keep, int64_t prefix,
                        bool int32_indices, Tensor* mask_out, Tensor* ids_out) {
    static const auto fwd = kernel<B, MaskingFwd>("random_masking_fwd");
    auto [visible, mask, ids_restore] = fwd.call(x, noise, pos_embed, len_keep, prefix, int32_indices);
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({ids_restore, opt(pos_embed)});
    ctx->saved_data["prefix"] = prefix;
    *mask_out = mask;
    *ids_out = ids_restore;
    return visible;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = kernel<B, MaskingBwd>("random_masking_bwd");
    variable_list out(8);
    if (!grads[0].defined()) return out;
    const variable_list s = ctx->get_saved_variables();
    Tensor grad_x = bwd.call(grads[0], s[0], ctx->saved_data["prefix"].toInt());
    if (s[1].defined() && ctx->needs_input_grad(2)) out[2] = pos_embed_grad(grad_x, s[1]);
    out[0] = grad_x;
    return out;
  }
};

template <typename B>
std::tuple<Tensor, Tensor, Tensor> random_masking(CT x, CT noise, COT pos_embed, int64_t len_keep, int64_t prefix,
                                                  bool int32_indices) {
  Tensor mask, ids_restore;
  Tensor visible = RandomMasking<B>::apply(x, noise, pos_embed, len_keep, prefix, int32_indices, &mask, &ids_restore);
  return {visible, mask, ids_restore};
}

template <typename B>
std::tuple<Tensor, Tensor, Tensor> random_masking_inference(CT x, CT noise, COT pos_embed, int64_t len_keep,
                                                            int64_t prefix, bool int32_indices) {
  static const auto fwd = kernel<B, MaskingFwd>("random_masking_fwd");
  return fwd.call(x, noise, pos_embed, len_keep, prefix, int32_indices);
}

// ---------------------------------------------------------------- unshuffle

using UnshuffleFwd = Tensor(CT, CT, CT, COT, int64_t);
using UnshuffleBwd = std::tuple<Tensor, Tensor>(CT, CT, c10::SymInt, int64_t);

template <typename B>
struct Unshuffle : torch::autograd::Function<Unshuffle<B>> {
  static Tensor forward(AutogradContext* ctx, CT x_visible, CT ids_restore, CT mask_token, COT pos_embed,
                        int64_t prefix) {
    static const auto fwd = kernel<B, UnshuffleFwd>("unshuffle_fwd");
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({ids_restore, mask_token, opt(pos_embed)});
    ctx->saved_data["prefix"] = prefix;
    ctx->saved_data["len_keep"] = x_visible.sym_size(1) - prefix;
    return fwd.call(x_visible, ids_restore, mask_token, pos_embed, prefix);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = kernel<B, UnshuffleBwd>("unshuffle_bwd");
    variable_list out(5);
    if (!grads[0].defined()) return out;
    const variable_list s = ctx->get_saved_variables();
    auto [grad_visible, grad_token] =
        bwd.call(grads[0], s[0], ctx->saved_data["len_keep"].toSymInt(), ctx->saved_data["prefix"].toInt());
    out[0] = grad_visible;
    if (ctx->needs_input_grad(2)) out[2] = grad_token.reshape_symint(s[1].sym_sizes()).to(s[1].scalar_type());
    if (s[2].defined() && ctx->needs_input_grad(3)) out[3] = pos_embed_grad(grads[0], s[2]);
    return out;
  }
};

template <typename B>
Tensor unshuffle(CT x_visible, CT ids_restore, CT mask_token, COT pos_embed, int64_t prefix) {
  return Unshuffle<B>::apply(x_visible, ids_restore, mask_token, pos_embed, prefix);
}

template <typename B>
Tensor unshuffle_inference(CT x_visible, CT ids_restore, CT mask_token, COT pos_embed, int64_t prefix) {
  static const auto fwd = kernel<B, UnshuffleFwd>("unshuffle_fwd");
  return fwd.call(x_visible, ids_restore, mask_token, pos_embed, prefix);
}

// ---------------------------------------------------------------- masked_patch_loss

using PatchLossFwd = Tensor(CT, CT, CT, int64_t, bool, bool);
using PatchLossBwd = Tensor(CT, CT, CT, CT, int64_t, bool, bool);

template <typename B>
struct PatchLoss : torch::autograd::Function<PatchLoss<B>> {
  static Tensor forward(AutogradContext* ctx, CT pred, CT imgs, CT mask, int64_t patch_size, bool norm_pix, bool l1) {
    static const auto fwd = kernel<B, PatchLossFwd>("masked_patch_loss_fwd");
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({pred, imgs, mask});
    ctx->saved_data["patch_size"] = patch_size;
    ctx->saved_data["norm_pix"] = norm_pix;
    ctx->saved_data["l1"] = l1;
    return fwd.call(pred, imgs, mask, patch_size, norm_pix, l1);
  }

  // The gradient goes to pred only: the targets are data and the mask is not learned.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = kernel<B, PatchLossBwd>("masked_patch_loss_bwd");
    variable_list out(6);
    if (!grads[0].defined()) return out;
    const variable_list s = ctx->get_saved_variables();
    out[0] = bwd.call(grads[0], s[0], s[1], s[2], ctx->saved_data["patch_size"].toInt(),
                      ctx->saved_data["norm_pix"].toBool(), ctx->saved_data["l1"].toBool());
    return out;
  }
};

template <typename B>
Tensor masked_patch_loss(CT pred, CT imgs, CT mask, int64_t patch_size, bool norm_pix, bool l1) {
  return PatchLoss<B>::apply(pred, imgs, mask, patch_size, norm_pix, l1);
}

template <typename B>
Tensor masked_patch_loss_inference(CT pred, CT imgs, CT mask, int64_t patch_size, bool norm_pix, bool l1) {
  static const auto fwd = kernel<B, PatchLossFwd>("masked_patch_loss_fwd");
  return fwd.call(pred, imgs, mask, patch_size, norm_pix, l1);
}

template <typename B>
void register_autograd(torch::Library& m) {
  m.impl("random_masking", &random_masking<B>);
  m.impl("unshuffle", &unshuffle<B>);
  m.impl("masked_patch_loss", &masked_patch_loss<B>);
}

template <typename B>
void register_inference(torch::Library& m) {
  m.impl("random_masking", &random_masking_inference<B>);
  m.impl("unshuffle", &unshuffle_inference<B>);
  m.impl("masked_patch_loss", &masked_patch_loss_inference<B>);
}

}  // namespace

TORCH_LIBRARY_IMPL(sslfast, Autograd, m) { register_autograd<Native>(m); }
TORCH_LIBRARY_IMPL(sslfast_triton, Autograd, m) { register_autograd<Triton>(m); }
TORCH_LIBRARY_IMPL(sslfast, CompositeExplicitAutograd, m) { register_inference<Native>(m); }
TORCH_LIBRARY_IMPL(sslfast_triton, CompositeExplicitAutograd, m) { register_inference<Triton>(m); }

}  // namespace sslfast::autograd
