"""Regression tasks: gaze direction (Gaze360) and a scalar score (AVA aesthetics)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.regression import MeanSquaredError, PearsonCorrCoef, SpearmanCorrCoef

from tubelet.metrics import angular_error_deg, angular_loss, pitchyaw_to_vector, vector_to_pitchyaw
from tubelet.registry import TASKS, ConfigError
from tubelet.tasks.base import Task


@TASKS.register("gaze")
class GazeTask(Task):
    """The model predicts a gaze direction: `output: vector` (3 numbers, any length) or
    `output: pitchyaw` (2 angles in radians). Targets are 3D gaze vectors (Gaze360's labels).
    `loss: l1` compares the outputs with the target in the output's own form; `loss: angular`
    is the angle between the directions. The metric is the mean angular error in degrees."""

    def __init__(self, *, output: str = "vector", loss: str = "angular",
                 input_key: str = "video", target_key: str = "target") -> None:
        super().__init__()
        if output not in ("vector", "pitchyaw"):
            raise ConfigError(f"output: expected 'vector' or 'pitchyaw', got {output!r}")
        if loss not in ("l1", "angular"):
            raise ConfigError(f"loss: expected 'l1' or 'angular', got {loss!r}")
        self.output, self.loss_type = output, loss
        self.input_key, self.target_key = input_key, target_key
        self.angular_error = MeanMetric()

    def to_vector(self, pred: torch.Tensor) -> torch.Tensor:
        return pitchyaw_to_vector(pred) if self.output == "pitchyaw" else pred

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        pred = model(batch[self.input_key]).float()  # (B, 3) or (B, 2)
        target = batch[self.target_key].float()  # (B, 3)
        if self.loss_type == "angular":
            return angular_loss(self.to_vector(pred), target)
        if self.output == "pitchyaw":
            return F.l1_loss(pred, vector_to_pitchyaw(target))
        return F.l1_loss(pred, F.normalize(target, dim=-1))

    @torch.no_grad()
    def eval_step(self, model: nn.Module, batch: dict[str, Any]) -> None:
        pred = self.to_vector(model(batch[self.input_key]).float())
        self.angular_error.update(angular_error_deg(pred, batch[self.target_key]))

    def compute_metrics(self) -> dict[str, float]:
        return {"angular_error": float(self.angular_error.compute())}

    def reset_metrics(self) -> None:
        self.angular_error.reset()


@TASKS.register("score_regression")
class ScoreRegressionTask(Task):
    """A scalar score per sample (AVA's mean aesthetic rating): MSE loss; MSE, SRCC and PLCC."""

    def __init__(self, *, input_key: str = "features", target_key: str = "target") -> None:
        super().__init__()
        self.input_key, self.target_key = input_key, target_key
        self.metrics = nn.ModuleDict({"mse": MeanSquaredError(), "srcc": SpearmanCorrCoef(),
                                      "plcc": PearsonCorrCoef()})

    def predict(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return model(batch[self.input_key]).float().reshape(-1)  # (B, 1) -> (B,)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return F.mse_loss(self.predict(model, batch), batch[self.target_key].float().reshape(-1))

    @torch.no_grad()
    def eval_step(self, model: nn.Module, batch: dict[str, Any]) -> None:
        pred, target = self.predict(model, batch), batch[self.target_key].float().reshape(-1)
        for metric in self.metrics.values():
            metric.update(pred, target)

    def compute_metrics(self) -> dict[str, float]:
        return {name: float(metric.compute()) for name, metric in self.metrics.items()}

    def reset_metrics(self) -> None:
        for metric in self.metrics.values():
            metric.reset()
