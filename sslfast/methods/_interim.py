"""Torch-only stand-ins for the fused ops the methods need that the engine does not have yet.

Every function here has the exact name, signature and semantics of the op the engine will
register (issue 15, item 2): ``sslfast.supcon``, ``sslfast.ema_``, ``sslfast.gat_aggregate(...,
dropout=, seed=)`` with ``sslfast.nn.GATConv(..., dropout=p)``, and the augmentations of
``sslfast.functional`` (``random_resized_crop``, ``random_flip``, ``gaussian_noise``,
``drop_edges``, ``mask_features``). The methods import them from this one file only, so when the
fused ops land this file is deleted and the imports point at ``sslfast`` / ``sslfast.nn`` /
``sslfast.functional``. Until then these are eager compositions (SupCon builds the N x N logits,
dropout-GAT builds the E x H x F messages): correct, not fast.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

import sslfast
from sslfast import nn as fast_nn

__all__ = ["supcon", "ema_", "gat_aggregate", "GATConv", "random_resized_crop", "random_flip",
           "gaussian_noise", "drop_edges", "mask_features"]


def _probability(name, p):
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {p!r}")
    return float(p)


def _float_tensor(name, t, ndim=None):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")


def _generator_for(generator, device):
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


# ------------------------------------------------------------------------------ SupCon


def supcon(features, labels, temperature=0.1, *, normalize=True):
    """Supervised contrastive loss (Khosla et al. 2020, "Supervised Contrastive Learning",
    contrast_mode "all"; reference: HobbitLong/SupContrast ``SupConLoss`` without its
    temperature / base_temperature factor). ``features`` [N, D] holds every view as rows (e.g.
    ``cat([v1, v2])`` with ``labels`` ``cat([y, y])``). Anchor i's positives are the other rows
    with its label, its denominator every row j != i; the loss is the mean, over anchors with at
    least one positive, of -(mean over positives p of log softmax_ij(z_i . z_j / T) at p). With
    labels ``cat(arange(N), arange(N))`` it equals ``nt_xent(v1, v2, temperature)``.
    Returns a float32 scalar (float64 for float64 features)."""
    _float_tensor("features", features, ndim=2)
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got "
                        f"{labels.dtype if isinstance(labels, torch.Tensor) else type(labels).__name__}")
    if labels.dim() != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(f"labels must have shape [N] = [{features.shape[0]}], got {tuple(labels.shape)}")
    if labels.device != features.device:
        raise ValueError(f"labels is on {labels.device} but features is on {features.device}")
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not temperature > 0:
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
    acc = torch.float64 if features.dtype == torch.float64 else torch.float32
    z = features.to(acc)
    if normalize:
        z = F.normalize(z, dim=1)
    n = z.shape[0]
    logits = z @ z.t() / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~self_mask
    count = positive.sum(1)
    mean_log_prob = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(1) / count.clamp(min=1)
    has_positive = (count > 0).to(acc)
    return -(mean_log_prob * has_positive).sum() / has_positive.sum().clamp(min=1)


# ------------------------------------------------------------------------------ EMA


@torch.no_grad()
def ema_(targets, sources, momentum):
    """In place, for lists of tensors: ``t = momentum * t + (1 - momentum) * s`` (the BYOL / MoCo
    target-network update), no autograd. ``momentum`` in [0, 1]."""
    targets, sources = list(targets), list(sources)
    if len(targets) != len(sources):
        raise ValueError(f"targets and sources must have the same length, got {len(targets)} and {len(sources)}")
    momentum = _probability("momentum", momentum)
    for i, (t, s) in enumerate(zip(targets, sources)):
        if not isinstance(t, torch.Tensor) or not isinstance(s, torch.Tensor):
            raise TypeError(f"targets[{i}] and sources[{i}] must be tensors")
        if t.shape != s.shape:
            raise ValueError(f"targets[{i}] has shape {tuple(t.shape)} but sources[{i}] has {tuple(s.shape)}")
    if targets:
        torch._foreach_lerp_([t.data for t in targets], [s.data for s in sources], 1.0 - momentum)


# ------------------------------------------------------------------------------ GAT with attention dropout


def gat_aggregate(graph, h, alpha_src, alpha_dst, negative_slope=0.2, *, dropout=0.0, seed=None):
    """``sslfast.gat_aggregate`` with attention dropout as PyG ``GATConv`` applies it: each edge's
    softmax probability is zeroed with probability ``dropout`` and the rest scaled by
    1 / (1 - dropout). ``seed`` keys the dropout mask (None: drawn from torch's global generator).
    ``dropout=0`` is the fused op itself; otherwise an eager composition (E x H x F messages)."""
    dropout = _probability("dropout", dropout)
    if dropout == 0.0:
        return sslfast.gat_aggregate(graph, h, alpha_src, alpha_dst, negative_slope)
    if dropout == 1.0:
        return torch.zeros_like(h)
    from sslfast.ops.gnn import as_graph
    graph = as_graph(graph, num_nodes=h.shape[0])
    _float_tensor("h", h, ndim=3)
    src, dst = graph.col, graph.target  # CSR order: the edge_softmax below takes input order
    scores = F.leaky_relu(alpha_src[src] + alpha_dst[dst], negative_slope)
    prob = sslfast.edge_softmax(graph, scores[graph.inv_perm])[graph.perm]
    generator = None
    if seed is not None:
        generator = torch.Generator(device=h.device).manual_seed(int(seed))
    keep = torch.rand(prob.shape, generator=generator, device=h.device) >= dropout
    prob = prob * keep / (1.0 - dropout)
    return torch.zeros_like(h).index_add_(0, dst, prob.unsqueeze(-1) * h[src])


class GATConv(fast_nn.GATConv):
    """``sslfast.nn.GATConv`` with ``dropout`` (attention dropout, PyG semantics): active in
    training mode only; in eval mode (or with ``dropout=0``) it is the fused layer unchanged."""

    def __init__(self, in_channels, out_channels, heads=1, concat=True, negative_slope=0.2, dropout=0.0,
                 add_self_loops=True, bias=True):
        super().__init__(in_channels, out_channels, heads, concat, negative_slope, 0.0, add_self_loops, bias)
        self.dropout = _probability("dropout", dropout)

    def forward(self, x, edge_index):
        if not (self.training and self.dropout > 0):
            return super().forward(x, edge_index)
        graph = self._with_self_loops(self.graph_of(edge_index, x.shape[0]))
        h = self.lin(x).view(-1, self.heads, self.out_channels)
        alpha_src = (h * self.att_src).sum(-1)
        alpha_dst = (h * self.att_dst).sum(-1)
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
        out = gat_aggregate(graph, h, alpha_src, alpha_dst, self.negative_slope, dropout=self.dropout, seed=seed)
        out = out.reshape(-1, self.heads * self.out_channels) if self.concat else out.mean(dim=1)
        return out if self.bias is None else out + self.bias


# ------------------------------------------------------------------------------ image augmentations


def _check_images(images):
    _float_tensor("images", images, ndim=4)


def random_resized_crop(images, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), *, generator=None):
    """torchvision ``RandomResizedCrop`` per sample on a [B, C, H, W] batch: area fraction
    ~ U(scale), log aspect ratio ~ U(log ratio), up to 10 tries, the first box that fits wins,
    else the central crop with the ratio clamped to ``ratio`` (torchvision's fallback); the box is
    resized to ``size`` (int or (h, w)) bilinearly (no antialias). Sync-free: all tries are drawn
    at once."""
    _check_images(images)
    out_h, out_w = (size, size) if isinstance(size, int) else tuple(size)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    if not (0 < scale[0] <= scale[1] <= 1):
        raise ValueError(f"scale must satisfy 0 < scale[0] <= scale[1] <= 1, got {scale!r}")
    if not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"ratio must satisfy 0 < ratio[0] <= ratio[1], got {ratio!r}")
    generator = _generator_for(generator, images.device)
    b, _, height, width = images.shape
    device = images.device
    u = torch.rand(4, b, 10, generator=generator, device=device, dtype=torch.float64)
    area = height * width * (scale[0] + u[0] * (scale[1] - scale[0]))
    log_r = math.log(ratio[0]) + u[1] * (math.log(ratio[1]) - math.log(ratio[0]))
    aspect = torch.exp(log_r)
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    fits = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = torch.argmax(fits.int(), dim=1, keepdim=True)
    found = fits.any(dim=1)
    # fallback: the whole image cropped to the nearest allowed ratio, centred
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fh, fw = height, round(height * ratio[1])
    else:
        fw, fh = width, height
    w = torch.where(found, w.gather(1, first).squeeze(1), torch.full_like(found, fw, dtype=w.dtype))
    h = torch.where(found, h.gather(1, first).squeeze(1), torch.full_like(found, fh, dtype=h.dtype))
    top_u, left_u = u[2].gather(1, first).squeeze(1), u[3].gather(1, first).squeeze(1)
    top = torch.where(found, torch.floor(top_u * (height - h + 1)), torch.floor((height - h) / 2))
    left = torch.where(found, torch.floor(left_u * (width - w + 1)), torch.floor((width - w) / 2))
    # Affine grid over the crop box in normalized coordinates (align_corners=False).
    theta = torch.zeros(b, 2, 3, dtype=images.dtype, device=device)
    theta[:, 0, 0] = (w / width).to(images.dtype)
    theta[:, 0, 2] = ((2 * left + w) / width - 1).to(images.dtype)
    theta[:, 1, 1] = (h / height).to(images.dtype)
    theta[:, 1, 2] = ((2 * top + h) / height - 1).to(images.dtype)
    grid = F.affine_grid(theta, [b, images.shape[1], out_h, out_w], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_flip(images, p=0.5, *, generator=None):
    """Horizontal flip of each sample with probability ``p`` (torchvision
    ``RandomHorizontalFlip``), on a [B, C, H, W] batch."""
    _check_images(images)
    p = _probability("p", p)
    generator = _generator_for(generator, images.device)
    flip = torch.rand(images.shape[0], generator=generator, device=images.device) < p
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def gaussian_noise(images, std, *, generator=None):
    """``images + std * N(0, 1)`` per element."""
    _float_tensor("images", images)
    if isinstance(std, bool) or not isinstance(std, numbers.Real) or std < 0:
        raise ValueError(f"std must be a number >= 0, got {std!r}")
    generator = _generator_for(generator, images.device)
    noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return images + std * noise


# ------------------------------------------------------------------------------ graph augmentations


def drop_edges(edge_index, p, *, generator=None):
    """GRACE / PyG ``dropout_edge``: each edge kept with probability 1 - p; returns the kept
    edge_index (its length varies with the draw)."""
    if not isinstance(edge_index, torch.Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must be a [2, E] tensor, got "
                         f"{tuple(edge_index.shape) if isinstance(edge_index, torch.Tensor) else type(edge_index).__name__}")
    p = _probability("p", p)
    generator = _generator_for(generator, edge_index.device)
    keep = torch.rand(edge_index.shape[1], generator=generator, device=edge_index.device) >= p
    return edge_index[:, keep]


def mask_features(x, p, *, generator=None):
    """GRACE ``drop_feature``: each feature column is zeroed (for every node) with probability p."""
    _float_tensor("x", x, ndim=2)
    p = _probability("p", p)
    generator = _generator_for(generator, x.device)
    keep = torch.rand(x.shape[1], generator=generator, device=x.device) >= p
    return x * keep.to(x.dtype)
