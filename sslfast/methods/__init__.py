"""Self-supervised methods on the fused ops. Each is an ``nn.Module`` built around the user's
encoder with its paper's defaults: ``forward(batch) -> loss`` and ``embed(...)``.

Contrastive and distillation: ``SimCLR``, ``MoCo`` (v2; ``version=3``), ``BYOL``, ``SimSiam``,
``CLIP``, ``SupCon``. Masked modeling: ``MAE``, ``SimMIM``. Diffusion: ``DDPM``. Graph:
``GAE``, ``VGAE``, ``DGI``, ``GRACE``, ``GraphMAE``. Small default encoders: ``backbones``.
``sslfast train METHOD`` (``sslfast.train``) trains any of them on an offline data set.
"""

from . import backbones
from ._common import ImageAugment
from .byol import BYOL
from .clip import CLIP
from .ddpm import DDPM
from .dgi import DGI
from .gae import GAE
from .grace import GRACE
from .graphmae import GraphMAE
from .mae import MAE
from .moco import MoCo
from .simclr import SimCLR
from .simmim import SimMIM
from .simsiam import SimSiam
from .supcon import SupCon
from .vgae import VGAE, VariationalGCNEncoder

__all__ = ["SimCLR", "MoCo", "BYOL", "SimSiam", "CLIP", "SupCon", "MAE", "SimMIM", "DDPM", "GAE", "VGAE",
           "VariationalGCNEncoder", "DGI", "GRACE", "GraphMAE", "ImageAugment", "backbones"]
