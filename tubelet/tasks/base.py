"""A Task owns the objective and its metrics, so the Trainer knows no task."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Task(nn.Module):
    """Subclasses define `loss` and the metric hooks. A Task is an nn.Module only so that its
    metric states follow `.to(device)`; it has no trainable parameters."""

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """The scalar training loss for one (micro-)batch."""
        raise NotImplementedError

    @torch.no_grad()
    def eval_step(self, model: nn.Module, batch: dict[str, Any]) -> None:
        """Update the metric states with one evaluation batch."""
        raise NotImplementedError

    def compute_metrics(self) -> dict[str, float]:
        """Metrics over everything seen since the last reset (reduced across ranks)."""
        raise NotImplementedError

    def reset_metrics(self) -> None:
        raise NotImplementedError

    def test_results(self) -> dict[str, Any] | None:
        """Per-video outputs of the last evaluation pass for the test stage's files (engine/
        testing.py), over all ranks: a collective, every rank calls it. None: metrics only."""
        return None

    def after_step(self, model: nn.Module, *, step: int, total_steps: int) -> None:
        """Called after each optimizer step (`step` steps done of `total_steps`), before the
        hooks and any checkpoint: e.g. MoCo's momentum encoder update. Nothing by default."""

    def eval_images(self) -> dict[str, Any]:
        """Pictures of the last evaluation, {tag: HxWx3 uint8 array}, for the run's loggers
        (e.g. MAE reconstructions); none by default."""
        return {}
