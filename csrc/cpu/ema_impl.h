// The EMA CPU kernel and its op entry point, compiled once per instruction set by csrc/cpu/ema.cpp
// (see isa.h): no include guard; SSLFAST_AVX2 says which pass this is.

namespace {

constexpr int64_t kEmaChunk = 1 << 15;  // elements per parallel task

template <typename T>
void ema_span(T* target, const T* source, int64_t n, double momentum) {
  using A = at::opmath_type<T>;
  const A m = A(momentum), rest = A(1.0 - momentum);
  for (int64_t i = 0; i < n; ++i) target[i] = T(m * A(target[i]) + rest * A(source[i]));
}

// Every (target, source) pair in one parallel pass: the pairs are cut into chunks of at most
// kEmaChunk elements, one task list for all of them (lightly's loop issues two ops per parameter).
void ema_(at::TensorList targets, at::TensorList sources, double momentum) {
  TORCH_CHECK_VALUE(targets.size() == sources.size(), "targets and sources must have the same length, got ",
                    targets.size(), " and ", sources.size());
  TORCH_CHECK_VALUE(momentum >= 0 && momentum <= 1, "momentum must be in [0, 1], got ", momentum);
  struct Task {
    int64_t pair, begin, end;
  };
  std::vector<Task> tasks;
  for (size_t p = 0; p < targets.size(); ++p) {
    const at::Tensor& t = targets[p];
    const at::Tensor& s = sources[p];
    TORCH_CHECK(t.device().is_cpu() && s.device().is_cpu(), "targets[", p, "] and sources[", p,
                "] must be CPU tensors");
    TORCH_CHECK_VALUE(t.sizes() == s.sizes(), "targets[", p, "] has shape ", t.sizes(), " but sources[", p, "] has ",
                      s.sizes());
    TORCH_CHECK_TYPE(t.scalar_type() == s.scalar_type() && at::isFloatingType(t.scalar_type()), "targets[", p,
                     "] and sources[", p, "] must share one floating dtype, got ", t.scalar_type(), " and ",
                     s.scalar_type());
    TORCH_CHECK(t.is_contiguous(), "targets[", p, "] must be contiguous (it is updated in place)");
    for (int64_t i = 0; i < t.numel(); i += kEmaChunk)
      tasks.push_back({int64_t(p), i, std::min(t.numel(), i + kEmaChunk)});
  }
  std::vector<at::Tensor> contiguous_sources(sources.begin(), sources.end());
  for (auto& s : contiguous_sources) s = s.contiguous();
  at::parallel_for(0, int64_t(tasks.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const Task& task = tasks[k];
      const at::Tensor& t = targets[task.pair];
      const at::Tensor& s = contiguous_sources[task.pair];
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "ema_", [&] {
        ema_span(t.data_ptr<scalar_t>() + task.begin, s.const_data_ptr<scalar_t>() + task.begin, task.end - task.begin,
                 momentum);
      });
    }
  });
}

}  // namespace
