"""DGI (Velickovic et al. 2019, "Deep Graph Infomax"; reference: PetarV-/DGI and PyG
``DeepGraphInfomax`` / examples/infomax_transductive.py).

Encoder (default: one GCN layer of 512 with PReLU) on the graph and on a corruption of it
(node features shuffled across nodes), summary s = sigmoid(mean of the clean embeddings), a
bilinear discriminator D(h, s) = h^T W s; the loss is the BCE of real (1) against corrupted (0)
pairs. The corruption draws one permutation of the rows per step. ``x`` may be a sparse CSR
tensor (bag-of-words features: the encoder's first product is then sparse x dense, as
``sslfast.nn.GCNConv`` computes it); the corruption permutes its rows without densifying.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._common import encoder_dim, graph_of

__all__ = ["DGI", "permute_rows"]


def permute_rows(x, perm):
    """x[perm] for a dense or sparse CSR ``x``; the CSR case gathers each new row's entries from its
    source row (sizes known from x's own nnz: no host sync)."""
    if x.layout != torch.sparse_csr:
        return x[perm]
    crow = x.crow_indices()
    counts = (crow[1:] - crow[:-1])[perm]
    new_crow = torch.cat([crow[:1], counts.cumsum(0).to(crow.dtype)])
    nnz = x.values().shape[0]
    # entry k of new row r is entry k of row perm[r]: its offset is crow[perm[r]] + (k - new_crow[r])
    shift = torch.repeat_interleave(crow[:-1][perm] - new_crow[:-1], counts, output_size=nnz)
    src = torch.arange(nnz, device=crow.device) + shift
    return torch.sparse_csr_tensor(new_crow, x.col_indices()[src], x.values()[src], x.shape, check_invariants=False)


class DGI(nn.Module):
    def __init__(self, encoder: nn.Module, *, hidden_dim: int | None = None):
        super().__init__()
        self.encoder = encoder
        d = encoder_dim(encoder, hidden_dim, "hidden_dim")
        self.weight = nn.Parameter(torch.empty(d, d))
        bound = 1.0 / math.sqrt(d)  # PyG DeepGraphInfomax.reset_parameters: uniform(size, weight)
        nn.init.uniform_(self.weight, -bound, bound)

    def discriminate(self, h, summary):
        return h @ (self.weight @ summary)

    def forward(self, batch, edge_index=None):
        x, edge_index = graph_of(batch, edge_index)
        pos = self.encoder(x, edge_index)
        perm = torch.randperm(x.shape[0], device=x.device)
        neg = self.encoder(permute_rows(x, perm), edge_index)
        summary = torch.sigmoid(pos.mean(dim=0))
        pos_logits, neg_logits = self.discriminate(pos, summary), self.discriminate(neg, summary)
        return (F.binary_cross_entropy_with_logits(pos_logits, torch.ones_like(pos_logits))
                + F.binary_cross_entropy_with_logits(neg_logits, torch.zeros_like(neg_logits)))

    def embed(self, x, edge_index):
        return self.encoder(x, edge_index)
