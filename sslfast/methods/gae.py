"""GAE (Kipf & Welling 2016, "Variational Graph Auto-Encoders"; reference: tkipf/gae and PyG
``GAE`` / examples/autoencoder.py).

A graph encoder (default: 2-layer GCN 32 -> 16, ``backbones.GCNEncoder``) and the inner-product
decoder; the loss is the binary cross entropy of sigmoid(<z_i, z_j>) on the positive training
edges and as many uniform negative pairs drawn anew each step (``sslfast.negative_sampling``),
through the fused ``sslfast.inner_product_edge_loss`` (per-edge dot products by SDDMM, no E x F
tensor).

``forward(x, edge_index, pos_edge_index=None)``: messages pass over ``edge_index``; the positives
default to it. Negatives avoid every edge of ``edge_index``.
"""

from __future__ import annotations

from torch import nn

import sslfast

from ._common import graph_of

__all__ = ["GAE"]


class GAE(nn.Module):
    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def encode(self, x, edge_index):
        return self.encoder(x, edge_index)

    def recon_loss(self, z, edge_index, pos_edge_index):
        neg = sslfast.negative_sampling(edge_index, z.shape[0], pos_edge_index.shape[1])
        return sslfast.inner_product_edge_loss(z, pos_edge_index, neg)

    def forward(self, batch, edge_index=None, pos_edge_index=None):
        x, edge_index = graph_of(batch, edge_index)
        pos = edge_index if pos_edge_index is None else pos_edge_index
        return self.recon_loss(self.encode(x, edge_index), edge_index, pos)

    def embed(self, x, edge_index):
        return self.encode(x, edge_index)
