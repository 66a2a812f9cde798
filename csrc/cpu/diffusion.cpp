// Fused diffusion noise steps on CPU: q_sample, the min-SNR-weighted MSE (fwd / bwd) and one
// generic sampler step that DDPM / DDIM / Euler / DPM-Solver++ 2M are instances of
// (math: sslfast/reference/diffusion.py; coefficients: sslfast/ops/diffusion.py).
//
// Every tensor is [B, ...] contiguous; per-sample coefficients come as a [B, K] table in the
// compute dtype, so timesteps never reach the host. One pass over the data per op.
//
// In-kernel noise: element i = k * Q + g (Q = ceil(n / 4), k in 0..3) takes normal k of the
// Philox4x32-10 block with counter (g_lo, g_hi, 0, 0) and key (seed_lo, seed_hi), Box-Muller on
// (u0, u1) and (u2, u3) as Triton's tl.randn4x. The Triton kernels draw the same stream, so both
// backends give the same noise for the same seed; the noise is never written to memory (it lives
// in a per-chunk scratch that stays in cache).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../checks.h"
#include "alloc.h"
#include "blas.h"
#include "isa.h"
#include "philox.h"

#define SSLFAST_IMPL "diffusion_impl.h"
#include "isa_instantiate.h"

namespace sslfast::cpu {

TORCH_LIBRARY_IMPL(sslfast, CPU, m) {
  m.impl("q_sample_fwd", SSLFAST_PICK(q_sample_fwd));
  m.impl("q_sample_bwd", SSLFAST_PICK(q_sample_bwd));
  m.impl("diffusion_loss_fwd", SSLFAST_PICK(diffusion_loss_fwd));
  m.impl("diffusion_loss_bwd", SSLFAST_PICK(diffusion_loss_bwd));
  m.impl("diffusion_step", SSLFAST_PICK(diffusion_step));
  m.impl("diffusion_sigma_step", SSLFAST_PICK(diffusion_sigma_step));
}

}  // namespace sslfast::cpu
