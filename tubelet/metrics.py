"""Metrics that the tasks share: per-video aggregation of multi-view test predictions, top-k
and mean class accuracy, gaze angular error. States are torchmetrics states, so `compute()`
reduces them across ranks."""
from __future__ import annotations

import math

import torch
from torchmetrics import Metric

from tubelet.distributed import get_rank


class VideoMean(Metric):
    """The mean of a per-view prediction over each video's views (clips x crops), for every task.

    `update(values (B, K), target (B, ...), video_id (B,))` adds each view's row to its video's
    sum; `compute()` returns (mean row per video (V, K), target per video (V, ...)), videos in id
    order. Sums are folded by video every `FOLD_EVERY` batches, so memory grows with the videos,
    not the views (the eval sampler keeps a video's views on one rank, in a row, so a video's
    views are added in the same order on any number of ranks: the means are bitwise the same).
    States are concatenated across ranks and folded again, so a video split over ranks would
    still count once. Without a `video_id` every sample is its own video. A video's views share
    its target (any view's is kept).
    """

    full_state_update = False
    FOLD_EVERY = 16

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width
        for name in ("sums", "counts", "target", "video_id"):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self._num_clips = 0  # clips seen without a video_id, for their unique ids

    def update(self, values: torch.Tensor, target: torch.Tensor,
               video_id: torch.Tensor | None = None) -> None:
        if video_id is None:  # unique ids: past the samples seen so far, disjoint across ranks
            offset = self._num_clips + (get_rank() << 40)
            video_id = torch.arange(offset, offset + len(target), device=target.device)
            self._num_clips += len(target)
        assert values.shape == (len(target), self.width), (values.shape, self.width)
        self.sums.append(values.float())
        self.counts.append(torch.ones(len(target), dtype=torch.long, device=target.device))
        self.target.append(target)
        self.video_id.append(video_id.long())
        if len(self.sums) > self.FOLD_EVERY:
            folded = self._folded()
            for name, value in zip(("sums", "counts", "target", "video_id"), folded):
                setattr(self, name, [value])

    def _folded(self) -> tuple[torch.Tensor, ...]:
        """(sum of values (V, K), views (V,), target (V, ...), id (V,)) per video, ids in order."""
        sums, counts, target, ids = (torch.cat(x) if isinstance(x, list) else x
                                     for x in (self.sums, self.counts, self.target, self.video_id))
        unique, slot = torch.unique(ids, return_inverse=True)
        sums = sums.new_zeros(len(unique), self.width).index_add_(0, slot, sums)
        counts = counts.new_zeros(len(unique)).index_add_(0, slot, counts)
        targets = target.new_zeros((len(unique), *target.shape[1:])).index_copy_(0, slot, target)
        return sums, counts, targets, unique

    def video_means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean row per video (V, K), target per video (V, ...)), videos in id order."""
        if isinstance(self.target, list) and not self.target:
            raise RuntimeError(f"{type(self).__name__}.compute() before any update()")
        sums, counts, targets, _ = self._folded()
        return sums / counts.clamp_min(1)[:, None], targets

    def per_video(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(video id (V,), mean row (V, K), target (V, ...)) over all ranks, ids in order: the
        rows a results file lists. A collective under DDP (the states are gathered, as in
        `compute`), so every rank calls it; each video is there once, however its views were
        split over ranks."""
        with self.sync_context(dist_sync_fn=self.dist_sync_fn):
            sums, counts, targets, ids = self._folded()
        return ids, sums / counts.clamp_min(1)[:, None], targets

    def reset(self) -> None:
        super().reset()
        self._num_clips = 0

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.video_means()


class ClassScoreMean(VideoMean):
    """A `VideoMean` of one score per class, reported at the `top_k` cut-offs that fit in
    `num_classes` (single-label accuracy here, multi-label recall in multilabel_metrics)."""

    def __init__(self, num_classes: int, *, top_k: tuple[int, ...] = (1, 5)) -> None:
        super().__init__(num_classes)
        self.num_classes = num_classes
        self.top_k = tuple(k for k in top_k if k <= num_classes)


class MultiViewAccuracy(ClassScoreMean):
    """Top-k and mean class accuracy of videos seen as several views: each video is scored by
    its mean softmax over views (VideoMAE's and SlowFast's multi-view test), once. Without a
    `video_id` every sample is its own video: clip accuracy."""

    def update(self, logits: torch.Tensor, target: torch.Tensor,
               video_id: torch.Tensor | None = None) -> None:
        super().update(logits.float().softmax(dim=-1), target.long(), video_id)

    def video_scores(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean softmax per video (V, K), label per video (V,)), videos in id order."""
        return self.video_means()

    def video_results(self) -> dict[str, torch.Tensor]:
        """What the test stage writes, over all ranks (a collective: every rank calls it):
        per video its `id`, mean softmax `scores` (V, K), `label` and top-1 `pred`; per class
        `per_class_acc` and `support`; the `confusion` matrix (true x predicted). Top-1 is
        taken as in `compute`, so the files agree with acc1 exactly."""
        ids, scores, labels = self.per_video()
        pred = scores.topk(1, dim=-1).indices[:, 0]
        per_class, support = per_class_accuracy(pred, labels, self.num_classes)
        return {"id": ids, "scores": scores, "label": labels, "pred": pred,
                "per_class_acc": per_class, "support": support,
                "confusion": confusion_matrix(pred, labels, self.num_classes)}

    def compute(self) -> dict[str, torch.Tensor]:
        scores, labels = self.video_scores()
        top = scores.topk(max(self.top_k), dim=-1).indices  # (V, kmax)
        out = {f"acc{k}": (top[:, :k] == labels[:, None]).any(dim=1).float().mean()
               for k in self.top_k}
        per_class, seen = per_class_accuracy(top[:, 0], labels, self.num_classes)
        out["mean_class_acc"] = per_class[seen > 0].mean()
        out["num_videos"] = torch.tensor(float(len(labels)))
        return out


def per_class_accuracy(pred: torch.Tensor, labels: torch.Tensor, num_classes: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(top-1 accuracy per class (K,), videos per class (K,)) of predicted classes `pred` (V,)
    against `labels` (V,); a class without videos has accuracy 0 and support 0."""
    correct = (pred == labels).float()
    hits = torch.zeros(num_classes, device=labels.device).index_add_(0, labels, correct)
    seen = torch.bincount(labels, minlength=num_classes)
    return hits / seen.clamp_min(1), seen


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) counts: row = true class, column = predicted class."""
    flat = labels.long() * num_classes + pred.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes,
                                                                             num_classes)


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
