"""Public fused ops. Each family module validates, picks a backend and calls a registered op."""

from .contrastive import clip_loss, info_nce, nt_xent, siglip_loss
from .gnn import (edge_softmax, gat_aggregate, gcn_aggregate, inner_product_edge_loss, negative_sampling,
                  sddmm, spmm)
from .masking import (bert_mask_tokens, block_mask, masked_patch_loss, node_mask, random_masking, simmim_mask,
                      span_mask, tube_mask, unshuffle)

__all__ = ["nt_xent", "info_nce", "clip_loss", "siglip_loss",
           "random_masking", "unshuffle", "masked_patch_loss", "block_mask", "tube_mask", "simmim_mask", "span_mask",
           "bert_mask_tokens", "node_mask",
           "spmm", "gcn_aggregate", "sddmm", "edge_softmax", "gat_aggregate",
           "inner_product_edge_loss", "negative_sampling"]
