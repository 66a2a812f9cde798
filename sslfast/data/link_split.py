"""Link-prediction split of an undirected graph (PyG ``RandomLinkSplit(num_val, num_test,
is_undirected=True, split_labels=True, add_negative_train_samples=False)``): each undirected
edge is assigned once to train / val / test; message passing uses the train edges (both
directions); val and test get as many negatives as positives, sampled uniformly from the node
pairs that are not edges of the full graph."""

from __future__ import annotations

import dataclasses

import torch

import sslfast

__all__ = ["LinkSplit", "link_split"]


@dataclasses.dataclass
class LinkSplit:
    train_edge_index: torch.Tensor  # [2, 2 * E_train]: message-passing graph (both directions)
    train_pos: torch.Tensor  # [2, E_train]: each training edge once
    val_pos: torch.Tensor
    val_neg: torch.Tensor
    test_pos: torch.Tensor
    test_neg: torch.Tensor


def link_split(edge_index, num_nodes, val=0.05, test=0.10, *, generator=None) -> LinkSplit:
    """Split ``edge_index`` (both directions present) into 1 - val - test / val / test."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"val and test must be fractions with val + test < 1, got val={val}, test={test}")
    undirected = edge_index[:, edge_index[0] < edge_index[1]]
    e = undirected.shape[1]
    perm = torch.randperm(e, generator=generator)
    n_val, n_test = int(val * e), int(test * e)
    val_pos = undirected[:, perm[:n_val]]
    test_pos = undirected[:, perm[n_val:n_val + n_test]]
    train_pos = undirected[:, perm[n_val + n_test:]]
    negatives = sslfast.negative_sampling(edge_index, num_nodes, n_val + n_test, generator=generator)
    negatives = negatives[:, torch.randperm(negatives.shape[1], generator=generator)]
    return LinkSplit(torch.cat([train_pos, train_pos.flip(0)], 1), train_pos, val_pos,
                     negatives[:, :n_val], test_pos, negatives[:, n_val:])
