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

Two exact rewrites keep the step off the N x F dense products (``project_masked``,
``sce_loss_of_codes``): with the GAT encoder, the first layer's projection of the masked input is
computed per row kind (kept rows from the features, sparse when x is CSR; mask-token rows as one
dropout mask times mask_token * W, so the input never needs a gradient); with CSR features, the
loss is computed from the decoder's codes, W^T W and the targets' sparse projection, without the
[masked nodes x F] reconstruction. Any other encoder gets the dense masked input.
"""

from __future__ import annotations

from collections import namedtuple

import torch
from torch import nn

import sslfast
from sslfast import drop_mask
from sslfast.functional import dropout
from sslfast.graph import Graph

from ._common import encoder_dim, fraction, graph_of, positive, positive_int
from .backbones import GATEncoder, graphmae_gat_init_

_Draw = namedtuple("_Draw", "mask_nodes unmasked token noise sources kept")

__all__ = ["GraphMAE", "sce_loss", "sce_loss_of_codes"]


def sce_loss(x, y, alpha=3.0):
    """GraphMAE's scaled cosine error: mean of (1 - cos(x_i, y_i))^alpha, cos as the dot product of
    ``F.normalize``'d rows (norms clamped at 1e-12), computed from the row dot products and norms:
    half the full-size temporaries of normalizing both matrices."""
    cos = (x * y).sum(-1) / (x.norm(dim=-1).clamp_min(1e-12) * y.norm(dim=-1).clamp_min(1e-12))
    return (1 - cos).clamp_min(0).pow(alpha).mean()  # clamp: a cos rounded above 1 with a fractional alpha


def sce_loss_of_codes(codes, weight, bias, target_proj, target_norm, alpha=3.0):
    """``sce_loss(codes @ weight.T + bias, y, alpha)`` without the [M, F] reconstruction r, for
    targets y given as ``target_proj = y @ [weight, bias]`` [M, d + 1] (a sparse product when y is
    sparse) and ``target_norm`` = ||y|| [M]: <r, y> = <a, y W> + <b, y> and
    ||r||^2 = a^T (W^T W) a + 2 <a, W^T b> + ||b||^2. The products are d x d and F x d x d where the
    reconstruction's are M x F x d (GraphMAE's decoder: d = 512 codes to F = 1433 / 3703 features)."""
    gram = _Gram.apply(weight)
    dot = (codes * target_proj[:, :-1]).sum(-1) + target_proj[:, -1]
    sq = ((codes @ gram) * codes).sum(-1) + 2 * (codes @ (weight.t() @ bias)) + bias.dot(bias)
    r_norm = sq.clamp_min(1e-24).sqrt()  # max(||r||, 1e-12), as F.normalize clamps
    cos = dot / (r_norm * target_norm.clamp_min(1e-12))
    return (1 - cos).clamp_min(0).pow(alpha).mean()


@torch.compiler.disable  # dynamo does not trace a CSR tensor's values(): this part stays eager
def _sparse_dropout_matmul(x, weight_t, p, training):
    """dropout(x, p) @ weight_t for a CSR x (the dropout on its stored entries only)."""
    return dropout(x, p, training) @ weight_t


class _Gram(torch.autograd.Function):
    """W^T W with the backward W (G + G^T): one F x d x d product where autograd's mm takes two."""

    @staticmethod
    def forward(ctx, weight):
        ctx.save_for_backward(weight)
        return weight.t() @ weight

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return weight @ (grad + grad.t())


