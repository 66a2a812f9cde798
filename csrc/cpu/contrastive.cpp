// Fused contrastive losses on CPU: NT-Xent, InfoNCE, CLIP, SigLIP (math: sslfast/reference/contrastive.py).
//
// No N x M logits: score tiles of <= 256 x 256 are produced by BLAS into per-thread scratch,
// folded into online row / column logsumexps (forward) or turned into softmax weights and
// multiplied back onto the embeddings (backward, recomputing the tile from the saved lse).
// Extra memory is O((N + M) + threads * tile). Tiles run in rounds (tile_schedule.h) whose tiles
// touch disjoint row blocks: deterministic without atomics.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include "../checks.h"
#include "alloc.h"
#include "blas.h"
#include "isa.h"
#include "scratch.h"
#include "tile_schedule.h"

#define SSLFAST_IMPL "contrastive_impl.h"
#include "isa_instantiate.h"

namespace sslfast::cpu {

TORCH_LIBRARY_IMPL(sslfast, CPU, m) {
  m.impl("nt_xent_fwd", SSLFAST_PICK(nt_xent_fwd));
  m.impl("nt_xent_bwd", SSLFAST_PICK(nt_xent_bwd));
  m.impl("info_nce_fwd", SSLFAST_PICK(info_nce_fwd));
  m.impl("info_nce_bwd", SSLFAST_PICK(info_nce_bwd));
  m.impl("clip_loss_fwd", SSLFAST_PICK(clip_loss_fwd));
  m.impl("clip_loss_bwd", SSLFAST_PICK(clip_loss_bwd));
  m.impl("siglip_loss_fwd", SSLFAST_PICK(siglip_loss_fwd));
  m.impl("siglip_loss_bwd", SSLFAST_PICK(siglip_loss_bwd));
  m.impl("supcon_fwd", SSLFAST_PICK(supcon_fwd));
  m.impl("supcon_bwd", SSLFAST_PICK(supcon_bwd));
  m.impl("prepare_rows", SSLFAST_PICK(prepare_rows));
  m.impl("prepare_rows_bwd", SSLFAST_PICK(prepare_rows_bwd));
}

}  // namespace sslfast::cpu
