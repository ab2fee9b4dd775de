"""Contrastive pretraining models: SimCLR, MoCo v2 and MoCo v3 in one shape.

    online:    backbone -> projector [-> predictor]            = q, trained
    momentum:  momentum.backbone -> momentum.projector         = k, an EMA of the online pair
    queue:     the last `queue_size` keys (MoCo v2), a buffer

The MLPs follow MoCo v3's `_build_mlp` (facebookresearch/moco-v3 `moco/builder.py`): Linear
(no bias) -> norm -> ReLU per hidden layer, a last Linear, and for the projector a last norm
without affine parameters. `norm` picks BatchNorm1d (MoCo v3's, over each rank's batch),
LayerNorm, or none; batch statistics make a rank's loss depend on how the batch is split, so
the rank-count equality holds only without BatchNorm (docs/models.md).

The momentum pair is a copy taken at init and moved by `momentum_update(m)` (MoCo v3's
`param_m = m * param_m + (1 - m) * param`, parameters only); the contrastive tasks call it
after each optimizer step. It lives in the model, so a checkpoint holds it and `resume` is
exact; `model.pretrained` loads the online `backbone.*` only (models/weights.py skips the rest).
The loss is the task's (tasks/contrastive.py): the model returns embeddings only.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from tubelet.registry import MODELS, ConfigError, build, validate

NORMS = ("bn", "ln", "none")


def build_mlp(num_layers: int, in_dim: int, hidden_dim: int, out_dim: int, *, norm: str,
              last_norm: bool) -> nn.Sequential:
    """MoCo v3's `_build_mlp`, with the norm as a choice."""
    layers: list[nn.Module] = []
    for i in range(num_layers):
        dim1 = in_dim if i == 0 else hidden_dim
        last = i == num_layers - 1
        dim2 = out_dim if last else hidden_dim
        layers.append(nn.Linear(dim1, dim2, bias=False))
        if not last:
            layers.append(_norm(norm, dim2, affine=True))
            layers.append(nn.ReLU(inplace=True))
        elif last_norm:
            # MoCo v3 follows SimCLR here: the output's norm has no affine parameters
            layers.append(_norm(norm, dim2, affine=False))
    return nn.Sequential(*layers)


def _norm(norm: str, dim: int, *, affine: bool) -> nn.Module:
    if norm == "bn":
        return nn.BatchNorm1d(dim, affine=affine)
    if norm == "ln":
        return nn.LayerNorm(dim, elementwise_affine=affine)
    return nn.Identity()


@MODELS.register("contrastive")
class ContrastiveModel(nn.Module):
    """`backbone`: a model node whose `forward_features` + `forward_head(pre_logits=True)`
    give pooled features (a ViT with `num_classes: 0`, a `resnet3d_*`). `proj_*`: the projector
    MLP (MoCo v3 ViT: 3 layers, 4096 hidden, 256 out; SimCLR: 2 layers, 128 out).
    `pred_layers`: 0 for no predictor (SimCLR, MoCo v2), 2 for MoCo v3's. `momentum_encoder`:
    keep the EMA pair (MoCo). `queue_size`: 0, or the number of past keys kept as extra
    negatives (MoCo v2; needs the momentum encoder)."""

    def __init__(self, *, backbone: dict[str, Any], proj_layers: int = 3,
                 proj_hidden_dim: int = 4096, proj_dim: int = 256, pred_layers: int = 0,
                 pred_hidden_dim: int = 4096, norm: str = "bn", momentum_encoder: bool = False,
                 queue_size: int = 0) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ConfigError(f"norm: expected one of {list(NORMS)}, got {norm!r}")
        if proj_layers < 1 or pred_layers < 0 or queue_size < 0:
            raise ConfigError("proj_layers: need proj_layers >= 1, pred_layers >= 0 and "
                              "queue_size >= 0")
        if queue_size and not momentum_encoder:
            raise ConfigError("queue_size: a queue holds momentum keys; set "
                              "momentum_encoder: true (MoCo v2) or queue_size: 0")
        validate(backbone, MODELS, key="backbone")
        self.backbone = build(backbone, MODELS)
        self.num_features = self.backbone.num_features
        self.projector = build_mlp(proj_layers, self.num_features, proj_hidden_dim, proj_dim,
                                   norm=norm, last_norm=True)
        self.predictor = (build_mlp(pred_layers, proj_dim, pred_hidden_dim, proj_dim, norm=norm,
                                    last_norm=False) if pred_layers else None)
        self.momentum: nn.ModuleDict | None = None
        if momentum_encoder:  # a copy of the online pair at init, as MoCo v3's builder does
            self.momentum = nn.ModuleDict({"backbone": copy.deepcopy(self.backbone),
                                           "projector": copy.deepcopy(self.projector)})
            self.momentum.requires_grad_(False)
        self.queue_size = queue_size
        if queue_size:
            # random unit keys, as MoCo v2 starts; a buffer, so the checkpoint holds it
            queue = nn.functional.normalize(torch.randn(queue_size, proj_dim), dim=1)
            self.register_buffer("queue", queue)
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> the backbone's pooled features (B, D): what a probe sees."""
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> the online embedding q (B, proj_dim), not normalised."""
        z = self.projector(self.features(x))
        return self.predictor(z) if self.predictor is not None else z

    @torch.no_grad()
    def momentum_forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> the momentum key k (B, proj_dim), without gradient."""
        assert self.momentum is not None, "model.momentum_encoder is false"
        encoder = self.momentum["backbone"]
        return self.momentum["projector"](
            encoder.forward_head(encoder.forward_features(x), pre_logits=True))

    @torch.no_grad()
    def momentum_update(self, m: float) -> None:
        """param_m = m * param_m + (1 - m) * param, as MoCo v3 (parameters only; each
        encoder keeps its own BatchNorm statistics)."""
        assert self.momentum is not None, "model.momentum_encoder is false"
        for online, ema in ((self.backbone, self.momentum["backbone"]),
                            (self.projector, self.momentum["projector"])):
            for p, p_m in zip(online.parameters(), ema.parameters(), strict=True):
                p_m.mul_(m).add_(p.detach(), alpha=1.0 - m)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write (N, proj_dim) keys over the oldest ones (a ring; N may exceed what is left
        before the end). Every rank passes the same gathered keys, so queues stay equal."""
        keys = keys[-self.queue_size:]
        slots = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % self.queue_size
        self.queue[slots] = keys.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + len(keys)) % self.queue_size)

    def no_weight_decay(self) -> set[str]:
        inner = getattr(self.backbone, "no_weight_decay", lambda: set())()
        return {f"backbone.{n}" for n in inner}
