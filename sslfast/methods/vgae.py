"""VGAE (Kipf & Welling 2016, "Variational Graph Auto-Encoders"; reference: tkipf/gae and PyG
``VGAE`` / examples/autoencoder.py --variational).

The encoder returns (mu, logstd) (default: a shared GCN layer of 32, then two GCN heads of 16,
``VGAE.default_encoder``); training samples z = mu + eps * exp(logstd) (logstd clamped at 10, as
PyG), the loss is the edge reconstruction BCE on the positives and fresh uniform negatives
(``sslfast.inner_product_edge_loss``) plus KL(q(z) || N(0, I)) / num_nodes. ``embed`` returns mu.
"""

from __future__ import annotations

import torch
from torch import nn

import sslfast
from sslfast import nn as fast_nn

from ._common import graph_of, positive_int

__all__ = ["VGAE", "VariationalGCNEncoder"]

MAX_LOGSTD = 10.0


class VariationalGCNEncoder(nn.Module):
    """GCN(in, 2 * out) -> ReLU -> (GCN_mu(2 * out, out), GCN_logstd(2 * out, out))."""

    def __init__(self, in_dim: int, out_dim: int = 16):
        super().__init__()
        out_dim = positive_int("out_dim", out_dim)
        self.conv = fast_nn.GCNConv(positive_int("in_dim", in_dim), 2 * out_dim)
        self.conv_mu = fast_nn.GCNConv(2 * out_dim, out_dim)
        self.conv_logstd = fast_nn.GCNConv(2 * out_dim, out_dim)
        self.out_dim = out_dim

    def forward(self, x, edge_index):
        h = self.conv(x, edge_index).relu()
        return self.conv_mu(h, edge_index), self.conv_logstd(h, edge_index)


class VGAE(nn.Module):
    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, batch, edge_index=None, pos_edge_index=None):
        x, edge_index = graph_of(batch, edge_index)
        pos = edge_index if pos_edge_index is None else pos_edge_index
        mu, logstd = self.encoder(x, edge_index)
        logstd = logstd.clamp(max=MAX_LOGSTD)
        z = mu + torch.randn_like(mu) * logstd.exp() if self.training else mu
        neg = sslfast.negative_sampling(edge_index, z.shape[0], pos.shape[1])
        recon = sslfast.inner_product_edge_loss(z, pos, neg)
        kl = -0.5 * torch.mean(torch.sum(1 + 2 * logstd - mu ** 2 - logstd.exp() ** 2, dim=1))
        return recon + kl / z.shape[0]

    def embed(self, x, edge_index):
        return self.encoder(x, edge_index)[0]
