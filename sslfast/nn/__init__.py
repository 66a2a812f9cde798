"""nn.Module wrappers around the fused ops."""

from .contrastive import ClipLoss, InfoNCELoss, NTXentLoss, SigLipLoss
from .gnn import GATConv, GCNConv, GINConv, SAGEConv

__all__ = ["NTXentLoss", "InfoNCELoss", "ClipLoss", "SigLipLoss", "GCNConv", "SAGEConv", "GATConv", "GINConv"]
