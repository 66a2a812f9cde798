"""Loss modules over ``sslfast.ops.contrastive`` (drop-in for lightly / open_clip losses)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import distributed
from ..ops import _validate as check
from ..ops import contrastive as ops


class NTXentLoss(nn.Module):
    """NT-Xent as lightly's and pytorch-metric-learning's ``NTXentLoss``; the second argument of
    ``forward`` says which:

    * ``forward(z1, z2)`` with two float [N, D] views (lightly, SimCLR): ``sslfast.nt_xent``;
      ``exclude_positive=True`` gives DCL;
    * ``forward(embeddings, labels)`` with integer labels [N] (pytorch-metric-learning): every
      pair of rows with one label is a positive pair, ``sslfast.supcon(pairwise=True)`` (PML's
      loss: per positive pair, -log(e^s_ap / (e^s_ap + sum of e^s_an over a's negatives)),
      averaged over the pairs). PML's ``indices_tuple`` / ``ref_emb`` are not supported.

    Positional arguments are lightly's (``temperature, memory_bank_size, gather_distributed``),
    so lightly code keeps its meaning. ``gather_distributed=True`` (lightly) or a
    ``process_group``: the batch is every rank's (sslfast.distributed; each rank returns its
    share, docs/distributed.md). lightly's memory bank is not supported (``memory_bank_size``
    must be 0). sslfast's keyword-only ``normalize`` and ``exclude_positive`` (DCL; two-view
    form only: PML's labelled loss has no such option, so it raises there).
    """

    def __init__(self, temperature: float = 0.5, memory_bank_size: int = 0, gather_distributed: bool = False, *,
                 normalize: bool = True, exclude_positive: bool = False, process_group=None):
        super().__init__()
        if memory_bank_size != 0:
            raise ValueError(f"memory_bank_size must be 0 (sslfast has no NT-Xent memory bank), "
                             f"got {memory_bank_size!r}")
        self.temperature = temperature
        self.normalize = check.boolean("normalize", normalize)
        self.exclude_positive = check.boolean("exclude_positive", exclude_positive)
        if process_group is not None and not distributed.is_process_group(process_group):
            raise TypeError(f"process_group must be a torch.distributed ProcessGroup, "
                            f"got {type(process_group).__name__}")
        self.gather_distributed = check.boolean("gather_distributed", gather_distributed)
        self.process_group = process_group

    def _group(self):
        if self.process_group is not None:
            return self.process_group
        if self.gather_distributed and torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            return torch.distributed.group.WORLD
        return None

    def forward(self, z1, z2, indices_tuple=None, ref_emb=None, ref_labels=None):
        if indices_tuple is not None or ref_emb is not None or ref_labels is not None:
            raise ValueError("indices_tuple / ref_emb / ref_labels (pytorch-metric-learning miners and reference "
                             "embeddings) are not supported")
        group = self._group()
        if isinstance(z2, torch.Tensor) and z2.dim() == 1 and not z2.is_floating_point():  # PML: (embeddings, labels)
            if self.exclude_positive:
                raise ValueError("exclude_positive=True applies to two views (lightly / DCL); with labels "
                                 "(pytorch-metric-learning's form) it has no meaning")
            return ops.supcon(z1, z2, self.temperature, normalize=self.normalize, pairwise=True, process_group=group)
        return ops.nt_xent(z1, z2, self.temperature, normalize=self.normalize, exclude_positive=self.exclude_positive,
                           process_group=group)


class InfoNCELoss(nn.Module):
    """InfoNCE with an optional MoCo queue: ``forward(query, key, queue=None)``."""

    def __init__(self, temperature: float = 0.07, normalize: bool = True, in_batch_negatives: bool = True):
        super().__init__()
        self.temperature, self.normalize = temperature, normalize
        self.in_batch_negatives = in_batch_negatives

    def forward(self, query, key, queue=None):
        return ops.info_nce(query, key, self.temperature, queue, normalize=self.normalize,
                            in_batch_negatives=self.in_batch_negatives)


class ClipLoss(nn.Module):
    """open_clip ``ClipLoss``: ``forward(image_features, text_features, logit_scale, logit_bias=None,
    output_dict=False)`` with open_clip's constructor arguments.

    Distributed (``world_size > 1`` or ``process_group``): sslfast.distributed's exact loss of
    this rank's pairs against every rank's, gradients carried through the gather whatever
    ``gather_with_grad`` says; each rank returns its share (open_clip's ``local_loss=True``
    value for even batches; ``local_loss=False`` is accepted and returns the same share), and
    DDP's averaging gives the full-batch gradients (docs/distributed.md). ``rank`` /
    ``world_size`` are checked against the process group on every rank. ``cache_labels`` has
    nothing to cache (no labels tensor is built). ``use_horovod=True`` is rejected.

    sslfast's own arguments: with ``learn_scale`` it owns log(logit_scale), initialized to
    log(``init_scale``) (CLIP: 1 / 0.07), and ``forward(image, text)`` uses exp of it.
    """

    def __init__(self, local_loss: bool = False, gather_with_grad: bool = False, cache_labels: bool = False,
                 rank: int = 0, world_size: int = 1, use_horovod: bool = False, *, learn_scale: bool = False,
                 init_scale: float = 1 / 0.07, process_group=None):
        super().__init__()
        init_scale = check.positive_float("init_scale", init_scale)
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale))) if learn_scale else None
        self.local_loss, self.gather_with_grad = bool(local_loss), bool(gather_with_grad)
        self.cache_labels = bool(cache_labels)
        self.rank, self.world_size, self.process_group = _distributed_args(rank, world_size, use_horovod,
                                                                           process_group)

    def forward(self, image_features, text_features, logit_scale=None, logit_bias=None, output_dict: bool = False):
        if logit_scale is None:
            if self.log_scale is None:
                raise TypeError("logit_scale must be given when ClipLoss(learn_scale=False)")
            logit_scale = self.log_scale.exp()
        group = _group_of(self.process_group, self.world_size)
        if group is None:
            loss = ops.clip_loss(image_features, text_features, logit_scale, logit_bias)
        else:
            loss = distributed.clip_loss(image_features, text_features, logit_scale, logit_bias, process_group=group,
                                         expect=(self.rank, self.world_size) if self.process_group is None else None)
        return {"contrastive_loss": loss} if output_dict else loss


def _distributed_args(rank, world_size, use_horovod, process_group):
    """open_clip's rank / world_size / use_horovod, checked; an explicit process_group wins."""
    if use_horovod:
        raise ValueError("use_horovod=True is not supported: sslfast gathers through torch.distributed "
                         "(pass world_size / rank, or a process_group)")
    rank = check.integer("rank", rank, 0)
    world_size = check.integer("world_size", world_size, 1)
    if rank >= world_size:
        raise ValueError(f"rank must be < world_size = {world_size}, got {rank}")
    if process_group is not None and not distributed.is_process_group(process_group):
        raise TypeError(f"process_group must be a torch.distributed ProcessGroup, got {type(process_group).__name__}")
    return rank, world_size, process_group


