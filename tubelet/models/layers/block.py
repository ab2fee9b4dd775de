"""The pre-norm transformer block, with timm's module names (norm1, attn, ls1, norm2, mlp, ls2)."""
from __future__ import annotations

import torch
from torch import nn

from tubelet.models.layers.attention import Attention
from tubelet.models.layers.drop_path import DropPath
from tubelet.models.layers.mlp import Mlp


class LayerScale(nn.Module):
    """Per-channel scale of a residual branch (CaiT), initialised small so deep models start close
    to the identity. timm calls the parameter `ls1.gamma`; VideoMAE calls it `gamma_1`."""

    def __init__(self, dim: int, *, init_values: float) -> None:
        super().__init__()
        self.init_values = init_values
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def reset_parameters(self) -> None:
        nn.init.constant_(self.gamma, self.init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, dim: int, *, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool | str = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 init_values: float | None = None) -> None:
        super().__init__()
        # eps=1e-6 as in timm's and VideoMAE's ViTs; the pretrained weights were trained with it
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.ls1 = LayerScale(dim, init_values=init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), drop=drop)
        self.ls2 = LayerScale(dim, init_values=init_values) if init_values else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x))))  # (B,N,D)
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))
