// Fused MAE-style masking on CPU: random_masking, unshuffle, masked_patch_loss
// (math: sslfast/reference/masking.py).
//
// random_masking: one pass per sample sorts the patch indices by noise (ties by index, NaN last:
// torch's stable sort), writes ids_restore as the inverse of that order (no second sort), the
// mask, and gathers the kept rows (+ pos_embed) straight into x_visible.
// unshuffle: one gather per output row; ids_restore values outside [0, len_keep) select the
// mask token, so any index tensor is safe to read. Its backward scatters each kept row to the
// single visible slot that produced it, and reduces the mask-token gradient per sample first
// (fixed order: deterministic, independent of the thread count).
// masked_patch_loss: per masked patch, reads its p x p x C pixels straight from imgs (NCHW) into
// a per-thread buffer, normalizes, and reduces; unmasked patches are never read. The patchified
// target never exists, forward or backward.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "../checks.h"
#include "alloc.h"
#include "isa.h"
#include "scratch.h"

#define SSLFAST_IMPL "masking_impl.h"
#include "isa_instantiate.h"

namespace sslfast::cpu {

TORCH_LIBRARY_IMPL(sslfast, CPU, m) {
  m.impl("random_masking_fwd", SSLFAST_PICK(random_masking_fwd));
  m.impl("random_masking_bwd", SSLFAST_PICK(random_masking_bwd));
  m.impl("unshuffle_fwd", SSLFAST_PICK(unshuffle_fwd));
  m.impl("unshuffle_bwd", SSLFAST_PICK(unshuffle_bwd));
  m.impl("masked_patch_loss_fwd", SSLFAST_PICK(masked_patch_loss_fwd));
  m.impl("masked_patch_loss_bwd", SSLFAST_PICK(masked_patch_loss_bwd));
}

}  // namespace sslfast::cpu
