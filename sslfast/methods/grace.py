"""GRACE (Zhu et al. 2020, "Deep Graph Contrastive Representation Learning"; reference:
CRIPAC-DIG/GRACE, config.yaml for Cora).

Two views of the graph, each with its own edge dropping (rates 0.2 / 0.4) and feature-column
masking (0.3 / 0.4), through a shared encoder (default: 2-layer GCN 2*128 -> 128 with ReLU) and a
projection head (Linear-ELU-Linear, 128); the loss is the symmetric GRACE objective, whose
denominators hold the other view's nodes and the same view's other nodes: exactly NT-Xent on
the 2N projected rows at tau = 0.4, through the fused ``sslfast.nt_xent``.
"""

from __future__ import annotations

import inspect

from torch import nn

import sslfast
from sslfast.functional import drop_edges, mask_features

from ._common import encoder_dim, fraction, graph_of, positive, positive_int

__all__ = ["GRACE"]


def _takes_edge_weight(encoder) -> bool:
    """Whether ``encoder(x, edge_index, edge_weight=w)`` is accepted (sslfast's and PyG's GCN stacks)."""
    try:
        params = inspect.signature(encoder.forward).parameters
    except (TypeError, ValueError):
        return False
    return "edge_weight" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class GRACE(nn.Module):
    def __init__(self, encoder: nn.Module, *, hidden_dim: int | None = None, proj_dim: int = 128,
                 tau: float = 0.4, drop_edge: tuple = (0.2, 0.4), drop_feature: tuple = (0.3, 0.4)):
        super().__init__()
        self.encoder = encoder
        d = encoder_dim(encoder, hidden_dim, "hidden_dim")
        self.fc1 = nn.Linear(d, positive_int("proj_dim", proj_dim))
        self.fc2 = nn.Linear(proj_dim, d)
        self.tau = positive("tau", tau)
        self.drop_edge = tuple(fraction("drop_edge", p) for p in drop_edge)
        self.drop_feature = tuple(fraction("drop_feature", p) for p in drop_feature)
        if len(self.drop_edge) != 2 or len(self.drop_feature) != 2:
            raise ValueError("drop_edge and drop_feature must hold one rate per view (2 each)")
        self._weighted = _takes_edge_weight(encoder)

    def project(self, h):
        return self.fc2(nn.functional.elu(self.fc1(h)))

    def _encode_view(self, x, edge_index, edge_drop, feature_drop):
        x = mask_features(x, feature_drop)
        weight = drop_edges(edge_index, edge_drop)  # 0/1 per edge: the graph is built once, not per view
        if self._weighted:
            return self.encoder(x, edge_index, edge_weight=weight)
        return self.encoder(x, edge_index[:, weight.bool()])  # an encoder without edge weights: rebuilt graph

    def forward(self, batch, edge_index=None):
        x, edge_index = graph_of(batch, edge_index)
        views = [self.project(self._encode_view(x, edge_index, pe, pf))
                 for pe, pf in zip(self.drop_edge, self.drop_feature)]
        return sslfast.nt_xent(views[0], views[1], self.tau)

    def embed(self, x, edge_index):
        return self.encoder(x, edge_index)
