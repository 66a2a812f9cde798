"""sslfast: fused kernels for self-supervised learning (contrastive losses, GNN message passing).

    import sslfast
    loss = sslfast.nt_xent(z1, z2, temperature=0.5)
    with sslfast.use_backend("reference"):
        ...
"""

from . import _native
from ._backend import BACKENDS, get_backend, set_backend, use_backend
from .ops import (clip_loss, edge_softmax, gat_aggregate, gcn_aggregate, info_nce, inner_product_edge_loss,
                  negative_sampling, nt_xent, sddmm, siglip_loss, spmm)
from .ops import (bert_mask_tokens, block_mask, masked_patch_loss, node_mask, random_masking, simmim_mask,
                  span_mask, tube_mask, unshuffle)
from .ops._contrastive_schema import register_fakes_and_autograd as _register_contrastive
from .ops._diffusion_schema import register_fakes_and_autograd as _register_diffusion
from .ops._gnn_schema import register_fakes_and_autograd as _register_gnn
from .ops._masking_schema import register_fakes_and_autograd as _register_masking

if _native.AVAILABLE:
    _register_contrastive("sslfast")
    _register_diffusion("sslfast")
    _register_masking("sslfast")
    _register_gnn("sslfast")

from . import graph  # noqa: E402
from .graph import Graph  # noqa: E402

from . import diffusion, nn, reference, triton  # noqa: E402  (triton registers sslfast_triton:: ops)

__version__ = "0.1.0"

__all__ = [
    "BACKENDS", "get_backend", "set_backend", "use_backend",
    "nt_xent", "info_nce", "clip_loss", "siglip_loss",
    "random_masking", "unshuffle", "masked_patch_loss", "block_mask", "tube_mask", "simmim_mask", "span_mask",
    "bert_mask_tokens", "node_mask",
    "Graph", "graph", "spmm", "gcn_aggregate", "sddmm", "edge_softmax", "gat_aggregate",
    "inner_product_edge_loss", "negative_sampling",
    "diffusion", "nn", "reference", "triton",
]
