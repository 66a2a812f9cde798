// Autograd of the augmentation ops (augment_images, drop_mask). Augmentations usually see data,
// not parameters, but a gradient is defined and cheap: the resampling's adjoint, and the same mask
// on the gradient (regenerated from the seed, never stored). Kernels: csrc/cpu/augment.cpp and
// sslfast/triton/augment.py. Conventions: common.h.
#include "common.h"

namespace sslfast::autograd {
namespace {

using OptGenerator = std::optional<at::Generator>;
using AugmentFwd = Tensor(CT, CT, CT, double, int64_t, OptGenerator, int64_t, int64_t);
using AugmentBwd = Tensor(CT, CT, CT, c10::SymInt, c10::SymInt);
using MaskFwd = Tensor(CT, double, int64_t, bool);

template <typename B>
struct Augment : torch::autograd::Function<Augment<B>> {
  static Tensor forward(AutogradContext* ctx, CT images, CT boxes, CT flips, double noise_std, int64_t seed,
                        OptGenerator generator, int64_t out_height, int64_t out_width) {
    static const auto fwd = kernel<B, AugmentFwd>("augment_images_fwd");
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({boxes, flips});
    ctx->saved_data["height"] = images.sym_size(2);
    ctx->saved_data["width"] = images.sym_size(3);
    return fwd.call(images, boxes, flips, noise_std, seed, std::move(generator), out_height, out_width);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = kernel<B, AugmentBwd>("augment_images_bwd");
    variable_list out(8);
    if (!grads[0].defined()) return out;
    const variable_list s = ctx->get_saved_variables();
    out[0] = bwd.call(grads[0], s[0], s[1], ctx->saved_data["height"].toSymInt(), ctx->saved_data["width"].toSymInt());
    return out;
  }
};

template <typename B>
Tensor augment_images(CT images, CT boxes, CT flips, double noise_std, int64_t seed, OptGenerator generator,
                      int64_t out_height, int64_t out_width) {
  return Augment<B>::apply(images, boxes, flips, noise_std, seed, std::move(generator), out_height, out_width);
}

template <typename B>
Tensor augment_images_inference(CT images, CT boxes, CT flips, double noise_std, int64_t seed, OptGenerator generator,
                                int64_t out_height, int64_t out_width) {
  static const auto fwd = kernel<B, AugmentFwd>("augment_images_fwd");
  return fwd.call(images, boxes, flips, noise_std, seed, std::move(generator), out_height, out_width);
}

template <typename B>
struct DropMask : torch::autograd::Function<DropMask<B>> {
  static Tensor forward(AutogradContext* ctx, CT x, double p, int64_t seed, bool per_column) {
    static const auto fwd = kernel<B, MaskFwd>("drop_mask_fwd");
    ctx->set_materialize_grads(false);
    ctx->saved_data["p"] = p;
    ctx->saved_data["seed"] = seed;
    ctx->saved_data["per_column"] = per_column;
    return fwd.call(x, p, seed, per_column);
  }

  // d(x * mask)/dx = mask: the forward kernel with the same seed applies it to the gradient.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto fwd = kernel<B, MaskFwd>("drop_mask_fwd");
    variable_list out(4);
    if (!grads[0].defined()) return out;
    out[0] = fwd.call(grads[0], ctx->saved_data["p"].toDouble(), ctx->saved_data["seed"].toInt(),
                      ctx->saved_data["per_column"].toBool());
    return out;
  }
};

template <typename B>
Tensor drop_mask(CT x, double p, int64_t seed, bool per_column) {
  return DropMask<B>::apply(x, p, seed, per_column);
}

template <typename B>
Tensor drop_mask_inference(CT x, double p, int64_t seed, bool per_column) {
  static const auto fwd = kernel<B, MaskFwd>("drop_mask_fwd");
  return fwd.call(x, p, seed, per_column);
}

template <typename B>
void register_autograd(torch::Library& m) {
  m.impl("augment_images", &augment_images<B>);
  m.impl("drop_mask", &drop_mask<B>);
}

template <typename B>
void register_inference(torch::Library& m) {
  m.impl("augment_images", &augment_images_inference<B>);
  m.impl("drop_mask", &drop_mask_inference<B>);
}

}  // namespace

TORCH_LIBRARY_IMPL(sslfast, Autograd, m) { register_autograd<Native>(m); }
TORCH_LIBRARY_IMPL(sslfast_triton, Autograd, m) { register_autograd<Triton>(m); }
TORCH_LIBRARY_IMPL(sslfast, CompositeExplicitAutograd, m) { register_inference<Native>(m); }
TORCH_LIBRARY_IMPL(sslfast_triton, CompositeExplicitAutograd, m) { register_inference<Triton>(m); }

}  // namespace sslfast::autograd
