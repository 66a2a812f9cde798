"""nn.Module wrappers around the fused ops."""

from .contrastive import ClipLoss, InfoNCELoss, NTXentLoss, SigLipLoss

__all__ = ["NTXentLoss", "InfoNCELoss", "ClipLoss", "SigLipLoss"]
