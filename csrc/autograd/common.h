// What every family's autograd file shares (docs/ARCHITECTURE.md, "Autograd").
//
// A public op's autograd is a torch::autograd::Function written once and instantiated for both
// namespaces: Function<Native> calls the sslfast:: kernel ops (C++ CPU / CUDA kernels),
// Function<Triton> the sslfast_triton:: ones (Triton kernels, registered from Python). Why C++
// and not torch.library.register_autograd: on small inputs the Python autograd wrapper cost more
// than the kernel (benchmarks/NOTES.md, "Per-call cost").
//
// Rules the Functions follow, so that torch.compile (AOT tracing with fake, possibly symbolic
// tensors) and compiled autograd trace them:
//   - they only wire kernel ops and cheap ATen ops: no sizes() / data reads (shapes travel as
//     SymInt), no .item(), no host sync;
//   - non-differentiable outputs leave through an out-pointer instead of mark_non_differentiable
//     (compiled autograd asserts on C++ nodes that mark outputs);
//   - grads are not materialized: an unused output costs no zero tensor.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <string>

namespace sslfast::autograd {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = std::optional<Tensor>;
using CT = const Tensor&;
using COT = const OptTensor&;

struct Native {
  static constexpr const char* name = "sslfast";
};
struct Triton {
  static constexpr const char* name = "sslfast_triton";
};

// The typed handle of kernel op `op` in the backend's namespace (look it up once: keep it static).
template <typename Backend, typename Signature>
c10::TypedOperatorHandle<Signature> kernel(const char* op) {
  const std::string name = std::string(Backend::name) + "::" + op;
  return c10::Dispatcher::singleton().findSchemaOrThrow(name.c_str(), "").template typed<Signature>();
}

// Whether a gradient will be asked of a call: grad mode on and some input requiring grad.
inline bool wants_grad(std::initializer_list<const Tensor*> inputs) {
  if (!at::GradMode::is_enabled()) return false;
  for (const Tensor* t : inputs)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}

inline Tensor opt(COT t) { return t.has_value() ? *t : Tensor(); }
inline OptTensor maybe(CT t) { return t.defined() ? OptTensor(t) : OptTensor(); }

}  // namespace sslfast::autograd
