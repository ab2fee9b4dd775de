"""Multi-view test: temporal_views x spatial_crops clips per video, the view in the batch, and
the evaluation reporting the accuracy of the views' averaged prediction."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from tubelet.data.datasets.hmdb51 import HMDB51
from tubelet.data.transforms import Resize
from tubelet.engine.evaluate import run_eval
from tubelet.tasks.classification import ClassificationTask


def multiview_set(synth_root) -> HMDB51:
    # Frames resized to 24x36 so the three 24x24 crops (left, centre, right) differ.
    return HMDB51(str(synth_root), subset="test", num_frames=4, stride=2, temporal_views=2,
                  spatial_crops=3, transform=Resize([24, 36]))


def test_six_clips_per_video_with_view_and_video_index(synth_root):
    data = multiview_set(synth_root)
    assert len(data) == 6 * len(data.samples) == 24
    items = [data[i] for i in range(len(data))]
    assert [it["index"] for it in items] == [v for v in range(4) for _ in range(6)]
    assert [it["view"] for it in items] == list(range(6)) * 4
    assert all(it["video"].shape == (3, 4, 24, 24) for it in items)
    clips = [it["video"] for it in items[:6]]  # one video's views are all different clips
    assert all(not torch.equal(clips[a], clips[b]) for a in range(6) for b in range(a))
    # views 0-2 share the first temporal window: the left crop of view 1 overlaps view 0's
    assert torch.equal(clips[0][..., 6:], clips[1][..., :18])


class PooledLinear(nn.Module):
    """A tiny model whose prediction depends on the crop: mean over time, linear on pixels."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * 24 * 24, 2)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.fc(video.mean(2).flatten(1))  # (B,C,T,H,W) -> (B,2)


def test_evaluation_reports_the_averaged_prediction_of_the_views(synth_root):
    data, model = multiview_set(synth_root), PooledLinear()
    task = ClassificationTask(2)
    metrics = run_eval(model, task, DataLoader(data, batch_size=5), device=torch.device("cpu"))
    with torch.no_grad():
        correct = 0
        for v in range(4):
            views = torch.stack([data[6 * v + k]["video"] for k in range(6)])
            probs = model(views).softmax(-1)  # (6, 2)
            label = data[6 * v]["label"]
            correct += int(probs.mean(0).argmax()) == label
    assert metrics["val/acc1"] == correct / 4
