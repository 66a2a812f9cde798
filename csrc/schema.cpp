// Every sslfast op's schema, written once (docs/ARCHITECTURE.md, "How one op flows").
//
// Two namespaces get the same definitions: `sslfast::` holds the C++ kernels (csrc/cpu/<family>.cpp,
// csrc/cuda/<family>.cpp) and `sslfast_triton::` the Triton ones (sslfast/triton/<family>.py
// registers them from Python). The op table (sslfast/_dispatch.py) picks a namespace per op and
// device. Each family has two kinds of ops:
//   - public ops (nt_xent, random_masking, q_sample, spmm, ...): what sslfast.<op> calls; their
//     autograd is C++ (csrc/autograd/<family>.cpp), identical for both namespaces, and it calls
//   - kernel ops (*_fwd, *_bwd, ...): one device pass each, registered per backend and device.
// Fakes for torch.compile: sslfast/fake/<family>.py.
#include <Python.h>
#include <torch/library.h>

#include <string>

#include "cpu/isa.h"

extern "C" {
// `import sslfast._C` loads this library; the TORCH_LIBRARY blocks below then register.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace {

bool built_with_cuda() {
#ifdef SSLFAST_WITH_CUDA
  return true;
#else
  return false;
#endif
}

const char* const kSchemas[] = {
    // ---------------------------------------------------------------- contrastive
    // Public ops: inputs as the user gives them (any float dtype, any strides).
    "nt_xent(Tensor z1, Tensor z2, float temperature, bool normalize, bool exclude_positive) -> Tensor",
    "info_nce(Tensor query, Tensor key, Tensor? queue, float temperature, bool normalize, "
    "bool in_batch_negatives) -> Tensor",
    "clip_loss(Tensor image, Tensor text, Tensor logit_scale, Tensor? logit_bias) -> Tensor",
    "siglip_loss(Tensor image, Tensor text, Tensor logit_scale, Tensor logit_bias) -> Tensor",
    "supcon(Tensor features, Tensor labels, float temperature, bool normalize, bool pairwise) -> Tensor",
    // Kernels. prepare_rows: cat(x, y) (y optional), L2-normalized rows when `normalize`, in the
    // backend's compute dtype (CPU: float32 for half inputs); returns (rows, norms) with the raw
    // row norms (empty without normalize). Its backward applies the normalization's Jacobian and
    // splits the gradient at row `split` into the two inputs' gradients, in `dtype`.
    "prepare_rows(Tensor x, Tensor? y, bool normalize) -> (Tensor, Tensor)",
    "prepare_rows_bwd(Tensor grad, Tensor rows, Tensor norms, SymInt split, ScalarType dtype) -> (Tensor, Tensor)",
    "nt_xent_fwd(Tensor z, float temperature, bool exclude_positive) -> (Tensor, Tensor)",
    "nt_xent_bwd(Tensor grad_loss, Tensor z, Tensor lse, float temperature, bool exclude_positive) -> Tensor",
    "info_nce_fwd(Tensor query, Tensor key, Tensor? queue, float temperature, bool in_batch_negatives, "
    "bool fold_queue_grad) -> (Tensor, Tensor, Tensor)",
    "info_nce_bwd(Tensor grad_loss, Tensor query, Tensor key, Tensor? queue, Tensor lse, Tensor folded, "
    "float temperature, bool in_batch_negatives) -> (Tensor, Tensor)",
    "clip_loss_fwd(Tensor image, Tensor text, Tensor logit_scale, Tensor? logit_bias) -> (Tensor, Tensor, Tensor)",
    "clip_loss_bwd(Tensor grad_loss, Tensor image, Tensor text, Tensor logit_scale, Tensor? logit_bias, "
    "Tensor row_lse, Tensor col_lse) -> (Tensor, Tensor, Tensor, Tensor)",
    "siglip_loss_fwd(Tensor image, Tensor text, Tensor logit_scale, Tensor logit_bias, bool with_grads) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    "siglip_loss_bwd(Tensor grad_loss, Tensor image, Tensor text, Tensor logit_scale, Tensor logit_bias) "
    "-> (Tensor, Tensor, Tensor, Tensor)",
    // supcon_fwd -> (loss, lse [N], row_stats [2, N]: positives per row, and (pairwise) the sum over
    // a row's positive pairs of sigmoid(lse_neg - s)); see csrc/cpu/contrastive.cpp.
    "supcon_fwd(Tensor z, Tensor labels, float temperature, bool pairwise) -> (Tensor, Tensor, Tensor)",
    "supcon_bwd(Tensor grad_loss, Tensor z, Tensor labels, Tensor lse, Tensor row_stats, float temperature, "
    "bool pairwise) -> Tensor",

    // ---------------------------------------------------------------- masking
    "random_masking(Tensor x, Tensor noise, Tensor? pos_embed, int len_keep, int num_prefix_tokens, "
    "bool int32_indices) -> (Tensor, Tensor, Tensor)",
    "unshuffle(Tensor x_visible, Tensor ids_restore, Tensor mask_token, Tensor? pos_embed, "
    "int num_prefix_tokens) -> Tensor",
    "masked_patch_loss(Tensor pred, Tensor imgs, Tensor mask, int patch_size, bool norm_pix, bool l1) -> Tensor",
    "random_masking_fwd(Tensor x, Tensor noise, Tensor? pos_embed, int len_keep, int num_prefix_tokens, "
    "bool int32_indices) -> (Tensor, Tensor, Tensor)",
    "random_masking_bwd(Tensor grad_visible, Tensor ids_restore, int num_prefix_tokens) -> Tensor",
    "unshuffle_fwd(Tensor x_visible, Tensor ids_restore, Tensor mask_token, Tensor? pos_embed, "
    "int num_prefix_tokens) -> Tensor",
    "unshuffle_bwd(Tensor grad_out, Tensor ids_restore, SymInt len_keep, int num_prefix_tokens) -> (Tensor, Tensor)",
    "masked_patch_loss_fwd(Tensor pred, Tensor imgs, Tensor mask, int patch_size, bool norm_pix, bool l1) "
    "-> Tensor",
    "masked_patch_loss_bwd(Tensor grad_loss, Tensor pred, Tensor imgs, Tensor mask, int patch_size, "
    "bool norm_pix, bool l1) -> Tensor",

    // ---------------------------------------------------------------- diffusion
    // `table`: per-timestep coefficient rows [T, K] in the compute dtype, gathered in the kernel
    // at the int64 timesteps `t` (a scalar or [B]; range-checked on CPU). Noise: `noise` if given,
    // else, when `random_noise`, drawn in the kernel (Philox) with key `seed` if >= 0, else a key
    // drawn from `generator` (or the device's default generator) without leaving the device.
    "q_sample(Tensor x0, Tensor? noise, Tensor table, Tensor t, int seed, Generator? generator, "
    "bool v_target) -> (Tensor, Tensor)",
    "diffusion_loss(Tensor model_output, Tensor target, Tensor weights, Tensor t, int reduction) -> Tensor",
    "q_sample_fwd(Tensor x0, Tensor? noise, Tensor table, Tensor t, int seed, Generator? generator, "
    "bool v_target) -> (Tensor, Tensor)",
    "q_sample_bwd(Tensor? grad_x_t, Tensor? grad_target, Tensor table, Tensor t, bool v_target) -> Tensor",
    "diffusion_loss_fwd(Tensor model_output, Tensor target, Tensor weights, Tensor t, int reduction) -> Tensor",
    "diffusion_loss_bwd(Tensor grad, Tensor model_output, Tensor target, Tensor weights, Tensor t, "
    "int reduction) -> Tensor",
    // One generic sampler step (DDPM, DDIM): `t` None means `table` already holds one row per sample.
    "diffusion_step(Tensor sample, Tensor model_output, Tensor? uncond, Tensor? prev_x0, Tensor? noise, "
    "Tensor table, Tensor? t, float guidance_scale, bool clip, float clip_range, bool random_noise, int seed, "
    "Generator? generator, bool write_x0) -> (Tensor, Tensor)",
    // Euler / DPM-Solver++ 2M: the step's coefficients computed in the kernel from the sigmas.
    "diffusion_sigma_step(Tensor sample, Tensor model_output, Tensor? uncond, Tensor? prev_x0, Tensor sigma, "
    "Tensor sigma_next, Tensor? sigma_prev, str solver, str prediction_type, float guidance_scale, "
    "bool write_x0) -> (Tensor, Tensor)",

    // ---------------------------------------------------------------- augment
    // augment_images: per sample, the box (top, left, height, width; int64 [B, 4]) of the image
    // resampled bilinearly (F.interpolate, align_corners=False) to out_height x out_width, mirrored where
    // flips[b], plus noise_std * N(0, 1) (Philox, key as q_sample's). Gradient to images.
    "augment_images(Tensor images, Tensor boxes, Tensor flips, float noise_std, int seed, Generator? generator, "
    "int out_height, int out_width) -> Tensor",
    // drop_mask: x with entries dropped (zeroed, not rescaled) with probability p, the keep
    // decision of entry i (column i with per_column) uniform(seed, i) >= p (kernels/random.h).
    "drop_mask(Tensor x, float p, int seed, bool per_column) -> Tensor",
    "augment_images_fwd(Tensor images, Tensor boxes, Tensor flips, float noise_std, int seed, Generator? generator, "
    "int out_height, int out_width) -> Tensor",
    "augment_images_bwd(Tensor grad, Tensor boxes, Tensor flips, SymInt height, SymInt width) -> Tensor",
    "drop_mask_fwd(Tensor x, float p, int seed, bool per_column) -> Tensor",
    // ema_: targets = momentum * targets + (1 - momentum) * sources, every pair in one call.
    "ema_(Tensor(a!)[] targets, Tensor[] sources, float momentum) -> ()",

    // ---------------------------------------------------------------- GNN
    // The graph arrives as tensors (sslfast/graph.py): destination-sorted CSR rowptr / col, its
    // transpose colptr / row with csc_perm (CSR position of each CSC entry), hub lists of both.
    "spmm(Tensor rowptr, Tensor col, Tensor colptr, Tensor row, Tensor csc_perm, Tensor hub_rows, "
    "Tensor hub_cols, Tensor? weight, Tensor x, str reduce) -> Tensor",
    "gcn_aggregate(Tensor rowptr, Tensor col, Tensor colptr, Tensor row, Tensor hub_rows, Tensor hub_cols, "
    "Tensor deg_inv_sqrt, Tensor x, bool add_self_loops) -> Tensor",
    // sddmm's output is in the input edge order: perm / inv_perm map CSR positions to it and back.
    "sddmm(Tensor rowptr, Tensor col, Tensor colptr, Tensor row, Tensor csc_perm, Tensor hub_rows, "
    "Tensor hub_cols, Tensor perm, Tensor inv_perm, Tensor a, Tensor b) -> Tensor",
    // gat_aggregate's attention dropout: the probability of edge (CSR position e) at head h is kept
    // (scaled by 1 / (1 - dropout)) when uniform(seed, e * heads + h) >= dropout (kernels/random.h),
    // regenerated in the backward, never stored.
    "gat_aggregate(Tensor rowptr, Tensor col, Tensor colptr, Tensor row, Tensor csc_perm, Tensor hub_rows, "
    "Tensor hub_cols, Tensor x, Tensor alpha_src, Tensor alpha_dst, float negative_slope, float dropout, int seed) "
    "-> Tensor",
    "csr_by_key(Tensor keys, int num_nodes, Tensor? values=None, bool inverse=False) "
    "-> (Tensor, Tensor, Tensor, Tensor)",
    "spmm_fwd(Tensor rowptr, Tensor col, Tensor colptr, Tensor row, Tensor csc_perm, Tensor hub_rows, "
    "Tensor hub_cols, Tensor? weight, Tensor x, str reduce) -> (Tensor, Tensor)",
    "spmm_bwd(Tensor grad_out, Tensor rowptr, Tensor col, Tensor colptr, Tensor row, Tensor csc_perm, "
    "Tensor hub_rows, Tensor hub_cols, Tensor? weight, Tensor x, Tensor arg, str reduce, "
    "bool weight_requires_grad) -> (Tensor, Tensor)",
    "gcn_aggregate_fwd(Tensor rowptr, Tensor col, Tensor colptr, Tensor row, Tensor hub_rows, Tensor hub_cols, "
    "Tensor deg_inv_sqrt, Tensor x, bool add_self_loops) -> Tensor",
    "gcn_aggregate_bwd(Tensor grad_out, Tensor colptr, Tensor row, Tensor hub_cols, Tensor deg_inv_sqrt, "
    "bool add_self_loops) -> Tensor",
    "sddmm_fwd(Tensor rowptr, Tensor col, Tensor colptr, Tensor row, Tensor csc_perm, Tensor hub_rows, "
    "Tensor hub_cols, Tensor a, Tensor b) -> Tensor",
    "sddmm_bwd(Tensor grad_out, Tensor rowptr, Tensor col, Tensor colptr, Tensor row, Tensor csc_perm, "
    "Tensor hub_rows, Tensor hub_cols, Tensor a, Tensor b) -> (Tensor, Tensor)",
    "gat_aggregate_fwd(Tensor rowptr, Tensor col, Tensor colptr, Tensor row, Tensor csc_perm, Tensor hub_rows, "
    "Tensor hub_cols, Tensor x, Tensor alpha_src, Tensor alpha_dst, float negative_slope, float dropout, int seed) "
    "-> (Tensor, Tensor)",
    "gat_aggregate_bwd(Tensor grad_out, Tensor rowptr, Tensor col, Tensor colptr, Tensor row, Tensor csc_perm, "
    "Tensor hub_rows, Tensor hub_cols, Tensor x, Tensor alpha_src, Tensor alpha_dst, Tensor out, Tensor lse, "
    "float negative_slope, float dropout, int seed) -> (Tensor, Tensor, Tensor)",
};

// The public ops whose autograd is C++ (csrc/autograd/<family>.cpp). Every other op is not
// differentiable on its own: its Autograd key falls through, so calling it with inputs that
// require grad is allowed and records nothing (the public ops' autograd calls them).
const char* const kDifferentiable[] = {
    "nt_xent",   "info_nce",          "clip_loss",      "siglip_loss",    "supcon", "random_masking",
    "unshuffle", "masked_patch_loss", "q_sample",       "diffusion_loss", "spmm",   "gcn_aggregate",
    "sddmm",     "gat_aggregate",     "augment_images", "drop_mask",
};

std::string op_name(const char* schema) {
  const std::string s(schema);
  return s.substr(0, s.find('('));
}

bool differentiable(const std::string& name) {
  for (const char* op : kDifferentiable)
    if (name == op) return true;
  return false;
}

void define_all(torch::Library& m) {
  for (const char* schema : kSchemas) m.def(schema);
}

void fall_through_autograd(torch::Library& m) {
  for (const char* schema : kSchemas) {
    const std::string name = op_name(schema);
    if (!differentiable(name)) m.impl(name.c_str(), torch::CppFunction::makeFallthrough());
  }
}

}  // namespace

std::string cpu_isa() { return sslfast::cpu::cpu_isa(); }

TORCH_LIBRARY(sslfast, m) {
  m.def("built_with_cuda() -> bool", &built_with_cuda);
  m.def("cpu_isa() -> str", &cpu_isa);
  define_all(m);
}

TORCH_LIBRARY(sslfast_triton, m) { define_all(m); }

TORCH_LIBRARY_IMPL(sslfast, Autograd, m) { fall_through_autograd(m); }
TORCH_LIBRARY_IMPL(sslfast_triton, Autograd, m) { fall_through_autograd(m); }
