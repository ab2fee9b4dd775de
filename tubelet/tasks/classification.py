"""Classification: cross-entropy (label smoothing, or soft targets from mixup/cutmix), and top-k
and mean class accuracy over videos, averaging the softmax of a video's test views."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tubelet.data.mixup import Mixup
from tubelet.metrics import MultiViewAccuracy
from tubelet.registry import TASKS, check_kwargs
from tubelet.tasks.base import Task


def soft_target_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against (B, K) probability targets."""
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


@TASKS.register("classification")
class ClassificationTask(Task):
    """`mixup`: the keyword arguments of `tubelet.data.mixup.Mixup` (mixup_alpha, cutmix_alpha,
    prob, switch_prob), applied to training batches; `label_smoothing` then goes into the soft
    targets. `video_key`: the batch key that names a test view's video (the multi-view datasets'
    video index); views sharing it are scored as one video. Metrics: acc1, acc5 (more than 5
    classes), mean_class_acc."""

    def __init__(self, num_classes: int, *, label_smoothing: float = 0.0,
                 mixup: dict[str, Any] | None = None, input_key: str = "video",
                 target_key: str = "label", video_key: str | None = "index") -> None:
        super().__init__()
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.input_key, self.target_key, self.video_key = input_key, target_key, video_key
        self.mixup = None
        if mixup:
            check_kwargs(Mixup, mixup, key="mixup", runtime=("num_classes", "label_smoothing"))
            self.mixup = Mixup(num_classes=num_classes, label_smoothing=label_smoothing, **mixup)
        # torchmetrics syncs its states across ranks in compute(), so eval needs no manual gather.
        self.accuracy = MultiViewAccuracy(num_classes, top_k=(1, 5) if num_classes > 5 else (1,))

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        video, target = batch[self.input_key], batch[self.target_key]
        if self.mixup is not None and target.ndim == 1:
            video, target = self.mixup(video, target)  # -> soft targets (B, num_classes)
        logits = model(video)  # (B, C, T, H, W) -> (B, num_classes)
        if target.ndim == 2:
            return soft_target_cross_entropy(logits, target)
        if logits.dtype != torch.float32:  # autocast's bf16/fp16 logits; a no-op call costs too
            logits = logits.float()
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)

    @torch.no_grad()
    def eval_step(self, model: nn.Module, batch: dict[str, Any]) -> None:
        logits = model(batch[self.input_key]).float()  # (B, num_classes)
        video_id = batch.get(self.video_key) if self.video_key else None
        self.accuracy.update(logits, batch[self.target_key], video_id)

    def compute_metrics(self) -> dict[str, float]:
        metrics = self.accuracy.compute()
        metrics.pop("num_videos", None)
        return {name: float(value) for name, value in metrics.items()}

    def reset_metrics(self) -> None:
        self.accuracy.reset()

    def test_results(self) -> dict[str, Any]:
        return {"kind": "classification", **self.accuracy.video_results()}
