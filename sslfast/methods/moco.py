"""MoCo v2 (Chen, Fan, Girshick, He 2020, "Improved Baselines with Momentum Contrastive
Learning"; reference: facebookresearch/moco) and MoCo v3 (Chen, Xie, He 2021, "An Empirical
Study of Training Self-Supervised Vision Transformers"; reference: facebookresearch/moco-v3).

v2 (``version=2``): a query encoder + 2-layer MLP head (hidden 2048, out 128), a key encoder
that follows it by EMA (m = 0.999), a queue of K = 65536 normalized keys kept on the device,
InfoNCE at T = 0.2 over the positive key and the queue (``sslfast.info_nce`` with
``in_batch_negatives=False``). The queue is written in place at a device-side pointer, so a
step never syncs with the host. ``shuffle_bn=G`` emulates MoCo's shuffling BN on one device: the
queries' BatchNorm statistics come from G contiguous groups of the batch, the keys' from G groups
of a random permutation of it, so a query and its own key rarely share statistics (the
paper's 8 GPUs give each BN 32 images). A batch of fewer than 2G images is split into fewer
groups, of at least 2 each. Under DDP each rank groups its own batch (a BatchNorm already sees one
rank's batch there; G > 1 splits it further); with SyncBatchNorm, group g's statistics are pooled
over every rank's group g. ``symmetric=True`` is the symmetrized loss of the
MoCo v2 reproduction in the SimSiam paper (Table 4) and solo-learn's ``mocov2plus``: each view is
the query once, against the other view's key and the queue; both views' keys are enqueued.

v3 (``version=3``): no queue; 3-layer projector (hidden 4096, out 256, BN) and a 2-layer
predictor on the query side, symmetrized InfoNCE over in-batch keys at T = 1.0 (the ResNet
setting; 0.2 for ViTs) scaled by 2T as in the reference, key momentum 0.99 increased to 1 along
a cosine (``schedule_momentum``).

``process_group`` (DDP): InfoNCE over every rank's keys (v3) and one queue shared by all ranks:
each step enqueues the keys of every rank, gathered (docs/distributed.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import sslfast
from sslfast.distributed import all_gather

from ._common import (ImageAugment, cosine_momentum, encoder_dim, fraction, images_of, mlp, momentum_copy,
                      positive, positive_int)

__all__ = ["MoCo"]

_DEFAULTS = {2: dict(temperature=0.2, momentum=0.999, hidden_dim=2048, out_dim=128, queue_size=65536),
             3: dict(temperature=1.0, momentum=0.99, hidden_dim=4096, out_dim=256, queue_size=0)}


class MoCo(nn.Module):
    def __init__(self, encoder: nn.Module, *, version: int = 2, feature_dim: int | None = None,
                 hidden_dim: int | None = None, out_dim: int | None = None, temperature: float | None = None,
                 momentum: float | None = None, queue_size: int | None = None, augment: nn.Module | None = None,
                 shuffle_bn: int = 1, symmetric: bool = False, process_group=None):
        super().__init__()
        if version not in _DEFAULTS:
            raise ValueError(f"version must be 2 or 3, got {version!r}")
        defaults = _DEFAULTS[version]
        self.version = version
        d = encoder_dim(encoder, feature_dim, "feature_dim")
        hidden = positive_int("hidden_dim", hidden_dim if hidden_dim is not None else defaults["hidden_dim"])
        out = positive_int("out_dim", out_dim if out_dim is not None else defaults["out_dim"])
        self.temperature = positive("temperature", temperature if temperature is not None else defaults["temperature"])
        self.base_momentum = fraction("momentum", momentum if momentum is not None else defaults["momentum"],
                                      closed=True)
        self.momentum = self.base_momentum
        self.encoder = encoder
        if version == 2:
            self.projection = mlp([d, hidden, out], batch_norm=False)
            self.predictor = None
        else:
            self.projection = mlp([d, hidden, hidden, out], last_batch_norm=True, last_affine=False)
            self.predictor = mlp([out, hidden, out], last_batch_norm=True, last_affine=False)
        self.key_encoder = momentum_copy(self.encoder)
        self.key_projection = momentum_copy(self.projection)
        size = queue_size if queue_size is not None else defaults["queue_size"]
        if version == 2:
            size = positive_int("queue_size", size)
            g = torch.Generator().manual_seed(0)
            self.register_buffer("queue", F.normalize(torch.randn(size, out, generator=g), dim=1))
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.int64))
        elif size:
            raise ValueError(f"queue_size must be 0 for MoCo v3, got {size!r}")
        self.augment = augment if augment is not None else ImageAugment()
        self.shuffle_bn = positive_int("shuffle_bn", shuffle_bn)
        if version == 3 and self.shuffle_bn != 1:
            raise ValueError(f"shuffle_bn is a MoCo v2 option (v3 uses one BatchNorm over the global batch), "
                             f"got shuffle_bn={shuffle_bn!r} with version=3")
        if not isinstance(symmetric, bool):
            raise TypeError(f"symmetric must be a bool, got {type(symmetric).__name__}")
        self.symmetric = symmetric  # read by v2 only: v3's loss is always symmetrized
        self.process_group = process_group

    @torch.no_grad()
    def update_momentum(self, momentum: float | None = None):
        """key = m * key + (1 - m) * query, every parameter in one multi-tensor EMA call."""
        m = self.momentum if momentum is None else momentum
        online = list(self.encoder.parameters()) + list(self.projection.parameters())
        target = list(self.key_encoder.parameters()) + list(self.key_projection.parameters())
        sslfast.ema_(target, online, m)

    def schedule_momentum(self, step: int, total_steps: int):
        """v3: m follows a cosine from the base momentum to 1 over training (v2 keeps it fixed)."""
        if self.version == 3:
            self.momentum = cosine_momentum(self.base_momentum, step, total_steps)

    @torch.no_grad()
    def _enqueue(self, keys):
        if self.process_group is not None:  # every rank enqueues the global batch's keys: one shared queue
            keys = all_gather(keys, self.process_group)
        size = self.queue.shape[0]
        idx = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue.index_copy_(0, idx, F.normalize(keys.to(self.queue.dtype), dim=1))
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % size)

    def _keys(self, view):
        with torch.no_grad():
            key_net = lambda v: self.key_projection(self.key_encoder(v))  # noqa: E731
            if not self._shuffling():
                return key_net(view)
            # Shuffle BN: the keys' BatchNorm statistics come from groups of a random permutation of the
            # batch, the queries' from contiguous groups, so a query and its key do not share statistics
            # (MoCo's multi-GPU shuffle, on one device).
            perm = torch.randperm(view.shape[0], device=view.device)
            keys = self._grouped(key_net, view[perm])
            return torch.empty_like(keys).index_copy_(0, perm, keys)

    def _shuffling(self):
        return self.shuffle_bn > 1 and self.training

    def _grouped(self, fn, x):
        """fn per group of ``shuffle_bn`` contiguous groups of x (their own BatchNorm statistics)."""
        if not self._shuffling():
            return fn(x)
        groups = max(1, min(self.shuffle_bn, x.shape[0] // 2))  # >= 2 images per group: a BatchNorm1d needs 2
        return torch.cat([fn(part) for part in x.tensor_split(groups)])

    def forward(self, batch):
        images = images_of(batch)
        if self.training:
            self.update_momentum()
        v1, v2 = self.augment(images), self.augment(images)
        if self.version == 2:
            query_net = lambda v: self.projection(self.encoder(v))  # noqa: E731
            queue = self.queue.clone()  # the negatives of this step, before its keys enter

            def nce(q, k):
                return sslfast.info_nce(q, k, self.temperature, queue, in_batch_negatives=False,
                                        process_group=self.process_group)

            k2 = self._keys(v2)
            if not self.symmetric:
                loss, keys = nce(self._grouped(query_net, v1), k2), k2
            else:
                k1 = self._keys(v1)
                loss = 0.5 * (nce(self._grouped(query_net, v1), k2) + nce(self._grouped(query_net, v2), k1))
                keys = torch.cat([k1, k2])
            if self.training:
                self._enqueue(keys)
            return loss
        q1 = self.predictor(self.projection(self.encoder(v1)))
        q2 = self.predictor(self.projection(self.encoder(v2)))
        k1, k2 = self._keys(v1), self._keys(v2)
        scale = 2 * self.temperature
        pg = self.process_group
        return scale * (sslfast.info_nce(q1, k2, self.temperature, process_group=pg)
                        + sslfast.info_nce(q2, k1, self.temperature, process_group=pg))

    def embed(self, images):
        return self.encoder(images)
