"""Regression tasks: gaze direction (Gaze360) and a scalar score (AVA aesthetics).

Both score videos, not clips: in a multi-view test (several clips or crops of a video, sharing
its `index`) the views' predictions are averaged per video first, then scored once per video,
as classification averages the views' softmax. A score is the mean of the views' scores, as
FAST-VQA's test does (VQAssessment/FAST-VQA-and-FasterVQA `new_test.py` `inference_set`:
`np.mean(model(video))` over a video's clips, then SRCC/PLCC over the videos). A gaze direction
is our choice, documented: the mean of the views' unit vectors, normalised (the sample mean
direction of directional data). Unlike a mean of yaw angles it has no wrap-around at +-180
degrees, and every view weighs the same whatever the length of its raw output vector. Gaze360
itself scores one window per sample: the one-view case, where this is the plain angular error.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional import pearson_corrcoef, spearman_corrcoef

from tubelet.metrics import (VideoMean, angular_error_deg, angular_loss, pitchyaw_to_vector,
                             vector_to_pitchyaw)
from tubelet.registry import TASKS, ConfigError
from tubelet.tasks.base import Task


@TASKS.register("gaze")
class GazeTask(Task):
    """The model predicts a gaze direction: `output: vector` (3 numbers, any length) or
    `output: pitchyaw` (2 angles in radians). Targets are 3D gaze vectors (Gaze360's labels).
    `loss: l1` compares the outputs with the target in the output's own form; `loss: angular`
    is the angle between the directions. The metric is the mean angular error in degrees, per
    video: views sharing `video_key` are averaged first (the module docstring)."""

    def __init__(self, *, output: str = "vector", loss: str = "angular",
                 input_key: str = "video", target_key: str = "target",
                 video_key: str | None = "index") -> None:
        super().__init__()
        if output not in ("vector", "pitchyaw"):
            raise ConfigError(f"output: expected 'vector' or 'pitchyaw', got {output!r}")
        if loss not in ("l1", "angular"):
            raise ConfigError(f"loss: expected 'l1' or 'angular', got {loss!r}")
        self.output, self.loss_type = output, loss
        self.input_key, self.target_key, self.video_key = input_key, target_key, video_key
        self.directions = VideoMean(3)  # mean unit gaze vector per video

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
        pred = self.to_vector(model(batch[self.input_key]).float())  # (B, 3)
        video_id = batch.get(self.video_key) if self.video_key else None
        self.directions.update(F.normalize(pred, dim=-1), batch[self.target_key].float(), video_id)

    def compute_metrics(self) -> dict[str, float]:
        mean_direction, target = self.directions.compute()  # (V, 3), (V, 3)
        mean_direction = F.normalize(mean_direction, dim=-1)
        return {"angular_error": float(angular_error_deg(mean_direction, target).mean())}

    def reset_metrics(self) -> None:
        self.directions.reset()

    def test_results(self) -> dict[str, Any]:
        """Per video: the mean direction (unit vector), the target and the angle between."""
        ids, mean_direction, target = self.directions.per_video()
        pred = F.normalize(mean_direction, dim=-1)
        return {"kind": "regression", "id": ids, "pred": pred, "target": target,
                "error": angular_error_deg(pred, target), "error_name": "angular_error_deg"}


@TASKS.register("score_regression")
class ScoreRegressionTask(Task):
    """A scalar score per sample (AVA's mean aesthetic rating): MSE loss; MSE, SRCC and PLCC
    over videos, the views sharing `video_key` averaged first (the module docstring)."""

    def __init__(self, *, input_key: str = "features", target_key: str = "target",
                 video_key: str | None = "index") -> None:
        super().__init__()
        self.input_key, self.target_key, self.video_key = input_key, target_key, video_key
        self.scores = VideoMean(1)  # mean predicted score per video

    def predict(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return model(batch[self.input_key]).float().reshape(-1)  # (B, 1) -> (B,)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return F.mse_loss(self.predict(model, batch), batch[self.target_key].float().reshape(-1))

    @torch.no_grad()
    def eval_step(self, model: nn.Module, batch: dict[str, Any]) -> None:
        pred, target = self.predict(model, batch), batch[self.target_key].float().reshape(-1)
        video_id = batch.get(self.video_key) if self.video_key else None
        self.scores.update(pred[:, None], target, video_id)

    def compute_metrics(self) -> dict[str, float]:
        pred, target = self.scores.compute()  # (V, 1), (V,)
        pred = pred[:, 0]
        return {"mse": float(F.mse_loss(pred, target)),
                "srcc": float(spearman_corrcoef(pred, target)),
                "plcc": float(pearson_corrcoef(pred, target))}

    def reset_metrics(self) -> None:
        self.scores.reset()

    def test_results(self) -> dict[str, Any]:
        """Per video: the mean predicted score, the target and their difference."""
        ids, pred, target = self.scores.per_video()
        return {"kind": "regression", "id": ids, "pred": pred[:, 0], "target": target,
                "error": pred[:, 0] - target, "error_name": "error"}
