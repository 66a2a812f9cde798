// Fused data augmentations on CPU (math: sslfast/reference/augment.py): the random-resized-crop +
// flip + noise of a batch of small images in one pass over the output (sampling parameters drawn
// on the device beforehand, sslfast/functional/augment.py), and the hash-keyed drop mask of edge
// dropping and feature masking (kernels/random.h: the mask is regenerated, never stored).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

#include "../../kernels/random.h"
#include "../checks.h"
#include "alloc.h"
#include "isa.h"
#include "keep_factors.h"
#include "philox.h"

#define SSLFAST_IMPL "augment_impl.h"
#include "isa_instantiate.h"

namespace sslfast::cpu {

TORCH_LIBRARY_IMPL(sslfast, CPU, m) {
  m.impl("augment_images_fwd", SSLFAST_PICK(augment_images_fwd));
  m.impl("augment_images_bwd", SSLFAST_PICK(augment_images_bwd));
  m.impl("drop_mask_fwd", SSLFAST_PICK(drop_mask_fwd));
}

}  // namespace sslfast::cpu
