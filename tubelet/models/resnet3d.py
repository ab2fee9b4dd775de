"""ResNet3D-18/50 with inflated 3D convolutions (I3D-style), a 3D-CNN family beside the ViTs.

ResNet3D-18 uses 3x3x3 basic blocks; ResNet3D-50 bottlenecks inflate the first 1x1 convolution to
3x1x1 in time and keep the 1x3x3 spatial one (the slow pathway's recipe in SlowFast). Time is
never strided, space is strided by the stem and stages 2-4, as in EssentialMC2's ResNet3D.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from tubelet.registry import MODELS


def _conv_bn(cin: int, cout: int, kernel: tuple[int, int, int], stride: tuple[int, int, int] = (1, 1, 1)
             ) -> list[nn.Module]:
    padding = tuple(k // 2 for k in kernel)
    return [nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding, bias=False), nn.BatchNorm3d(cout)]


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, *, stride: int = 1) -> None:
        super().__init__()
        s = (1, stride, stride)
        self.branch = nn.Sequential(*_conv_bn(cin, width, (3, 3, 3), s), nn.ReLU(inplace=True),
                                    *_conv_bn(width, width, (3, 3, 3)))
        self.shortcut = (nn.Sequential(*_conv_bn(cin, width, (1, 1, 1), s))
                         if stride != 1 or cin != width else nn.Identity())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.branch(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, *, stride: int = 1) -> None:
        super().__init__()
        cout, s = width * self.expansion, (1, stride, stride)
        self.branch = nn.Sequential(*_conv_bn(cin, width, (3, 1, 1)), nn.ReLU(inplace=True),
                                    *_conv_bn(width, width, (1, 3, 3), s), nn.ReLU(inplace=True),
                                    *_conv_bn(width, cout, (1, 1, 1)))
        self.shortcut = (nn.Sequential(*_conv_bn(cin, cout, (1, 1, 1), s))
                         if stride != 1 or cin != cout else nn.Identity())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.branch(x) + self.shortcut(x))


@contextlib.contextmanager
def _keep_norm_stats(module: nn.Module) -> Iterator[None]:
    """Restore the BatchNorm running statistics that a checkpointed stage's recomputation in
    backward updates a second time (the forward already updated them once)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    saved = [[b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)]
             for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (mean, var, count) in zip(norms, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)


class ResNet3D(nn.Module):
    """(B, C, T, H, W) -> logits. timm's surface: `forward_features` gives the last feature map
    (B, num_features, T, H/32, W/32), `forward_head` pools it, drops out and classifies.
    `set_grad_checkpointing()` recomputes each stage in backward (BatchNorm statistics are
    updated once, as without it)."""

    channels_last_3d = True  # a 3D CNN: `train.channels_last` applies (engine/switches.py)

    def __init__(self, *, block: str = "bottleneck", layers: tuple[int, ...] = (3, 4, 6, 3),
                 num_classes: int = 400, in_chans: int = 3, dropout: float = 0.5,
                 base_width: int = 64) -> None:
        super().__init__()
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
        block_cls = BasicBlock if block == "basic" else Bottleneck
        self.stem = nn.Sequential(*_conv_bn(in_chans, base_width, (5, 7, 7), (1, 2, 2)),
                                  nn.ReLU(inplace=True),
                                  nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))
        stages, cin = [], base_width
        for i, num_blocks in enumerate(layers):
            width = base_width * 2 ** i
            blocks = []
            for j in range(num_blocks):
                blocks.append(block_cls(cin, width, stride=2 if i > 0 and j == 0 else 1))
                cin = width * block_cls.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.num_features, self.num_classes = cin, num_classes
        self.head_drop = nn.Dropout(dropout)
        self.head = nn.Linear(cin, num_classes) if num_classes > 0 else nn.Identity()
        self.grad_checkpointing = False
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d) and not m.weight.is_meta:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for stage in self.stages:
            for blk in stage:  # zero the last BN of each branch: every block starts as identity
                last_bn = blk.branch[-1]
                if not last_bn.weight.is_meta:
                    nn.init.zeros_(last_bn.weight)

    def fsdp_units(self) -> list[nn.Module]:
        """What FSDP2 shards one by one (engine/parallel.py): the four stages."""
        return list(self.stages)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each stage's activations in backward: less memory, more compute."""
        self.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B,C,T,H,W) -> (B, w, T, H/4, W/4)
        if not (self.grad_checkpointing and torch.is_grad_enabled()):
            return self.stages(x)  # -> (B, D, T, H/32, W/32)
        for stage in self.stages:
            # the recomputation runs under _keep_norm_stats: train-mode BatchNorm would
            # otherwise move its running statistics twice per step
            x = checkpoint(stage, x, use_reentrant=False, context_fn=lambda s=stage: (
                contextlib.nullcontext(), _keep_norm_stats(s)))
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(x.flatten(2).mean(dim=2))  # global average pool: (B, D)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


MODELS.add("resnet3d", ResNet3D)
MODELS.add("resnet3d_18", functools.partial(ResNet3D, block="basic", layers=(2, 2, 2, 2)))
MODELS.add("resnet3d_50", functools.partial(ResNet3D, block="bottleneck", layers=(3, 4, 6, 3)))
