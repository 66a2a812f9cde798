"""Synthetic stochastic-block-model graphs of any size, for speed runs (and smoke tests).

Each node belongs to one of ``num_classes`` equal blocks; each of the ``num_nodes *
avg_degree / 2`` undirected edges picks a uniform source and, with probability ``p_intra``, a
target in the source's block, else a uniform target. Features are the block's random mean
vector plus unit Gaussian noise. Everything is drawn from one seeded generator in O(E).
"""

from __future__ import annotations

import torch

from ._types import GraphData

__all__ = ["make_sbm"]


def make_sbm(num_nodes: int = 2708, num_classes: int = 7, avg_degree: float = 4.0, num_features: int = 128,
             p_intra: float = 0.8, feature_signal: float = 1.0, seed: int = 0) -> GraphData:
    """An SBM graph as ``GraphData``: edges in both directions, no self loops or duplicates;
    split 20 nodes per class train, 500 val, the rest test (Planetoid-like)."""
    for name, value, low in (("num_nodes", num_nodes, 2), ("num_classes", num_classes, 1),
                             ("num_features", num_features, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if not 0 <= p_intra <= 1:
        raise ValueError(f"p_intra must be in [0, 1], got {p_intra}")
    if not avg_degree > 0:
        raise ValueError(f"avg_degree must be > 0, got {avg_degree}")
    g = torch.Generator().manual_seed(seed)
    n, k = num_nodes, num_classes
    labels = torch.randperm(n, generator=g) % k
    members = torch.argsort(labels, stable=True)  # nodes grouped by block
    block_start = torch.searchsorted(labels[members], torch.arange(k))
    block_size = torch.bincount(labels, minlength=k)
    e = max(1, int(n * avg_degree / 2))
    src = torch.randint(0, n, (e,), generator=g)
    same = torch.rand(e, generator=g) < p_intra
    block = labels[src]
    offset = (torch.rand(e, generator=g) * block_size[block]).long().clamp_(max=block_size[block] - 1)
    intra = members[block_start[block] + offset]
    dst = torch.where(same, intra, torch.randint(0, n, (e,), generator=g))
    edges = torch.stack([src, dst])
    edges = torch.cat([edges, edges.flip(0)], 1)
    edges = edges[:, edges[0] != edges[1]]
    keys = torch.unique(edges[0] * n + edges[1])
    edge_index = torch.stack([keys // n, keys % n])
    means = torch.randn(k, num_features, generator=g) * feature_signal
    x = means[labels] + torch.randn(n, num_features, generator=g)
    order = torch.randperm(n, generator=g)
    train = torch.cat([order[labels[order] == c][:20] for c in range(k)])
    rest = order[~torch.isin(order, train)]
    masks = []
    for index in (train, rest[:500], rest[500:]):
        m = torch.zeros(n, dtype=torch.bool)
        m[index] = True
        masks.append(m)
    return GraphData(f"sbm{n}", x, edge_index, labels, *masks, num_classes=k)
