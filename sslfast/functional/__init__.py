"""Torch compositions that are not fused kernels: mask generators and graph helpers."""

from .augment import (augment, drop_edges, dropout, gaussian_noise, mask_features, random_flip, random_resized_crop,
                      sample_crop_boxes)
from .graph import edge_softmax, inner_product_edge_loss, negative_sampling
from .masks import bert_mask_tokens, block_mask, node_mask, simmim_mask, span_mask, tube_mask

__all__ = ["block_mask", "tube_mask", "simmim_mask", "span_mask", "bert_mask_tokens", "node_mask",
           "edge_softmax", "inner_product_edge_loss", "negative_sampling",
           "augment", "random_resized_crop", "random_flip", "gaussian_noise", "sample_crop_boxes",
           "drop_edges", "mask_features", "dropout"]
