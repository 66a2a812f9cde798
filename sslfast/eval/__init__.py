"""Evaluation of learned representations and generators, in torch:

* ``linear_probe``: logistic regression on frozen embeddings (full batch, L-BFGS);
* ``knn_accuracy``: weighted cosine kNN;
* ``link_scores`` (``roc_auc``, ``average_precision``): link-prediction AUC / AP;
* ``mmd``: sample quality of 2-D generators against held-out data.
"""

from .knn import knn_accuracy
from .link import average_precision, link_scores, roc_auc
from .linear_probe import fit_logistic_regression, linear_probe
from .mmd import mmd

__all__ = ["linear_probe", "fit_logistic_regression", "knn_accuracy", "link_scores", "roc_auc",
           "average_precision", "mmd"]
