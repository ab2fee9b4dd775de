"""`VideoClassifier(backbone, neck, head)`: a model assembled from registered parts, as
EssentialMC2's recipes do. The short way stays a timm-style name (`vit_base_patch16_224`)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tubelet.models.heads import HEADS, NECKS
from tubelet.registry import MODELS, ConfigError, build, validate


@MODELS.register("video_classifier")
class VideoClassifier(nn.Module):
    """`backbone`: a model node whose `forward_features` gives tokens or feature maps (a ViT
    built with `num_classes: 0`, a `resnet3d_*`). `neck`: a pooling node, or None to use the
    backbone's own pooling (`forward_head(pre_logits=True)`, e.g. a ViT's cls token or mean +
    fc_norm). `head`: a head node; it is told `in_features`. `freeze_backbone`: the linear probe:
    backbone weights get no gradient and stay in eval mode (no dropout, frozen norm statistics),
    so only the head's parameters reach the optimizer."""

    def __init__(self, *, backbone: dict[str, Any], head: dict[str, Any],
                 neck: dict[str, Any] | None = None, freeze_backbone: bool = False) -> None:
        super().__init__()
        # validated here with their own keys; the builder prefixes "model." to the error
        validate(backbone, MODELS, key="backbone")
        validate(head, HEADS, key="head", runtime=("in_features",))
        if neck is not None:
            validate(neck, NECKS, key="neck")
        self.backbone = build(backbone, MODELS)
        self.neck = build(neck, NECKS) if neck is not None else None
        self.head = build(head, HEADS, in_features=self.backbone.num_features)
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> "VideoClassifier":
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> pooled features (B, D)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            x = self.backbone.forward_features(x)
            if self.neck is not None:
                return self.neck(x)
            return self.backbone.forward_head(x, pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))  # (B, D) -> (B, num_classes)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """The backbone's activation checkpointing (timm's surface); neck and head are small."""
        if not hasattr(self.backbone, "set_grad_checkpointing"):
            raise ConfigError(f"model.grad_checkpointing: backbone {type(self.backbone).__name__} "
                              "has no set_grad_checkpointing()")
        self.backbone.set_grad_checkpointing(enable)

    @property
    def channels_last_3d(self) -> bool:
        """Whether `train.channels_last` applies: the backbone is a 3D CNN."""
        return bool(getattr(self.backbone, "channels_last_3d", False))

    def no_weight_decay(self) -> set[str]:
        inner = getattr(self.backbone, "no_weight_decay", lambda: set())()
        return {f"backbone.{n}" for n in inner}

    @property
    def num_layers(self) -> int:
        return self.backbone.num_layers

    def get_layer_id(self, param_name: str) -> int:
        """The backbone's layer ids; the neck and head are in the last group."""
        if param_name.startswith("backbone."):
            return self.backbone.get_layer_id(param_name[len("backbone."):])
        return self.num_layers - 1
