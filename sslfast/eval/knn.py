"""Weighted cosine kNN classifier (Wu et al. 2018, "Unsupervised Feature Learning via
Non-Parametric Instance Discrimination"; the DINO / solo-learn ``WeightedKNNClassifier``): each
test embedding votes with its k most cosine-similar training embeddings, weight exp(sim / T)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["knn_accuracy"]


@torch.no_grad()
def knn_accuracy(train_emb, train_y, test_emb, test_y, *, k=20, temperature=0.07, num_classes=None,
                 chunk=1024) -> float:
    """Top-1 accuracy (a fraction) of the weighted cosine kNN vote (k = 20, T = 0.07: DINO)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    train = F.normalize(train_emb.detach().float(), dim=1)
    test = F.normalize(test_emb.detach().float(), dim=1)
    train_y, test_y = train_y.to(train.device).long(), test_y.to(train.device).long()
    num_classes = num_classes or int(max(train_y.max(), test_y.max())) + 1
    k = min(k, train.shape[0])
    correct = 0
    for start in range(0, test.shape[0], chunk):
        sims, idx = (test[start:start + chunk] @ train.t()).topk(k, dim=1)
        votes = torch.zeros(sims.shape[0], num_classes, device=train.device)
        votes.scatter_add_(1, train_y[idx], (sims / temperature).exp())
        correct += int((votes.argmax(1) == test_y[start:start + chunk]).sum())
    return correct / test.shape[0]
