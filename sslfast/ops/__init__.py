"""Public fused ops, one module per family: each function checks its arguments, asks the op table
(``sslfast._dispatch``) for the backend and calls the registered op."""

from .augment import augment_images, drop_mask
from .contrastive import clip_loss, info_nce, nt_xent, siglip_loss, supcon
from .ema import ema_
from .gnn import gat_aggregate, gcn_aggregate, sddmm, spmm
from .masking import masked_patch_loss, random_masking, unshuffle

__all__ = ["nt_xent", "info_nce", "clip_loss", "siglip_loss", "supcon",
           "random_masking", "unshuffle", "masked_patch_loss",
           "spmm", "gcn_aggregate", "sddmm", "gat_aggregate", "augment_images", "drop_mask", "ema_"]
