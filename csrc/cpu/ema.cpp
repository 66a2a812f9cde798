// The multi-tensor EMA of momentum methods (BYOL, MoCo, DINO) on CPU: every parameter pair of a
// model updated in place in one call (math: sslfast/reference/ema.py).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "isa.h"

#define SSLFAST_IMPL "ema_impl.h"
#include "isa_instantiate.h"

namespace sslfast::cpu {

TORCH_LIBRARY_IMPL(sslfast, CPU, m) { m.impl("ema_", SSLFAST_PICK(ema_)); }

}  // namespace sslfast::cpu
