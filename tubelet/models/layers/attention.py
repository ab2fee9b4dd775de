"""Multi-head self-attention on PyTorch's fused kernel (`F.scaled_dot_product_attention`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Self-attention with one `qkv` projection and an output `proj`.

    `qkv_bias` picks the bias layout, so both families of checkpoints load without renaming:
    - True: one `qkv.bias` of size 3*dim (timm, MAE);
    - False: no bias;
    - "qv": separate `q_bias` and `v_bias`, and no key bias (VideoMAE, BEiT). A key bias adds the
      same q.b_k to every logit of a query's row, and softmax ignores that, so it is never learned.
    """

    def __init__(self, dim: int, *, num_heads: int = 8, qkv_bias: bool | str = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        if qkv_bias not in (True, False, "qv"):
            raise ValueError(f"qkv_bias must be true, false or 'qv', got {qkv_bias!r}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_drop = attn_drop  # a probability: the fused kernel applies the dropout itself
        separate = qkv_bias == "qv"
        self.qkv = nn.Linear(dim, 3 * dim, bias=bool(qkv_bias) and not separate)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if separate else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if separate else None
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        bias = self.qkv.bias
        if self.q_bias is not None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])  # (3D,)
        qkv = F.linear(x, self.qkv.weight, bias)  # (B,N,D) -> (B,N,3D)
        qkv = qkv.reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3,B,h,N,d)
        q, k, v = qkv.unbind(0)
        dropout_p = self.attn_drop if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)  # (B,h,N,d)
        x = x.transpose(1, 2).reshape(B, N, D)  # heads back together: (B,N,D)
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, attn_drop={self.attn_drop}"
