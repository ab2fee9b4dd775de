"""Classification: cross-entropy (with optional label smoothing), top-k and mean class accuracy."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from tubelet.registry import TASKS
from tubelet.tasks.base import Task


@TASKS.register("classification")
class ClassificationTask(Task):
    def __init__(self, num_classes: int, *, label_smoothing: float = 0.0,
                 input_key: str = "video", target_key: str = "label") -> None:
        super().__init__()
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.input_key, self.target_key = input_key, target_key
        # torchmetrics syncs its states across ranks in compute(), so eval needs no manual gather.
        metrics = {"acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
                   "mean_class_acc": MulticlassAccuracy(num_classes, top_k=1, average="macro")}
        if num_classes > 5:
            metrics["acc5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
        self.metrics = nn.ModuleDict(metrics)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        logits = model(batch[self.input_key])  # (B, C, T, H, W) -> (B, num_classes)
        target = batch[self.target_key]  # (B,) class ids or (B, num_classes) soft targets
        if target.ndim == 2:
            return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        return F.cross_entropy(logits.float(), target, label_smoothing=self.label_smoothing)

    @torch.no_grad()
    def eval_step(self, model: nn.Module, batch: dict[str, Any]) -> None:
        logits = model(batch[self.input_key]).float()  # (B, num_classes)
        for metric in self.metrics.values():
            metric.update(logits, batch[self.target_key])

    def compute_metrics(self) -> dict[str, float]:
        return {name: float(metric.compute()) for name, metric in self.metrics.items()}

    def reset_metrics(self) -> None:
        for metric in self.metrics.values():
            metric.reset()
