"""sslfast: fused kernels for self-supervised learning (contrastive losses, masking, diffusion
noise steps, GNN message passing).

    import sslfast
    loss = sslfast.nt_xent(z1, z2, temperature=0.5)
    with sslfast.use_backend("reference"):
        ...

Layout and how one op flows through the layers: docs/ARCHITECTURE.md.
"""

from . import _native
from ._dispatch import BACKENDS, get_backend, set_backend, set_op_backend, use_backend

if _native.AVAILABLE:
    from . import fake

    fake.register("sslfast")
    fake.register("sslfast_triton")

from . import triton  # noqa: E402  (registers the Triton kernels of sslfast_triton::)
from . import _dispatch  # noqa: E402

_dispatch.refresh()  # the table now sees the Triton kernels

from .functional import (bert_mask_tokens, block_mask, edge_softmax, inner_product_edge_loss,  # noqa: E402
                         negative_sampling, node_mask, simmim_mask, span_mask, tube_mask)
from .graph import Graph  # noqa: E402
from .ops import (augment_images, clip_loss, drop_mask, ema_, gat_aggregate, gcn_aggregate,  # noqa: E402
                  info_nce, masked_patch_loss, nt_xent, random_masking, sddmm, siglip_loss, spmm, supcon,
                  unshuffle)

from . import diffusion, functional, graph, nn, reference  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "BACKENDS", "get_backend", "set_backend", "set_op_backend", "use_backend",
    "nt_xent", "info_nce", "clip_loss", "siglip_loss", "supcon",
    "random_masking", "unshuffle", "masked_patch_loss", "block_mask", "tube_mask", "simmim_mask", "span_mask",
    "bert_mask_tokens", "node_mask",
    "Graph", "graph", "spmm", "gcn_aggregate", "sddmm", "edge_softmax", "gat_aggregate",
    "inner_product_edge_loss", "negative_sampling",
    "augment_images", "drop_mask", "ema_",
    "diffusion", "functional", "nn", "reference", "triton",
]
