"""Metrics that the tasks share: top-k and mean class accuracy over multi-view videos, gaze
angular error. States are torchmetrics states, so `compute()` reduces them across ranks."""
from __future__ import annotations

import math

import torch
from torchmetrics import Metric

from tubelet.distributed import get_rank


class MultiViewAccuracy(Metric):
    """Top-k and mean class accuracy of videos seen as several views (clips x crops).

    `update(logits, target, video_id)` adds each view's softmax to its video's sum; `compute()`
    scores each video by its mean softmax over views (VideoMAE's and SlowFast's multi-view
    test), once. Sums are folded by video every `FOLD_EVERY` batches, so memory grows with the
    videos, not the views (the eval sampler keeps a video's views on one rank, in a row).
    States are concatenated across ranks and folded again, so a video split over ranks would
    still count once. Without a `video_id` every sample is its own video: clip accuracy.
    """

    full_state_update = False
    FOLD_EVERY = 16

    def __init__(self, num_classes: int, *, top_k: tuple[int, ...] = (1, 5)) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.top_k = tuple(k for k in top_k if k <= num_classes)
        for name in ("sums", "counts", "target", "video_id"):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self._num_clips = 0  # clips seen without a video_id, for their unique ids

    def update(self, logits: torch.Tensor, target: torch.Tensor,
               video_id: torch.Tensor | None = None) -> None:
        if video_id is None:  # unique ids: past the samples seen so far, disjoint across ranks
            offset = self._num_clips + (get_rank() << 40)
            video_id = torch.arange(offset, offset + target.numel(), device=target.device)
            self._num_clips += target.numel()
        self.sums.append(logits.float().softmax(dim=-1))  # (B, K)
        self.counts.append(torch.ones_like(target, dtype=torch.long))
        self.target.append(target.long())
        self.video_id.append(video_id.long())
        if len(self.sums) > self.FOLD_EVERY:
            folded = self._folded()
            for name, value in zip(("sums", "counts", "target", "video_id"), folded):
                setattr(self, name, [value])

    def _folded(self) -> tuple[torch.Tensor, ...]:
        """(sum of softmax (V,K), views (V,), label (V,), id (V,)) per video, ids in order."""
        sums, counts, target, ids = (torch.cat(x) if isinstance(x, list) else x
                                     for x in (self.sums, self.counts, self.target, self.video_id))
        unique, slot = torch.unique(ids, return_inverse=True)
        sums = sums.new_zeros(len(unique), self.num_classes).index_add_(0, slot, sums)
        counts = counts.new_zeros(len(unique)).index_add_(0, slot, counts)
        labels = target.new_zeros(len(unique)).scatter_(0, slot, target)
        return sums, counts, labels, unique

    def video_scores(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean softmax per video (V, K), label per video (V,)), videos in id order."""
        sums, counts, labels, _ = self._folded()
        return sums / counts.clamp_min(1)[:, None], labels

    def reset(self) -> None:
        super().reset()
        self._num_clips = 0

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
