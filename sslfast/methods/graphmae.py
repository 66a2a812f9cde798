"""GraphMAE (Hou et al. 2022, "GraphMAE: Self-Supervised Masked Graph Autoencoders"; reference:
THUDM/GraphMAE, configs.yml for Cora).

Feature masking: ``mask_rate`` = 0.5 of the nodes are masked per step; of those, a
``replace_rate`` = 0.05 share gets the features of random nodes and the rest a learned
[MASK] token (zeros + token). The encoder (default: ``backbones.GATEncoder``, 2 GAT layers of
4 heads x 128, PReLU, feature dropout 0.2, attention dropout 0.1) embeds the masked graph; a
bias-free linear map goes to the decoder width, the masked nodes' codes are set to 0 again
(re-masking), and a one-head GAT layer reconstructs the input features; the loss is the scaled
cosine error (1 - cos(x_i, x_rec_i))^alpha (alpha = 3) averaged over the masked nodes.

The decoder layer is PyG / DGL ``GATConv(hidden, in_dim, heads=1)`` computed in the order
W (sum_j a_ij h_j) instead of sum_j a_ij (W h_j) (equal for one head: attention logits are
<W h, a> = <h, W^T a>), so the wide output projection runs on the masked rows only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import sslfast
from sslfast.functional import dropout
from sslfast.graph import Graph

from ._common import encoder_dim, fraction, graph_of, positive, positive_int

__all__ = ["GraphMAE", "sce_loss"]


def sce_loss(x, y, alpha=3.0):
    """GraphMAE's scaled cosine error: mean of (1 - cos(x_i, y_i))^alpha."""
    return (1 - (F.normalize(x, dim=-1) * F.normalize(y, dim=-1)).sum(-1)).pow(alpha).mean()


class _GATDecoderLayer(nn.Module):
    """One-head GAT layer in_dim -> out_dim with self loops, feature and attention dropout, that
    returns the outputs of the requested rows only (see the module docstring)."""

    def __init__(self, in_dim, out_dim, feat_drop, attn_drop, negative_slope=0.2):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        self.att_src = nn.Parameter(torch.empty(out_dim))
        self.att_dst = nn.Parameter(torch.empty(out_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        gain = nn.init.calculate_gain("relu")  # DGL GATConv.reset_parameters
        nn.init.xavier_normal_(self.weight, gain=gain)
        for att in (self.att_src, self.att_dst):
            nn.init.xavier_normal_(att.view(1, -1), gain=gain)
        self.feat_drop, self.attn_drop, self.negative_slope = feat_drop, attn_drop, negative_slope
        self._graph_key = None

    def _loop_graph(self, edge_index, n):
        if self._graph_key is not edge_index:
            ei = edge_index[:, edge_index[0] != edge_index[1]]
            loops = torch.arange(n, device=ei.device).expand(2, -1)
            self._graph = Graph.from_edge_index(torch.cat([ei, loops], dim=1), n)
            self._graph_key = edge_index
        return self._graph

    def forward(self, h, edge_index, rows):
        graph = self._loop_graph(edge_index, h.shape[0])
        h = dropout(h, self.feat_drop, self.training)
        alpha_src = (h @ (self.weight.t() @ self.att_src)).unsqueeze(1)
        alpha_dst = (h @ (self.weight.t() @ self.att_dst)).unsqueeze(1)
        agg = sslfast.gat_aggregate(graph, h.unsqueeze(1), alpha_src, alpha_dst, self.negative_slope,
                                    dropout=self.attn_drop if self.training else 0.0)
        return agg[rows, 0] @ self.weight.t() + self.bias


class GraphMAE(nn.Module):
    def __init__(self, encoder: nn.Module, in_dim: int, *, hidden_dim: int | None = None, mask_rate: float = 0.5,
                 replace_rate: float = 0.05, alpha: float = 3.0, feat_drop: float = 0.2, attn_drop: float = 0.1):
        super().__init__()
        self.encoder = encoder
        in_dim = positive_int("in_dim", in_dim)
        d = encoder_dim(encoder, hidden_dim, "hidden_dim")
        self.mask_rate = fraction("mask_rate", mask_rate)
        self.replace_rate = fraction("replace_rate", replace_rate)
        self.alpha = positive("alpha", alpha)
        self.mask_token = nn.Parameter(torch.zeros(1, in_dim))
        self.encoder_to_decoder = nn.Linear(d, d, bias=False)
        self.decoder = _GATDecoderLayer(d, in_dim, feat_drop, attn_drop)

    def mask(self, x):
        """(x_masked, mask_nodes): GraphMAE ``encoding_mask_noise``."""
        n = x.shape[0]
        perm = torch.randperm(n, device=x.device)
        num_mask = int(self.mask_rate * n)
        mask_nodes = perm[:num_mask]
        if self.replace_rate > 0:
            num_noise = int(self.replace_rate * num_mask)
            perm_mask = torch.randperm(num_mask, device=x.device)
            token_nodes = mask_nodes[perm_mask[:int((1 - self.replace_rate) * num_mask)]]
            noise_nodes = mask_nodes[perm_mask[num_mask - num_noise:]] if num_noise else mask_nodes[:0]
            sources = torch.randperm(n, device=x.device)[:num_noise]
            out = x.clone()
            out[token_nodes] = 0.0
            out[noise_nodes] = x[sources]
        else:
            token_nodes = mask_nodes
            out = x.clone()
            out[token_nodes] = 0.0
        is_token = torch.zeros(n, 1, dtype=x.dtype, device=x.device)
        is_token[token_nodes] = 1.0
        return out + is_token * self.mask_token, mask_nodes

    def forward(self, batch, edge_index=None):
        x, edge_index = graph_of(batch, edge_index)
        x_masked, mask_nodes = self.mask(x)
        rep = self.encoder_to_decoder(self.encoder(x_masked, edge_index))
        keep = torch.ones(x.shape[0], 1, dtype=rep.dtype, device=rep.device)
        keep[mask_nodes] = 0.0
        recon = self.decoder(rep * keep, edge_index, mask_nodes)
        return sce_loss(recon, x[mask_nodes], self.alpha)

    def embed(self, x, edge_index):
        return self.encoder(x, edge_index)
