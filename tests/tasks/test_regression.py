import math

import torch
from torch import nn

from tubelet.metrics import angular_error_deg, pitchyaw_to_vector, vector_to_pitchyaw
from tubelet.tasks.regression import GazeTask, ScoreRegressionTask


class Fixed(nn.Module):
    def forward(self, x):
        return x


def test_angular_error_and_pitchyaw_round_trip():
    a = torch.tensor([[1.0, 0, 0], [0, 0, -2.0]])
    b = torch.tensor([[0.0, 3, 0], [0, 0, -1.0]])
    torch.testing.assert_close(angular_error_deg(a, b), torch.tensor([90.0, 0.0]))
    py = torch.tensor([[0.3, -0.5], [-0.2, 1.0]])
    torch.testing.assert_close(vector_to_pitchyaw(pitchyaw_to_vector(py)), py)
    torch.testing.assert_close(pitchyaw_to_vector(torch.zeros(1, 2)), torch.tensor([[0.0, 0, -1]]))


def test_gaze_task_losses_and_metric():
    target = torch.nn.functional.normalize(torch.tensor([[0.1, 0.2, -1.0], [0.3, -0.1, -1.0]]), dim=-1)
    batch = {"video": target.clone(), "target": target}
    for loss in ("angular", "l1"):
        assert GazeTask(output="vector", loss=loss).loss(Fixed(), batch).item() < 2e-3  # acos clamp
    py_batch = {"video": vector_to_pitchyaw(target), "target": target}
    assert GazeTask(output="pitchyaw", loss="l1").loss(Fixed(), py_batch).item() < 1e-6
    task = GazeTask(output="pitchyaw", loss="angular")
    task.eval_step(Fixed(), {"video": vector_to_pitchyaw(target) + torch.tensor([math.radians(10), 0]),
                             "target": target})
    assert abs(task.compute_metrics()["angular_error"] - 10.0) < 0.5


def test_score_task_metrics():
    task = ScoreRegressionTask()
    pred = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    task.eval_step(Fixed(), {"features": pred, "target": torch.tensor([2.0, 4.0, 6.0, 9.0])})
    m = task.compute_metrics()
    assert abs(m["srcc"] - 1.0) < 1e-5 and 0.95 < m["plcc"] < 0.999
    assert abs(m["mse"] - (1 + 4 + 9 + 25) / 4) < 1e-5
    assert task.loss(Fixed(), {"features": pred, "target": pred[:, 0]}).item() == 0.0
