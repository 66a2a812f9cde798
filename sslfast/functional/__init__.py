"""Torch compositions that are not fused kernels: mask generators and graph helpers."""

from .graph import edge_softmax, inner_product_edge_loss, negative_sampling
from .masks import bert_mask_tokens, block_mask, node_mask, simmim_mask, span_mask, tube_mask

__all__ = ["block_mask", "tube_mask", "simmim_mask", "span_mask", "bert_mask_tokens", "node_mask",
           "edge_softmax", "inner_product_edge_loss", "negative_sampling"]