def _group_of(process_group, world_size):
    """The group a module's forward gathers over: its own, else WORLD when world_size > 1."""
    if process_group is not None:
        return process_group
    if world_size > 1:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise ValueError(f"world_size={world_size} but torch.distributed is not initialized")
        return torch.distributed.group.WORLD
    return None


class SigLipLoss(nn.Module):
    """open_clip ``SigLipLoss``: ``forward(image_features, text_features, logit_scale, logit_bias,
    output_dict=False)`` with open_clip's constructor arguments: positionally open_clip 3.x's
    (``cache_labels``, ``rank``, ``world_size``, ``dist_impl``); older releases' ``bidir`` and
    ``use_horovod`` by keyword.

    Distributed (``world_size > 1`` or ``process_group``): the exact share of this rank's images
    against every rank's text (docs/distributed.md). ``dist_impl`` "bidir" / "shift" (open_clip's
    exchanges, and ``bidir`` of older releases) pass the text chunks around the ring
    (sslfast.distributed's ring: no rank holds the global text); "gather" / "reduce" all-gather.

    sslfast's own arguments: with ``learn_scale`` (default) it owns a log-scale (init
    log(``init_scale``) = log 10) and a bias (init ``init_bias`` = -10), used when ``forward``
    gets no ``logit_scale``; a given ``logit_scale`` with ``logit_bias=None`` means no bias, as
    in open_clip. ``learn_scale=False`` owns no parameters.
    """

    def __init__(self, cache_labels: bool = False, rank: int = 0, world_size: int = 1, dist_impl: str | None = None,
                 *, bidir: bool = True, use_horovod: bool = False, learn_scale: bool = True,
                 init_scale: float = 10.0, init_bias: float = -10.0, process_group=None):
        super().__init__()
        if learn_scale:
            self.log_scale = nn.Parameter(torch.tensor(math.log(check.positive_float("init_scale", init_scale))))
            self.bias = nn.Parameter(torch.tensor(check.real("init_bias", init_bias)))
        else:
            self.log_scale = self.bias = None
        impl = dist_impl if dist_impl is not None else ("bidir" if bidir else "shift")
        if impl not in ("bidir", "shift", "reduce", "gather"):
            raise ValueError(f"dist_impl must be 'bidir', 'shift', 'reduce' or 'gather', got {dist_impl!r} "
                             "(older open_clip's bidir is keyword-only here)")
        self.dist_impl, self.ring = impl, impl in ("bidir", "shift")
        self.cache_labels = bool(cache_labels)
        self.rank, self.world_size, self.process_group = _distributed_args(rank, world_size, use_horovod,
                                                                           process_group)

    def forward(self, image_features, text_features, logit_scale=None, logit_bias=None, output_dict: bool = False):
        if logit_scale is None:
            if self.log_scale is None:
                raise TypeError("logit_scale must be given when SigLipLoss(learn_scale=False)")
            logit_scale = self.log_scale.exp()
            if logit_bias is None:  # the module's own (scale, bias) pair
                logit_bias = self.bias
        if logit_bias is None:  # a caller's scale without a bias: open_clip has no bias term then
            logit_bias = torch.zeros((), dtype=logit_scale.dtype, device=logit_scale.device)
        group = _group_of(self.process_group, self.world_size)
        if group is None:
            loss = ops.siglip_loss(image_features, text_features, logit_scale, logit_bias)
        else:
            loss = distributed.siglip_loss(image_features, text_features, logit_scale, logit_bias, process_group=group,
                                           ring=self.ring,
                                           expect=(self.rank, self.world_size) if self.process_group is None else None)
        return {"contrastive_loss": loss} if output_dict else loss
