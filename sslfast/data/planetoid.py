"""Cora and CiteSeer from the raw Planetoid files (``ind.<name>.{x,tx,allx,y,ty,ally,graph,test.index}``),
read as PyG's ``Planetoid`` reads them, public split included. Offline: nothing is downloaded.

Where the files are looked for: ``root`` (``--data-root``), else ``$SSLFAST_PLANETOID``, else
``shared/data/planetoid`` beside the checkout (or inside it), as the benchmarks find them.
The feature files are pickled scipy sparse matrices (scipy needed); they load through an
unpickler that admits only numpy arrays and scipy CSR matrices.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch

from ..graph import planetoid_edge_index
from ._types import GraphData

__all__ = ["load_planetoid", "planetoid_candidates", "NAMES"]

NAMES = ("cora", "citeseer")
_FILES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")


def planetoid_candidates(root=None) -> list:
    """The folders searched, in order."""
    if root is not None:
        return [Path(root)]
    checkout = Path(__file__).resolve().parents[2]
    out = []
    if os.environ.get("SSLFAST_PLANETOID"):
        out.append(Path(os.environ["SSLFAST_PLANETOID"]))
    out += [checkout.parent / "shared" / "data" / "planetoid", checkout / "shared" / "data" / "planetoid"]
    return out


def _find(name, root):
    tried = planetoid_candidates(root)
    for folder in tried:
        if all((folder / f"ind.{name}.{part}").exists() for part in _FILES):
            return folder
    looked = ", ".join(str(p) for p in tried)
    raise FileNotFoundError(
        f"{name}: the Planetoid files ind.{name}.{{{','.join(_FILES)}}} were not found; looked in: {looked}. "
        "Pass --data-root (root=) or set SSLFAST_PLANETOID to the folder that holds them.")


class _PlanetoidUnpickler(pickle.Unpickler):
    """Admits numpy arrays and scipy CSR matrices only (a pickle can name any callable)."""

    def find_class(self, module, name):
        if (module, name) in (("numpy", "ndarray"), ("numpy", "dtype")):
            return getattr(np, name)
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return np.zeros(0).__reduce__()[0]  # numpy's _reconstruct, wherever this numpy keeps it
        if name == "csr_matrix" and module in ("scipy.sparse.csr", "scipy.sparse._csr", "scipy.sparse"):
            try:
                import scipy.sparse
            except ImportError as error:
                raise ImportError("reading Planetoid features needs scipy (pip install scipy)") from error
            return scipy.sparse.csr_matrix
        raise pickle.UnpicklingError(f"Planetoid files may only hold numpy arrays and scipy CSR matrices, "
                                     f"found {module}.{name}")


def _read(folder, name, part):
    with open(folder / f"ind.{name}.{part}", "rb") as f:
        value = _PlanetoidUnpickler(f, encoding="latin1").load()
    if hasattr(value, "toarray"):
        value = value.toarray()
    return torch.from_numpy(np.asarray(value, dtype=np.float32))


def load_planetoid(name, root=None) -> GraphData:
    """Cora or CiteSeer with PyG's ``Planetoid`` semantics: x = [allx; tx] with the test rows put
    back at their ids (CiteSeer: test ids missing from the files padded with zero rows), y the
    argmax of the one-hot labels, edges from ``sslfast.graph.planetoid_edge_index`` (both
    directions, no self loops or duplicates), public split: train = the rows of ``y`` (20 per
    class), val = the next 500, test = the 1000 ids of ``test.index``. Raw binary features
    (normalize with ``row_normalize`` where a method's paper does)."""
    if not isinstance(name, str) or name.lower() not in NAMES:
        raise ValueError(f"name must be one of {NAMES}, got {name!r}")
    name = name.lower()
    folder = _find(name, root)
    x, tx, allx = (_read(folder, name, p) for p in ("x", "tx", "allx"))
    y, ty, ally = (_read(folder, name, p) for p in ("y", "ty", "ally"))
    test_index = torch.tensor([int(line) for line in (folder / f"ind.{name}.test.index").read_text().split()],
                              dtype=torch.int64)
    sorted_test = test_index.sort().values
    if name == "citeseer":  # isolated test nodes are absent from tx / ty: zero rows, as PyG pads them
        span = int(test_index.max() - test_index.min()) + 1
        tx_ext = torch.zeros(span, tx.shape[1])
        tx_ext[sorted_test - test_index.min()] = tx
        ty_ext = torch.zeros(span, ty.shape[1])
        ty_ext[sorted_test - test_index.min()] = ty
        tx, ty = tx_ext, ty_ext
    features = torch.cat([allx, tx])
    labels = torch.cat([ally, ty]).argmax(1)
    features[test_index] = features[sorted_test].clone()
    labels[test_index] = labels[sorted_test].clone()
    n = features.shape[0]
    edge_index, _ = planetoid_edge_index(folder, name, num_nodes=n)

    def mask(index):
        m = torch.zeros(n, dtype=torch.bool)
        m[index] = True
        return m

    train = torch.arange(y.shape[0])
    val = torch.arange(y.shape[0], y.shape[0] + 500)
    return GraphData(name=name, x=features, edge_index=edge_index, y=labels, train_mask=mask(train),
                     val_mask=mask(val), test_mask=mask(test_index), num_classes=int(ally.shape[1]))
