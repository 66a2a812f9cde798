// GNN message passing on CPU: SpMM (sum / mean / max / min, optional edge weights), the GCN
// aggregation with fused symmetric normalization, SDDMM and the fused GAT aggregation (math:
// sslfast/reference/gnn.py).
//
// Everything runs on destination-sorted CSR (rowptr, col) built once by sslfast.graph.Graph;
// backward w.r.t. x runs the same row kernels over the cached transpose (colptr, row, csc_perm),
// so every output row is written by exactly one thread: deterministic, no atomics, never an
// E x F message tensor. Offsets are int64.
//
// Load balance: rows are cut into chunks of about equal edge count (binary search on rowptr);
// rows of degree >= kHubDegree ("hubs", listed by the Graph) are skipped there and done one at a
// time afterwards, split over feature blocks, so a power-law hub does not serialize one thread.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "../../kernels/random.h"
#include "../checks.h"
#include "alloc.h"
#include "blas.h"
#include "isa.h"

#define SSLFAST_IMPL "spmm_impl.h"
#include "isa_instantiate.h"

namespace sslfast::cpu {

TORCH_LIBRARY_IMPL(sslfast, CPU, m) {
  m.impl("gat_aggregate_fwd", SSLFAST_PICK(gat_aggregate_fwd));
  m.impl("gat_aggregate_bwd", SSLFAST_PICK(gat_aggregate_bwd));
  m.impl("sddmm_fwd", SSLFAST_PICK(sddmm_fwd));
  m.impl("sddmm_bwd", SSLFAST_PICK(sddmm_bwd));
  m.impl("spmm_fwd", SSLFAST_PICK(spmm_fwd));
  m.impl("spmm_bwd", SSLFAST_PICK(spmm_bwd));
  m.impl("gcn_aggregate_fwd", SSLFAST_PICK(gcn_aggregate_fwd));
  m.impl("gcn_aggregate_bwd", SSLFAST_PICK(gcn_aggregate_bwd));
}

}  // namespace sslfast::cpu
