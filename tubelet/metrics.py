"""Metrics that the tasks share: top-k and mean class accuracy over multi-view videos, gaze
angular error. States are torchmetrics states, so `compute()` reduces them across ranks."""
from __future__ import annotations

import math

import torch
from torchmetrics import Metric

from tubelet.distributed import get_rank


class MultiViewAccuracy(Metric):
    """Top-k and mean class accuracy of videos seen as several views (clips x crops).

    `update(logits, target, video_id)` stores each view's softmax; `compute()` averages the
    softmax of all views of a video (VideoMAE's and SlowFast's multi-view test) and scores each
    video once. The states are concatenated across ranks, and the eval sampler gives every view
    to exactly one rank, so no view is counted twice and no video is split wrongly. Without a
    `video_id` every sample is its own video: plain clip accuracy.
    """

    full_state_update = False

    def __init__(self, num_classes: int, *, top_k: tuple[int, ...] = (1, 5)) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.top_k = tuple(k for k in top_k if k <= num_classes)
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("video_id", default=[], dist_reduce_fx="cat")

    def update(self, logits: torch.Tensor, target: torch.Tensor,
               video_id: torch.Tensor | None = None) -> None:
        self.probs.append(logits.float().softmax(dim=-1))  # (B, K)
        self.target.append(target.long())
        if video_id is None:  # unique ids: past the samples stored so far, disjoint across ranks
            offset = sum(t.numel() for t in self.target[:-1]) + (get_rank() << 40)
            video_id = torch.arange(offset, offset + target.numel(), device=target.device)
        self.video_id.append(video_id.long())

    def video_scores(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean softmax per video (V, K), label per video (V,)), videos in id order."""
        probs, target, ids = (torch.cat(x) if isinstance(x, list) else x
                              for x in (self.probs, self.target, self.video_id))
        unique, slot = torch.unique(ids, return_inverse=True)
        sums = probs.new_zeros(len(unique), self.num_classes).index_add_(0, slot, probs)
        counts = torch.bincount(slot, minlength=len(unique)).clamp_min(1)
        labels = target.new_zeros(len(unique)).scatter_(0, slot, target)
        return sums / counts[:, None], labels

    def compute(self) -> dict[str, torch.Tensor]:
        if isinstance(self.target, list) and not self.target:
            raise RuntimeError("MultiViewAccuracy.compute() before any update()")
        scores, labels = self.video_scores()
        top = scores.topk(max(self.top_k), dim=-1).indices  # (V, kmax)
        out = {f"acc{k}": (top[:, :k] == labels[:, None]).any(dim=1).float().mean()
               for k in self.top_k}
        correct = (top[:, 0] == labels).float()
        per_class = torch.zeros(self.num_classes, device=scores.device).index_add_(0, labels, correct)
        seen = torch.bincount(labels, minlength=self.num_classes)
        out["mean_class_acc"] = (per_class[seen > 0] / seen[seen > 0]).mean()
        out["num_videos"] = torch.tensor(float(len(labels)))
        return out


def pitchyaw_to_vector(pitchyaw: torch.Tensor) -> torch.Tensor:
    """(..., 2) (pitch, yaw) in radians -> (..., 3) unit gaze vectors, in Gaze360's camera frame
    (its `spherical2cartesial`: x = cos(p) sin(y), y = sin(p), z = -cos(p) cos(y))."""
    pitch, yaw = pitchyaw.unbind(-1)
    return torch.stack([pitch.cos() * yaw.sin(), pitch.sin(), -pitch.cos() * yaw.cos()], dim=-1)


def vector_to_pitchyaw(vector: torch.Tensor) -> torch.Tensor:
    """The inverse of `pitchyaw_to_vector` for (..., 3) vectors of any length."""
    v = torch.nn.functional.normalize(vector, dim=-1)
    x, y, z = v.unbind(-1)
    return torch.stack([y.clamp(-1.0, 1.0).asin(), torch.atan2(x, -z)], dim=-1)


def angular_error_deg(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(..., 3) x (..., 3) -> (...) angle between the directions, in degrees."""
    cos = torch.nn.functional.cosine_similarity(pred.float(), target.float(), dim=-1, eps=1e-8)
    return torch.rad2deg(cos.clamp(-1.0, 1.0).acos())


def angular_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean angle in radians; acos is clamped away from +-1, where its gradient is infinite."""
    cos = torch.nn.functional.cosine_similarity(pred.float(), target.float(), dim=-1, eps=1e-8)
    return cos.clamp(-1.0 + 1e-6, 1.0 - 1e-6).acos().mean()


DEGREES = 180.0 / math.pi
