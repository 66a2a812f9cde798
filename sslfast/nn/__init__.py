"""nn.Module wrappers around the fused ops."""

from .contrastive import ClipLoss, InfoNCELoss, NTXentLoss, SigLipLoss
from .diffusion import DiffusionLoss, DiffusionSampler
from .gnn import GATConv, GCNConv, GINConv, SAGEConv
from .masking import RandomMasking

__all__ = ["NTXentLoss", "InfoNCELoss", "ClipLoss", "SigLipLoss", "DiffusionLoss", "DiffusionSampler",
           "RandomMasking",
           "GCNConv", "SAGEConv", "GATConv", "GINConv"]
