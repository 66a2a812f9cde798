"""Linear probe: multinomial logistic regression on frozen embeddings, full batch, in torch.

Features are standardized with the training rows' statistics; the L2-regularized cross
entropy is minimized with L-BFGS (strong Wolfe line search) to convergence, as scikit-learn's
``LogisticRegression(solver="lbfgs")`` does. The L2 strength is chosen on a validation set
from a small grid: the given one (Planetoid's public val split), else a stratified 10 % of the
training rows (the classifier is then refitted on all of them). Deterministic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["linear_probe", "fit_logistic_regression", "WEIGHT_DECAYS"]

WEIGHT_DECAYS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def _check(name, emb, labels):
    if not isinstance(emb, torch.Tensor) or emb.dim() != 2 or not emb.is_floating_point():
        raise ValueError(f"{name} embeddings must be a float tensor [N, D], got "
                         f"{tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__}")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.shape[0] != emb.shape[0]:
        raise ValueError(f"{name} labels must be an int tensor [N] with N = {emb.shape[0]}")


def fit_logistic_regression(x, y, num_classes, weight_decay=0.0, max_iter=300):
    """(W [C, D], b [C]) minimizing mean CE + weight_decay / 2 * ||W||^2 (float64, L-BFGS)."""
    x = x.double()
    w = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=1e-7, tolerance_change=1e-10,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.t() + b, y) + 0.5 * weight_decay * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def _accuracy(x, y, w, b):
    return float(((x.double() @ w.t() + b).argmax(1) == y).double().mean())


def linear_probe(train_emb, train_y, test_emb, test_y, val_emb=None, val_y=None, *, num_classes=None,
                 weight_decays=WEIGHT_DECAYS, seed=0) -> dict:
    """Test accuracy (a fraction) of a logistic regression trained on ``train_emb``.

    Returns ``{"acc": test accuracy, "val_acc": ..., "weight_decay": chosen}``."""
    _check("train", train_emb, train_y)
    _check("test", test_emb, test_y)
    if (val_emb is None) != (val_y is None):
        raise ValueError("val_emb and val_y must be given together")
    train_emb, test_emb = train_emb.detach().cpu().double(), test_emb.detach().cpu().double()
    train_y, test_y = train_y.cpu().long(), test_y.cpu().long()
    if num_classes is None:
        num_classes = int(max(train_y.max(), test_y.max())) + 1
    refit = val_emb is None
    if refit:  # a stratified 10 % of the training rows chooses the L2 strength
        g = torch.Generator().manual_seed(seed)
        val_idx = []
        for c in range(num_classes):
            idx = torch.nonzero(train_y == c).flatten()
            idx = idx[torch.randperm(idx.numel(), generator=g)]
            val_idx.append(idx[:max(1, idx.numel() // 10)] if idx.numel() > 1 else idx[:0])
        val_idx = torch.cat(val_idx)
        keep = torch.ones(train_y.shape[0], dtype=torch.bool)
        keep[val_idx] = False
        fit_x, fit_y, val_emb, val_y = train_emb[keep], train_y[keep], train_emb[val_idx], train_y[val_idx]
    else:
        _check("val", val_emb, val_y)
        val_emb, val_y = val_emb.detach().cpu().double(), val_y.cpu().long()
        fit_x, fit_y = train_emb, train_y
    mean, std = fit_x.mean(0), fit_x.std(0).clamp(min=1e-8)
    best = None
    for wd in weight_decays:
        w, b = fit_logistic_regression((fit_x - mean) / std, fit_y, num_classes, wd)
        acc = _accuracy((val_emb - mean) / std, val_y, w, b)
        if best is None or acc > best[0]:
            best = (acc, wd, w, b)
    val_acc, wd, w, b = best
    if refit:
        mean, std = train_emb.mean(0), train_emb.std(0).clamp(min=1e-8)
        w, b = fit_logistic_regression((train_emb - mean) / std, train_y, num_classes, wd)
    return {"acc": _accuracy((test_emb - mean) / std, test_y, w, b), "val_acc": val_acc, "weight_decay": wd}
