"""Public fused ops. Each family module validates, picks a backend and calls a registered op."""

from .contrastive import clip_loss, info_nce, nt_xent, siglip_loss
from .gnn import (edge_softmax, gat_aggregate, gcn_aggregate, inner_product_edge_loss, negative_sampling,
                  sddmm, spmm)

__all__ = ["nt_xent", "info_nce", "clip_loss", "siglip_loss",
           "spmm", "gcn_aggregate", "sddmm", "edge_softmax", "gat_aggregate",
           "inner_product_edge_loss", "negative_sampling"]
