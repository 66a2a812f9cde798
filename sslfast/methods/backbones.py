"""Small default encoders for the methods (users pass their own):

* ``ConvNet``: a VGG-style CNN for small grayscale / color images (MNIST, digits), global
  average pooled to ``out_dim`` features;
* ``ViT``: a Vision Transformer with the interface MAE and SimMIM use (``patch_embed``,
  ``pos_embed``, ``cls_token``, ``forward_tokens``), fixed 2-D sin-cos position embeddings as in
  MAE (facebookresearch/mae ``util/pos_embed.py``);
* ``MLPDenoiser``: an MLP epsilon-predictor with a sinusoidal timestep embedding (DDPM on 2-D data);
* ``GCNEncoder`` / ``GATEncoder``: stacks of ``sslfast.nn.GCNConv`` / ``GATConv``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sslfast import nn as fast_nn
from sslfast.functional import dropout


__all__ = ["ConvNet", "ViT", "TransformerBlock", "MLPDenoiser", "GCNEncoder", "GATEncoder",
           "sincos_pos_embed_2d", "timestep_embedding"]


class ConvNet(nn.Module):
    """``widths`` stages of ``convs_per_stage`` 3x3 conv-BN-ReLU layers, 2x2 max-pool between
    stages, then global average pooling: [B, C, H, W] -> [B, out_dim] with out_dim = widths[-1]."""

    def __init__(self, in_channels: int = 1, widths=(32, 64, 128), convs_per_stage: int = 1):
        super().__init__()
        layers, c = [], in_channels
        for i, w in enumerate(widths):
            if i:
                layers.append(nn.MaxPool2d(2))
            for _ in range(convs_per_stage):
                layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                c = w
        self.features = nn.Sequential(*layers)
        self.out_dim = c

    def forward(self, x):
        return self.features(x).mean(dim=(2, 3))


def sincos_pos_embed_2d(embed_dim: int, grid_size: int, cls_token: bool = False) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos position embedding: [grid^2 (+1), D] (a zero row for the cls token)."""
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be divisible by 4 for 2-D sin-cos embeddings, got {embed_dim}")
    coords = torch.arange(grid_size, dtype=torch.float64)
    gw, gh = torch.meshgrid(coords, coords, indexing="xy")  # MAE: np.meshgrid(grid_w, grid_h)
    omega = 1.0 / 10000 ** (torch.arange(embed_dim // 4, dtype=torch.float64) / (embed_dim / 4))

    def one_d(pos):
        out = pos.reshape(-1, 1) * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    emb = torch.cat([one_d(gw), one_d(gh)], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, embed_dim, dtype=torch.float64), emb])
    return emb.float()