class _GATDecoderLayer(nn.Module):
    """One-head GAT layer in_dim -> out_dim with self loops, feature and attention dropout, that
    returns the outputs of the requested rows only (see the module docstring)."""

    def __init__(self, in_dim, out_dim, feat_drop, attn_drop, negative_slope=0.2):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        self.att_src = nn.Parameter(torch.empty(out_dim))
        self.att_dst = nn.Parameter(torch.empty(out_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        # One head: DGL's attention shape [1, 1, out_dim]
        graphmae_gat_init_(self.weight, self.att_src.view(1, 1, -1), self.att_dst.view(1, 1, -1), self.bias)
        self.feat_drop, self.attn_drop, self.negative_slope = feat_drop, attn_drop, negative_slope
        self._graph_key = None

    def _loop_graph(self, edge_index, n):
        if self._graph_key is not edge_index:
            ei = edge_index[:, edge_index[0] != edge_index[1]]
            loops = torch.arange(n, device=ei.device).expand(2, -1)
            self._graph = Graph.from_edge_index(torch.cat([ei, loops], dim=1), n)
            self._graph_key = edge_index
        return self._graph

    def codes(self, h, edge_index, rows):
        """sum_j a_ij h_j [M, in_dim] of the requested rows: the layer's output is codes @ W^T + b."""
        graph = self._loop_graph(edge_index, h.shape[0])
        h = dropout(h, self.feat_drop, self.training)
        alpha = h @ (self.weight.t() @ torch.stack([self.att_src, self.att_dst], dim=1))  # one F x d product
        alpha_src, alpha_dst = alpha[:, :1], alpha[:, 1:]
        agg = sslfast.gat_aggregate(graph, h.unsqueeze(1), alpha_src, alpha_dst, self.negative_slope,
                                    dropout=self.attn_drop if self.training else 0.0)
        return agg[rows, 0]

    def forward(self, h, edge_index, rows):
        return self.codes(h, edge_index, rows) @ self.weight.t() + self.bias


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
        self._features_key = None

    def draw(self, n, device):
        """GraphMAE ``encoding_mask_noise``'s node sets, as index tensors: ``mask_nodes`` (a
        ``mask_rate`` share of the nodes), split into ``token`` nodes (input: the mask token), ``noise``
        nodes (input: the features of the random nodes ``sources``) and, when the two shares round
        down, the rest of the masked nodes, which keep their features as in the reference; ``kept``:
        the nodes whose input is their own features (the unmasked ones and that rest)."""
        perm = torch.randperm(n, device=device)
        num_mask = int(self.mask_rate * n)
        mask_nodes, unmasked = perm[:num_mask], perm[num_mask:]
        if self.replace_rate > 0:
            num_noise = int(self.replace_rate * num_mask)
            num_token = int((1 - self.replace_rate) * num_mask)
            perm_mask = torch.randperm(num_mask, device=device)
            token = mask_nodes[perm_mask[:num_token]]
            noise = mask_nodes[perm_mask[num_mask - num_noise:]]
            sources = torch.randperm(n, device=device)[:num_noise]
            kept = torch.cat([unmasked, mask_nodes[perm_mask[num_token:num_mask - num_noise]]])
        else:
            token, noise, sources, kept = mask_nodes, perm[:0], perm[:0], unmasked
        return _Draw(mask_nodes, unmasked, token, noise, sources, kept)

    def mask(self, x, draw=None):
        """(x_masked, mask_nodes): the dense masked input of GraphMAE ``encoding_mask_noise``."""
        draw = self.draw(x.shape[0], x.device) if draw is None else draw
        out = x.clone()
        out[draw.token] = 0.0
        out[draw.noise] = x[draw.sources]
        is_token = torch.zeros(x.shape[0], 1, dtype=x.dtype, device=x.device)
        is_token[draw.token] = 1.0
        return out + is_token * self.mask_token, draw.mask_nodes

    def project_masked(self, x, x_sparse, draw, weight, p):
        """``dropout(x_masked, p) @ weight.T`` [N, out] for a first layer ``weight`` [out, F], without
        the dense N x F masked input or its gradient (which the dense path computes only to reach
        the mask token). Each row is drawn as in the dense path, each with its own dropout mask:

        * kept rows: their own features, as a sparse product when ``x_sparse`` (CSR) is given;
        * noise rows: the features of their source nodes (fresh masks, not the sources' own rows);
        * token rows: dropout(mask_token) for each, i.e. D @ (mask_token^T * W^T) with D = dropout of
          ones [T, F], a constant: the mask token's and W's gradients come from the one product D^T G.
        """
        training = self.training
        wt = weight.t()
        if x_sparse is not None:
            h_kept = _sparse_dropout_matmul(x_sparse, wt, p, training)[draw.kept]
        else:
            h_kept = dropout(x[draw.kept], p, training) @ wt
        h_noise = dropout(x[draw.sources], p, training) @ wt
        if training and p > 0:  # the 1 / (1 - p) scale goes on the F x out factor, not the T x F mask
            keep = drop_mask(torch.ones(draw.token.numel(), x.shape[1], dtype=x.dtype, device=x.device), p)
            h_token = keep @ (self.mask_token.t() * (wt * (1.0 / (1.0 - p) if p < 1 else 0.0)))
        else:
            h_token = (self.mask_token @ wt).expand(draw.token.numel(), -1)
        rows = torch.cat([draw.kept, draw.noise, draw.token])
        h = torch.cat([h_kept, h_noise, h_token])
        return h.new_zeros(x.shape[0], h.shape[1]).index_copy(0, rows, h)

    def _features(self, x):
        """(dense x, CSR x or None, row norms): a CSR input's dense copy and norms are cached while
        x is the same tensor."""
        if x.layout == torch.strided:
            return x, None, None
        if x.layout != torch.sparse_csr:
            raise ValueError(f"x must be a dense or sparse CSR tensor, got layout {x.layout}")
        if self._features_key is not x:
            dense = x.to_dense()
            self._features_cache, self._features_key = (dense, x, dense.norm(dim=1)), x
        return self._features_cache

    def forward(self, batch, edge_index=None):
        x, edge_index = graph_of(batch, edge_index)
        x, x_sparse, x_norm = self._features(x)
        draw = self.draw(x.shape[0], x.device)
        if isinstance(self.encoder, GATEncoder):
            first = self.encoder.convs[0]
            h0 = self.project_masked(x, x_sparse, draw, first.lin.weight, self.encoder.in_drop)
            h = self.encoder(h0, edge_index, projected=True)
        else:
            h = self.encoder(self.mask(x, draw)[0], edge_index)
        # Re-masking: the masked nodes' codes are 0, so only the unmasked rows go through the map.
        code = self.encoder_to_decoder(h[draw.unmasked])
        rep = code.new_zeros(h.shape[0], code.shape[1]).index_copy(0, draw.unmasked, code)
        codes = self.decoder.codes(rep, edge_index, draw.mask_nodes)
        dec = self.decoder
        if x_sparse is None:
            return sce_loss(codes @ dec.weight.t() + dec.bias, x[draw.mask_nodes], self.alpha)
        target_proj = (x_sparse @ torch.cat([dec.weight, dec.bias.unsqueeze(1)], dim=1))[draw.mask_nodes]
        return sce_loss_of_codes(codes, dec.weight, dec.bias, target_proj, x_norm[draw.mask_nodes], self.alpha)

    def embed(self, x, edge_index):
        return self.encoder(self._features(x)[0], edge_index)
