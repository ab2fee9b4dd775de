"""Necks and heads for `VideoClassifier`: a neck pools a backbone's features to (B, D), a head
maps (B, D) to the outputs. Both live in their own registries, built from `model.neck` and
`model.head` nodes; the head gets `in_features` from the backbone at build time."""
from __future__ import annotations

import torch
from torch import nn

from tubelet.registry import MODELS, Registry

NECKS = Registry("neck")
HEADS = Registry("head")


@NECKS.register("global_avg_pool")
class GlobalAvgPool(nn.Module):
    """(B, C, T, H, W) feature maps or (B, N, D) tokens -> (B, D) means."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1) if x.ndim == 3 else x.flatten(2).mean(dim=2)


@HEADS.register("linear")
class LinearHead(nn.Module):
    """Dropout + linear: the classification (or regression: `num_classes` outputs) head."""

    def __init__(self, in_features: int, *, num_classes: int, dropout: float = 0.0,
                 init_scale: float = 1.0) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)
        if not self.fc.weight.is_meta:
            nn.init.trunc_normal_(self.fc.weight, std=0.02)
            nn.init.zeros_(self.fc.bias)
            with torch.no_grad():
                self.fc.weight.mul_(init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(x))  # (B, D) -> (B, num_classes)


@HEADS.register("linear_probe")
class LinearProbeHead(nn.Module):
    """MAE's linear probe head: `BatchNorm1d(affine=False, eps=1e-6)` then a linear layer with
    weights drawn at std 0.01 (main_linprobe.py). The normalisation has no parameters, so only
    the linear layer trains; it makes the probe insensitive to the feature scale."""

    def __init__(self, in_features: int, *, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(in_features, affine=False, eps=1e-6)
        self.fc = nn.Linear(in_features, num_classes)
        if not self.fc.weight.is_meta:
            nn.init.trunc_normal_(self.fc.weight, std=0.01)
            nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(x))  # (B, D) -> (B, num_classes)


@MODELS.register("mlp")
class FeatureMLP(nn.Module):
    """A model over precomputed feature vectors (B, in_features) -> (B, num_classes), e.g. an
    aesthetic-score regressor on CLIP embeddings. `dropout` is one rate per hidden layer (or one
    for all); `activation` "none" keeps it linear between layers, as LAION's aesthetic predictor."""

    def __init__(self, *, in_features: int, hidden_features: list[int], num_classes: int = 1,
                 dropout: float | list[float] = 0.0, activation: str = "gelu") -> None:
        super().__init__()
        if activation not in ("gelu", "relu", "none"):
            raise ValueError(f"activation must be 'gelu', 'relu' or 'none', got {activation!r}")
        rates = dropout if isinstance(dropout, (list, tuple)) else [dropout] * len(hidden_features)
        if len(rates) != len(hidden_features):
            raise ValueError(f"dropout: {len(rates)} rates for {len(hidden_features)} hidden layers")
        layers: list[nn.Module] = []
        width = in_features
        for hidden, rate in zip(hidden_features, rates):
            layers.append(nn.Linear(width, hidden))
            if activation != "none":
                layers.append(nn.GELU() if activation == "gelu" else nn.ReLU())
            layers.append(nn.Dropout(rate))
            width = hidden
        self.layers = nn.Sequential(*layers)
        self.num_features, self.num_classes = width, num_classes
        self.head = nn.Linear(width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(x))  # (B, in_features) -> (B, num_classes)
