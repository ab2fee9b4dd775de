import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
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


# --- multi-view test: predictions averaged per video, then scored once per video ---

def pearson(x, y):
    """From the definition, in float64."""
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    return float((x * y).sum() / (x.norm() * y.norm()))


def spearman(x, y):
    """Pearson of the ranks (the test values have no ties)."""
    return pearson(x.argsort().argsort().float(), y.argsort().argsort().float())


def angle_deg(a, b):
    """The angle between two 3-vectors, in float64 degrees."""
    a, b = a.double(), b.double()
    cos = (a @ b) / (a.norm() * b.norm())
    return math.degrees(math.acos(max(-1.0, min(1.0, float(cos)))))


def gaze_views(num_videos=5, num_views=3):
    """Per-view predicted gaze vectors of arbitrary length around each video's target."""
    torch.manual_seed(0)
    target = torch.nn.functional.normalize(torch.randn(num_videos, 3) + torch.tensor([0, 0, -2.0]),
                                           dim=-1)
    ids = torch.arange(num_videos).repeat_interleave(num_views)
    pred = (target[ids] + 0.4 * torch.randn(len(ids), 3)) * torch.rand(len(ids), 1).add(0.2) * 5
    return pred, target, ids


def test_gaze_multi_view_scores_the_mean_direction_per_video():
    pred, target, ids = gaze_views()
    task = GazeTask(output="vector")
    for start in range(0, len(ids), 4):  # views of a video may straddle batches
        sl = slice(start, start + 4)
        task.eval_step(Fixed(), {"video": pred[sl], "target": target[ids][sl], "index": ids[sl]})
    got = task.compute_metrics()["angular_error"]
    expected = []
    for v in range(len(target)):
        units = [p / p.norm() for p in pred[ids == v]]
        mean = sum(units) / len(units)
        expected.append(angle_deg(mean / mean.norm(), target[v]))
    assert abs(got - sum(expected) / len(expected)) < 1e-4
    per_clip = sum(angle_deg(p, target[v]) for p, v in zip(pred, ids.tolist())) / len(ids)
    assert abs(got - per_clip) > 0.5  # the per-video score is not the per-clip one here
    task.reset_metrics()
    task.eval_step(Fixed(), {"video": pred, "target": target[ids]})  # no index: clips
    assert abs(task.compute_metrics()["angular_error"] - per_clip) < 1e-4


def test_gaze_pitchyaw_views_are_averaged_as_directions():
    target = torch.nn.functional.normalize(torch.tensor([[0.0, 0.0, -1.0]]), dim=-1)
    # two views 10 degrees either side in yaw: their mean direction is the target exactly
    py = torch.tensor([[0.0, math.radians(10)], [0.0, math.radians(-10)]])
    task = GazeTask(output="pitchyaw")
    same = torch.tensor([4, 4])  # one video, two views
    task.eval_step(Fixed(), {"video": py, "target": target.expand(2, 3), "index": same})
    assert task.compute_metrics()["angular_error"] < 1e-3
    # yaw near +-180 degrees: a mean of angles would point backwards, the mean direction does not
    back = torch.tensor([[0.0, 0.0, 1.0]])
    py = torch.tensor([[0.0, math.radians(170)], [0.0, math.radians(-170)]])
    task.reset_metrics()
    task.eval_step(Fixed(), {"video": py, "target": back.expand(2, 3), "index": same})
    assert task.compute_metrics()["angular_error"] < 1e-3


def score_views(num_videos=8, num_views=4):
    torch.manual_seed(1)
    target = torch.rand(num_videos) * 5 + 3
    ids = torch.arange(num_videos).repeat_interleave(num_views)
    pred = target[ids] + torch.randn(len(ids))
    return pred, target, ids


def expected_score_metrics(pred, target, ids):
    means = torch.stack([pred[ids == v].double().mean() for v in range(len(target))])
    return {"mse": float(((means - target.double()) ** 2).mean()),
            "srcc": spearman(means, target), "plcc": pearson(means, target)}


def test_score_multi_view_averages_scores_per_video_before_srcc_and_plcc():
    pred, target, ids = score_views()
    task = ScoreRegressionTask()
    for start in range(0, len(ids), 5):
        sl = slice(start, start + 5)
        task.eval_step(Fixed(), {"features": pred[sl, None], "target": target[ids][sl],
                                 "index": ids[sl]})
    got, expected = task.compute_metrics(), expected_score_metrics(pred, target, ids)
    for k in expected:
        assert abs(got[k] - expected[k]) < 1e-5, (k, got[k], expected[k])
    per_clip = {"srcc": spearman(pred, target[ids]), "plcc": pearson(pred, target[ids])}
    assert abs(got["plcc"] - per_clip["plcc"]) > 0.05  # scoring clips would give another number


class Views(torch.utils.data.Dataset):
    """A multi-view test set as the clip datasets lay it out: item = video * views + view, with
    the video's `index`; `features` is the model's (identity) per-view prediction."""

    def __init__(self, pred, target, ids):
        self.pred, self.target, self.ids = pred, target, ids

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"features": self.pred[i:i + 1], "target": self.target[self.ids[i]],
                "index": int(self.ids[i]), "view": i % 4}


def eval_views(rank=0, world_size=1):
    from torch.utils.data import DataLoader

    from tubelet.data.loader import ShardSampler
    from tubelet.engine.evaluate import run_eval
    pred, target, ids = score_views()
    data = Views(pred, target, ids)
    sampler = ShardSampler(len(data), rank=rank, world_size=world_size, group_size=4)
    loader = DataLoader(data, batch_size=3, sampler=sampler)
    return run_eval(Fixed(), ScoreRegressionTask(), loader, device=torch.device("cpu"))


def test_run_eval_of_a_multi_view_regression_set_scores_videos():
    pred, target, ids = score_views()
    got, expected = eval_views(), expected_score_metrics(pred, target, ids)
    assert set(got) == {"val/mse", "val/srcc", "val/plcc"}
    for k in expected:
        assert abs(got[f"val/{k}"] - expected[k]) < 1e-5, k


GLOO_SCRIPT = """
import json, sys, torch, torch.distributed as dist
sys.path.insert(0, {tests!r})
from test_regression import eval_views
dist.init_process_group("gloo")
metrics = eval_views(dist.get_rank(), dist.get_world_size())
if dist.get_rank() == 0:
    open({out!r}, "w").write(json.dumps(metrics))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_two_gloo_ranks_give_the_single_process_metrics_exactly(tmp_path):
    """Each rank scores its share (a video's 4 views stay on one rank, in order); torchmetrics
    concatenates the states across ranks: the metrics equal the 1-process ones bit for bit."""
    out = tmp_path / "metrics.json"
    script = tmp_path / "gloo_eval.py"
    script.write_text(GLOO_SCRIPT.format(tests=str(Path(__file__).parent), out=str(out)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node=2", str(script)], timeout=180, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    two_ranks = json.loads(out.read_text())
    assert two_ranks == eval_views()  # == on floats: bitwise
    pred, target, ids = score_views()
    assert abs(two_ranks["val/plcc"] - expected_score_metrics(pred, target, ids)["plcc"]) < 1e-5
