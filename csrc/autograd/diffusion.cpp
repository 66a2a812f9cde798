// Autograd of the diffusion training ops (q_sample, diffusion_loss). The sampler steps
// (diffusion_step, diffusion_sigma_step) are inference-only kernels without autograd. Kernels:
// csrc/cpu/diffusion.cpp and sslfast/triton/diffusion.py. Conventions: common.h.
#include "common.h"

namespace sslfast::autograd {
namespace {

using OptGenerator = std::optional<at::Generator>;

// ---------------------------------------------------------------- q_sample

using QSampleFwd = std::tuple<Tensor, Tensor>(CT, COT, CT, CT, int64_t, OptGenerator, bool);
using QSampleBwd = Tensor(COT, COT, CT, CT, bool);

template <typename B>
struct QSample : torch::autograd::Function<QSample<B>> {
  // Gradients flow to x0 (latents from a trainable encoder), never to the noise, which is data.
  static variable_list forward(AutogradContext* ctx, CT x0, COT noise, CT table, CT t, int64_t seed,
                               OptGenerator generator, bool v_target) {
    static const auto fwd = kernel<B, QSampleFwd>("q_sample_fwd");
    auto [x_t, target] = fwd.call(x0, noise, table, t, seed, std::move(generator), v_target);
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({table, t});
    ctx->saved_data["v_target"] = v_target;
    return {x_t, target};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = kernel<B, QSampleBwd>("q_sample_bwd");
    variable_list out(7);
    const bool v_target = ctx->saved_data["v_target"].toBool();
    // An epsilon target does not depend on x0: its gradient is dropped.
    const OptTensor grad_target = v_target ? maybe(grads[1]) : OptTensor();
    if (!grads[0].defined() && !grad_target) return out;
    const variable_list s = ctx->get_saved_variables();
    out[0] = bwd.call(maybe(grads[0]), grad_target, s[0], s[1], v_target);
    return out;
  }
};

template <typename B>
std::tuple<Tensor, Tensor> q_sample(CT x0, COT noise, CT table, CT t, int64_t seed, OptGenerator generator,
                                    bool v_target) {
  variable_list out = QSample<B>::apply(x0, noise, table, t, seed, std::move(generator), v_target);
  return {out[0], out[1]};
}

template <typename B>
std::tuple<Tensor, Tensor> q_sample_inference(CT x0, COT noise, CT table, CT t, int64_t seed, OptGenerator generator,
                                              bool v_target) {
  static const auto fwd = kernel<B, QSampleFwd>("q_sample_fwd");
  return fwd.call(x0, noise, table, t, seed, std::move(generator), v_target);
}

// ---------------------------------------------------------------- diffusion_loss

using LossFwd = Tensor(CT, CT, CT, CT, int64_t);
using LossBwd = Tensor(CT, CT, CT, CT, CT, int64_t);

template <typename B>
struct Loss : torch::autograd::Function<Loss<B>> {
  static Tensor forward(AutogradContext* ctx, CT model_output, CT target, CT weights, CT t, int64_t reduction) {
    static const auto fwd = kernel<B, LossFwd>("diffusion_loss_fwd");
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({model_output, target, weights, t});
    ctx->saved_data["reduction"] = reduction;
    return fwd.call(model_output, target, weights, t, reduction);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = kernel<B, LossBwd>("diffusion_loss_bwd");
    variable_list out(5);
    if (!grads[0].defined()) return out;
    const variable_list s = ctx->get_saved_variables();
    Tensor grad = bwd.call(grads[0], s[0], s[1], s[2], s[3], ctx->saved_data["reduction"].toInt());
    if (ctx->needs_input_grad(1)) out[1] = -grad;
    out[0] = grad;
    return out;
  }
};

template <typename B>
Tensor diffusion_loss(CT model_output, CT target, CT weights, CT t, int64_t reduction) {
  return Loss<B>::apply(model_output, target, weights, t, reduction);
}

template <typename B>
Tensor diffusion_loss_inference(CT model_output, CT target, CT weights, CT t, int64_t reduction) {
  static const auto fwd = kernel<B, LossFwd>("diffusion_loss_fwd");
  return fwd.call(model_output, target, weights, t, reduction);
}

template <typename B>
void register_autograd(torch::Library& m) {
  m.impl("q_sample", &q_sample<B>);
  m.impl("diffusion_loss", &diffusion_loss<B>);
}

template <typename B>
void register_inference(torch::Library& m) {
  m.impl("q_sample", &q_sample_inference<B>);
  m.impl("diffusion_loss", &diffusion_loss_inference<B>);
}

}  // namespace

TORCH_LIBRARY_IMPL(sslfast, Autograd, m) { register_autograd<Native>(m); }
TORCH_LIBRARY_IMPL(sslfast_triton, Autograd, m) { register_autograd<Triton>(m); }
TORCH_LIBRARY_IMPL(sslfast, CompositeExplicitAutograd, m) { register_inference<Native>(m); }
TORCH_LIBRARY_IMPL(sslfast_triton, CompositeExplicitAutograd, m) { register_inference<Triton>(m); }

}  // namespace sslfast::autograd
