"""Multi-label classification: a sigmoid per class, binary cross-entropy, and mAP / top-k recall
over videos, a video's views averaged as sigmoid scores (tubelet/multilabel_metrics.py)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tubelet.multilabel_metrics import MultiLabelMetrics
from tubelet.registry import TASKS, ConfigError
from tubelet.tasks.base import Task


@TASKS.register("multilabel")
class MultiLabelTask(Task):
    """BCE-with-logits against (B, num_classes) multi-hot targets (the multi-label datasets'
    `label`). `label_smoothing` e moves each target towards 1/2: `y (1 - e) + e / 2` (the
    binary case of classification's smoothing towards the uniform distribution).
    `pos_weight`: one weight for every class's positives (BCEWithLogits' pos_weight), or null.
    Metrics: map (mean over classes with a positive video), map_classes, recall<k> for
    `top_k` (k <= num_classes)."""

    def __init__(self, num_classes: int, *, label_smoothing: float = 0.0,
                 pos_weight: float | None = None, top_k: tuple[int, ...] = (1, 5),
                 input_key: str = "video", target_key: str = "label",
                 video_key: str | None = "index") -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing: must be in [0, 1), got {label_smoothing}")
        if pos_weight is not None and not pos_weight > 0:
            raise ConfigError(f"pos_weight: must be > 0 or null, got {pos_weight}")
        if not top_k or min(top_k) < 1:
            raise ConfigError(f"top_k: expected positive integers, got {top_k!r}")
        self.num_classes, self.label_smoothing, self.pos_weight = num_classes, label_smoothing, pos_weight
        self.input_key, self.target_key, self.video_key = input_key, target_key, video_key
        self.scores = MultiLabelMetrics(num_classes, top_k=tuple(top_k))

    def _targets(self, batch: dict[str, Any]) -> torch.Tensor:
        target = batch[self.target_key]
        if target.ndim != 2 or target.shape[1] != self.num_classes:
            raise ConfigError(f"task.num_classes: {self.num_classes}, but the batch's "
                              f"{self.target_key!r} has shape {list(target.shape)}; the "
                              f"multilabel task needs multi-hot targets (a multi-label dataset)")
        return target.float()

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        target = self._targets(batch)
        if self.label_smoothing:
            target = target * (1.0 - self.label_smoothing) + self.label_smoothing / 2
        logits = model(batch[self.input_key]).float()  # (B, C, T, H, W) -> (B, num_classes)
        weight = (None if self.pos_weight is None else
                  torch.full((self.num_classes,), self.pos_weight, device=logits.device))
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight)

    @torch.no_grad()
    def eval_step(self, model: nn.Module, batch: dict[str, Any]) -> None:
        logits = model(batch[self.input_key]).float()
        video_id = batch.get(self.video_key) if self.video_key else None
        self.scores.update(logits, self._targets(batch), video_id)

    def compute_metrics(self) -> dict[str, float]:
        return {name: float(value) for name, value in self.scores.compute().items()}

    def reset_metrics(self) -> None:
        self.scores.reset()
