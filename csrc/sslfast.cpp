// Every sslfast op's schema, in one place. Kernels register per backend:
// csrc/cpu/<op>.cpp (CPU), csrc/cuda/<op>.cpp (CUDA). Python adds fakes and autograd
// (sslfast/ops/_<family>_schema.py), so these schemas must match the strings there
// (tests/test_contrastive.py checks it).
#include <Python.h>
#include <torch/library.h>

extern "C" {
// `import sslfast._C` loads this library; the TORCH_LIBRARY blocks below then register.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

static bool built_with_cuda() {
#ifdef SSLFAST_WITH_CUDA
  return true;
#else
  return false;
#endif
}

TORCH_LIBRARY(sslfast, m) {
  m.def("built_with_cuda() -> bool", &built_with_cuda);

  // Contrastive family (csrc/cpu/contrastive.cpp; Triton twin in sslfast/triton/contrastive.py).
  m.def("nt_xent_fwd(Tensor z, float temperature, bool exclude_positive) -> (Tensor, Tensor)");
  m.def("nt_xent_bwd(Tensor grad_loss, Tensor z, Tensor lse, float temperature, "
        "bool exclude_positive) -> Tensor");
  m.def("info_nce_fwd(Tensor query, Tensor key, Tensor? queue, float temperature, "
        "bool in_batch_negatives, bool fold_queue_grad) -> (Tensor, Tensor, Tensor)");
  m.def("info_nce_bwd(Tensor grad_loss, Tensor query, Tensor key, Tensor? queue, Tensor lse, "
        "Tensor folded, float temperature, bool in_batch_negatives) -> (Tensor, Tensor)");
  m.def("clip_loss_fwd(Tensor image, Tensor text, Tensor logit_scale, Tensor? logit_bias) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("clip_loss_bwd(Tensor grad_loss, Tensor image, Tensor text, Tensor logit_scale, "
        "Tensor? logit_bias, Tensor row_lse, Tensor col_lse) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("siglip_loss_fwd(Tensor image, Tensor text, Tensor logit_scale, Tensor logit_bias, bool with_grads) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("siglip_loss_bwd(Tensor grad_loss, Tensor image, Tensor text, Tensor logit_scale, "
        "Tensor logit_bias) -> (Tensor, Tensor, Tensor, Tensor)");

  // Diffusion family (csrc/cpu/diffusion.cpp; Triton twin in sslfast/triton/diffusion.py).
  m.def("diffusion_q_sample(Tensor x0, Tensor? noise, Tensor coefs, int seed, bool v_target) -> (Tensor, Tensor)");
  m.def("diffusion_loss_fwd(Tensor model_output, Tensor target, Tensor weight) -> Tensor");
  m.def("diffusion_loss_bwd(Tensor grad_per_sample, Tensor model_output, Tensor target, Tensor weight) -> Tensor");
  m.def("diffusion_step(Tensor sample, Tensor model_output, Tensor? uncond, Tensor? prev_x0, Tensor? noise, "
        "Tensor coefs, float guidance_scale, bool clip, float clip_range, int seed, bool write_x0) "
        "-> (Tensor, Tensor)");
  m.def("diffusion_sigma_coefs(Tensor sigma, Tensor sigma_next, Tensor? sigma_prev, int batch, str solver, "
        "str prediction_type, ScalarType dtype) -> Tensor");

  // Masking family (csrc/cpu/masking.cpp; Triton twin in sslfast/triton/masking.py).
  m.def("random_masking_fwd(Tensor x, Tensor noise, Tensor? pos_embed, int len_keep, "
        "int num_prefix_tokens, bool int32_indices) -> (Tensor, Tensor, Tensor)");
  m.def("random_masking_bwd(Tensor grad_visible, Tensor ids_restore, int num_prefix_tokens) -> Tensor");
  m.def("unshuffle_fwd(Tensor x_visible, Tensor ids_restore, Tensor mask_token, Tensor? pos_embed, "
        "int num_prefix_tokens) -> Tensor");
  m.def("unshuffle_bwd(Tensor grad_out, Tensor ids_restore, int len_keep, int num_prefix_tokens) "
        "-> (Tensor, Tensor)");
  m.def("masked_patch_loss_fwd(Tensor pred, Tensor imgs, Tensor mask, int patch_size, bool norm_pix, "
        "bool l1) -> Tensor");
  m.def("masked_patch_loss_bwd(Tensor grad_loss, Tensor pred, Tensor imgs, Tensor mask, int patch_size, "
        "bool norm_pix, bool l1) -> Tensor");

  // GNN family (csrc/cpu/spmm.cpp, its construction csr_by_key in csrc/cpu/graph.cpp; CUDA:
  // csrc/cuda/spmm.cpp -> kernels/spmm.cu). The graph is a destination-sorted CSR plus its cached
  // transpose (sslfast/graph.py); forward ops take the transpose too so that autograd can hand it
  // to the backward op.
  m.def("csr_by_key(Tensor keys, int num_nodes, Tensor? values=None, bool inverse=False) "
        "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def("spmm_fwd(Tensor rowptr, Tensor col, Tensor colptr, Tensor row, Tensor csc_perm, "
        "Tensor hub_rows, Tensor hub_cols, Tensor? weight, Tensor x, str reduce) -> (Tensor, Tensor)");
  m.def("spmm_bwd(Tensor grad_out, Tensor rowptr, Tensor col, Tensor colptr, Tensor row, "
        "Tensor csc_perm, Tensor hub_rows, Tensor hub_cols, Tensor? weight, Tensor x, Tensor arg, "
        "str reduce, bool weight_requires_grad) -> (Tensor, Tensor)");
  m.def("gcn_aggregate_fwd(Tensor rowptr, Tensor col, Tensor colptr, Tensor row, Tensor hub_rows, "
        "Tensor hub_cols, Tensor deg_inv_sqrt, Tensor x, bool add_self_loops) -> Tensor");
  m.def("gcn_aggregate_bwd(Tensor grad_out, Tensor colptr, Tensor row, Tensor hub_cols, "
        "Tensor deg_inv_sqrt, bool add_self_loops) -> Tensor");
  m.def("sddmm_fwd(Tensor rowptr, Tensor col, Tensor colptr, Tensor row, Tensor csc_perm, "
        "Tensor hub_rows, Tensor hub_cols, Tensor a, Tensor b) -> Tensor");
  m.def("sddmm_bwd(Tensor grad_out, Tensor rowptr, Tensor col, Tensor colptr, Tensor row, "
        "Tensor csc_perm, Tensor hub_rows, Tensor hub_cols, Tensor a, Tensor b) -> (Tensor, Tensor)");
  m.def("gat_aggregate_fwd(Tensor rowptr, Tensor col, Tensor colptr, Tensor row, Tensor csc_perm, "
        "Tensor hub_rows, Tensor hub_cols, Tensor x, Tensor alpha_src, Tensor alpha_dst, "
        "float negative_slope) -> (Tensor, Tensor)");
  m.def("gat_aggregate_bwd(Tensor grad_out, Tensor rowptr, Tensor col, Tensor colptr, Tensor row, "
        "Tensor csc_perm, Tensor hub_rows, Tensor hub_cols, Tensor x, Tensor alpha_src, "
        "Tensor alpha_dst, Tensor out, Tensor lse, float negative_slope) -> (Tensor, Tensor, Tensor)");
}
