"""The transformer block's feed-forward network."""
from __future__ import annotations

import torch
from torch import nn


class Mlp(nn.Module):
    def __init__(self, in_features: int, *, hidden_features: int | None = None,
                 out_features: int | None = None, drop: float = 0.0) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(self.act(self.fc1(x)))  # (B,N,D) -> (B,N,hidden)
        return self.drop2(self.fc2(x))  # -> (B,N,out)
