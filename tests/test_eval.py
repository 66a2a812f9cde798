"""Evaluation: AUC / AP against their definitions, the linear probe and kNN on data with a
known answer, MMD's basic properties."""

import itertools

import pytest
import torch

from sslfast import eval as E


def _brute_auc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def _brute_ap(scores, labels):
    total, ap, prev_recall = sum(labels), 0.0, 0.0
    for threshold in sorted(set(scores), reverse=True):
        chosen = [y for s, y in zip(scores, labels) if s >= threshold]
        recall, precision = sum(chosen) / total, sum(chosen) / len(chosen)
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


def test_auc_and_ap_match_their_definitions_with_ties():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (80,), generator=g).double()
    labels = torch.rand(80, generator=g) < 0.45
    assert E.roc_auc(scores, labels) == pytest.approx(_brute_auc(scores.tolist(), labels.tolist()), abs=1e-12)
    assert E.average_precision(scores, labels) == pytest.approx(_brute_ap(scores.tolist(), labels.tolist()),
                                                                abs=1e-12)
    assert E.roc_auc(torch.tensor([0.1, 0.9]), torch.tensor([False, True])) == 1.0
    with pytest.raises(ValueError, match="positive"):
        E.roc_auc(torch.tensor([0.1, 0.2]), torch.tensor([False, False]))


def test_link_scores_separate_planted_edges():
    z = torch.tensor([[3.0, 0.0], [3.0, 0.0], [0.0, 3.0], [0.0, 3.0]])
    pos = torch.tensor([[0, 2], [1, 3]])
    neg = torch.tensor([[0, 1], [2, 3]])
    out = E.link_scores(z, pos, neg)
    assert out["auc"] == 1.0 and out["ap"] == 1.0


def _blobs(n_per, centers, spread, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([c + spread * torch.randn(n_per, centers.shape[1], generator=g) for c in centers])
    y = torch.arange(centers.shape[0]).repeat_interleave(n_per)
    return x, y


def test_linear_probe_and_knn_on_blobs():
    centers = 4 * torch.eye(3, 8)
    x, y = _blobs(60, centers, 0.5, 0)
    xt, yt = _blobs(30, centers, 0.5, 1)
    assert E.linear_probe(x, y, xt, yt)["acc"] == 1.0
    assert E.knn_accuracy(x, y, xt, yt, k=5) == 1.0
    noise, _ = _blobs(60, torch.zeros(3, 8), 1.0, 2)  # features that carry no label
    acc = E.linear_probe(noise, y, xt, yt)["acc"]
    assert acc < 0.6
    out = E.linear_probe(x, y, xt, yt, x[:30], y[:30])
    assert out["weight_decay"] in E.linear_probe.__globals__["WEIGHT_DECAYS"]


def test_linear_probe_is_deterministic_and_checks_input():
    x, y = _blobs(40, torch.randn(4, 6, generator=torch.Generator().manual_seed(3)), 1.0, 4)
    assert E.linear_probe(x, y, x, y) == E.linear_probe(x, y, x, y)
    with pytest.raises(ValueError, match="labels"):
        E.linear_probe(x, y[:-1], x, y)
    with pytest.raises(ValueError, match="together"):
        E.linear_probe(x, y, x, y, val_emb=x)


def test_mmd():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g)
    assert E.mmd(a, a) == pytest.approx(0.0, abs=1e-7)
    same, shifted = E.mmd(a, b), E.mmd(a, b + 1.0)
    assert 0 < same < shifted
    assert E.mmd(a, b) == pytest.approx(E.mmd(b, a))
    with pytest.raises(ValueError, match="x and y"):
        E.mmd(a, torch.randn(5, 3))