class TransformerBlock(nn.Module):
    """Pre-norm ViT block (timm ``Block``): x + attn(ln(x)), x + mlp(ln(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        x = x + self.proj(attn.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """A small ViT: patch embedding (conv, stride = patch), a cls token, fixed sin-cos positions,
    ``depth`` pre-norm blocks, final LayerNorm. ``forward(images)`` returns the cls token's
    features [B, embed_dim]. MAE / SimMIM use ``patch_embed(images) -> [B, L, D]``,
    ``pos_embed`` [1, 1 + L, D] (cls first), ``cls_token`` [1, 1, D] and ``forward_tokens``."""

    def __init__(self, image_size: int = 28, patch_size: int = 4, in_channels: int = 1, embed_dim: int = 128,
                 depth: int = 4, num_heads: int = 4, mlp_ratio: float = 4.0):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} must be divisible by patch_size {patch_size}")
        self.image_size, self.patch_size, self.in_channels = image_size, patch_size, in_channels
        self.grid = image_size // patch_size
        self.num_patches = self.grid * self.grid
        self.embed_dim = self.out_dim = embed_dim
        self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_buffer("pos_embed", sincos_pos_embed_2d(embed_dim, self.grid, cls_token=True)[None])
        self.blocks = nn.ModuleList(TransformerBlock(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        nn.init.normal_(self.cls_token, std=0.02)
        w = self.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        self.apply(_init_vit_linear)

    def patch_embed(self, images):
        return self.proj(images).flatten(2).transpose(1, 2)

    def forward_tokens(self, tokens):
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def forward(self, images):
        x = self.patch_embed(images) + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        return self.forward_tokens(torch.cat([cls, x], dim=1))[:, 0]


def _init_vit_linear(m):
    if isinstance(m, nn.Linear):  # MAE: xavier_uniform weights, zero bias
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer sinusoidal embedding of (integer or float) timesteps [B] -> [B, dim]
    (DDPM / diffusers ``get_timestep_embedding`` with flip_sin_to_cos=True)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float().reshape(-1, 1) * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=1)


class MLPDenoiser(nn.Module):
    """``model(x_t, t) -> epsilon`` for vectors: [x_t, emb(t)] through ``depth`` SiLU layers
    of ``hidden`` units with residual connections. ``features(x_t, t)`` is the last hidden layer."""

    def __init__(self, data_dim: int = 2, hidden: int = 256, depth: int = 4, time_dim: int = 64):
        super().__init__()
        self.time_dim = time_dim
        self.inp = nn.Linear(data_dim + time_dim, hidden)
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.out = nn.Linear(hidden, data_dim)
        self.out_dim = hidden

    def features(self, x, t):
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        h = self.inp(torch.cat([x, timestep_embedding(t, self.time_dim)], dim=1))
        for layer in self.layers:
            h = h + layer(F.silu(h))
        return F.silu(h)

    def forward(self, x, t):
        return self.out(self.features(x, t))


class GCNEncoder(nn.Module):
    """``len(dims) - 1`` ``sslfast.nn.GCNConv`` layers dims[0] -> ... -> dims[-1] with ``activation``
    between them (and after the last one when ``last_activation``); ``forward(x, edge_index,
    edge_weight=None)``."""

    def __init__(self, dims, activation=nn.ReLU, last_activation: bool = False):
        super().__init__()
        if len(dims) < 2:
            raise ValueError(f"dims must list at least an input and an output size, got {dims!r}")
        self.convs = nn.ModuleList(fast_nn.GCNConv(a, b) for a, b in zip(dims[:-1], dims[1:]))
        count = len(self.convs) if last_activation else len(self.convs) - 1
        self.acts = nn.ModuleList(activation() if isinstance(activation, type) else activation
                                  for _ in range(count))
        self.out_dim = dims[-1]

    def forward(self, x, edge_index, edge_weight=None):
        for i, conv in enumerate(self.convs):
            x = conv(x, edge_index, edge_weight)
            if i < len(self.acts):
                x = self.acts[i](x)
        return x


def graphmae_gat_init_(weight, att_src, att_dst, bias):
    """GraphMAE's GAT initialization, in place (DGL ``GATConv.reset_parameters``, kept by its PyG
    port): Xavier-normal with the ReLU gain for the projection [heads * C, in] and both attention
    vectors, zero bias. The attention vectors must have DGL's shape [1, heads, C]: their fans are
    heads * C and C."""
    gain = nn.init.calculate_gain("relu")
    nn.init.xavier_normal_(weight, gain=gain)
    for name, att in (("att_src", att_src), ("att_dst", att_dst)):
        if att.dim() != 3 or att.shape[0] != 1:  # another shape gives other fans, so another scale
            raise ValueError(f"{name} must be shaped [1, heads, C], got {tuple(att.shape)}")
        nn.init.xavier_normal_(att, gain=gain)
    nn.init.zeros_(bias)


class GATEncoder(nn.Module):
    """GraphMAE's GAT encoder: ``num_layers`` GAT layers of ``heads`` heads x (hidden // heads)
    features, concatenated, each followed by PReLU (``encoding=True``: the last one too), with
    GraphMAE's initialization (``reset_parameters``); feature
    dropout ``in_drop`` before each layer (``sslfast.functional.dropout``: the hash-keyed mask),
    attention dropout ``attn_drop``; self loops added."""

    def __init__(self, in_dim: int, hidden: int = 512, heads: int = 4, num_layers: int = 2,
                 in_drop: float = 0.2, attn_drop: float = 0.1, negative_slope: float = 0.2):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden {hidden} must be divisible by heads {heads}")
        dims = [in_dim] + [hidden] * num_layers
        self.convs = nn.ModuleList(fast_nn.GATConv(a, b // heads, heads=heads, negative_slope=negative_slope,
                                           dropout=attn_drop) for a, b in zip(dims[:-1], dims[1:]))
        self.acts = nn.ModuleList(nn.PReLU() for _ in range(num_layers))
        self.in_drop = in_drop
        self.out_dim = hidden
        self.reset_parameters()

    def reset_parameters(self):
        """GraphMAE's initialization (DGL ``GATConv.reset_parameters``, kept by its PyG port):
        Xavier-normal with the ReLU gain for the projection and both attention vectors, zero bias.
        PyG's ``GATConv`` (and sslfast's, its drop-in) uses Glorot-uniform with gain 1: weights
        sqrt(2) times smaller."""
        for conv in self.convs:
            graphmae_gat_init_(conv.lin.weight, conv.att_src, conv.att_dst, conv.bias)
        for act in self.acts:
            act.reset_parameters()

    def forward(self, x, edge_index, *, projected: bool = False):
        """``projected``: x is already the first layer's ``lin(dropout(x))`` [N, hidden] (GraphMAE
        computes it from its masked rows without forming the dense masked input)."""
        for i, (conv, act) in enumerate(zip(self.convs, self.acts)):
            if i == 0 and projected:
                x = act(conv.attend(x, edge_index))
            else:
                x = act(conv(dropout(x, self.in_drop, self.training), edge_index))
        return x
