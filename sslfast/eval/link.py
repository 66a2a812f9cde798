"""Link-prediction scores: ROC AUC and average precision of sigmoid(<z_i, z_j>) on positive and
negative node pairs (PyG ``GAE.test``, which calls scikit-learn's ``roc_auc_score`` and
``average_precision_score``; computed here in torch with the same tie handling)."""

from __future__ import annotations

import torch

__all__ = ["link_scores", "roc_auc", "average_precision"]


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    scores, labels = scores.detach().double().cpu(), labels.cpu().bool()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_auc needs at least one positive and one negative")
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, scores.numel() + 1, dtype=torch.float64)
    # average ranks over ties
    unique, inverse, counts = torch.unique(sorted_scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    avg = ends - (counts.double() - 1) / 2
    ranks[order] = avg[inverse]
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """scikit-learn ``average_precision_score``: sum over thresholds of (R_n - R_{n-1}) P_n,
    thresholds at the distinct scores."""
    scores, labels = scores.detach().double().cpu(), labels.cpu().double()
    order = torch.argsort(scores, descending=True, stable=True)
    s, y = scores[order], labels[order]
    tp = torch.cumsum(y, 0)
    fp = torch.cumsum(1 - y, 0)
    last = torch.ones_like(s, dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]  # the last position of each distinct score
    tp, fp = tp[last], fp[last]
    precision = tp / (tp + fp)
    recall = tp / y.sum()
    recall_prev = torch.cat([torch.zeros(1, dtype=torch.float64), recall[:-1]])
    return float(((recall - recall_prev) * precision).sum())


@torch.no_grad()
def link_scores(z, pos_edge_index, neg_edge_index) -> dict:
    """``{"auc": ..., "ap": ...}`` of sigmoid(<z_src, z_dst>) on the positive vs negative pairs."""
    pos = torch.sigmoid((z[pos_edge_index[0]] * z[pos_edge_index[1]]).sum(-1))
    neg = torch.sigmoid((z[neg_edge_index[0]] * z[neg_edge_index[1]]).sum(-1))
    scores = torch.cat([pos, neg])
    labels = torch.cat([torch.ones_like(pos, dtype=torch.bool), torch.zeros_like(neg, dtype=torch.bool)])
    return {"auc": roc_auc(scores, labels), "ap": average_precision(scores, labels)}
