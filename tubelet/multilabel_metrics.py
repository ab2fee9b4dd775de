"""Multi-label metrics over videos: mean average precision and top-k recall.

Each video is scored once, by the mean of its views' sigmoid scores (`VideoMean`, as
classification averages the softmax), states synced across ranks by torchmetrics, so the
numbers do not depend on the rank count.

Average precision of one class is scikit-learn's `average_precision_score`, computed the same
way in float64 (sklearn.metrics `_binary_clf_curve` + `precision_recall_curve`): the scores sorted
in decreasing order (a stable sort), one threshold per distinct score, and
`AP = sum_n (R_n - R_{n-1}) P_n` over the thresholds, with no interpolation. tests/ compare it
with scikit-learn for equality. A class with no positive video has no defined AP (scikit-learn
warns and returns 0); it is excluded from the mean, as Charades' official evaluation does, and
`map_classes` says how many classes the mean is over.
"""
from __future__ import annotations

import numpy as np
import torch

from tubelet.metrics import ClassScoreMean


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """AP of one class: (V,) scores, (V,) 0/1 labels with at least one 1; sklearn's rounding."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    scores, positives = scores[order], positives[order].astype(np.float64)
    distinct = np.where(np.diff(scores))[0]
    thresholds = np.r_[distinct, positives.size - 1]
    tps = np.cumsum(positives)[thresholds]
    fps = 1 + thresholds - tps
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    precision = np.hstack((precision[::-1], 1))
    recall = np.hstack((recall[::-1], 0))
    return float(-np.sum(np.diff(recall) * precision[:-1]))


def per_class_ap(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(V, K) scores, (V, K) 0/1 targets -> (K,) float64 AP, NaN where a class has no positive."""
    s = scores.double().cpu().numpy()
    t = targets.cpu().numpy() > 0.5
    out = np.full(s.shape[1], np.nan)
    for k in range(s.shape[1]):
        if t[:, k].any():
            out[k] = average_precision(s[:, k], t[:, k])
    return torch.from_numpy(out)


def top_k_recall(scores: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over videos with a positive of |top-k classes & positives| / |positives|."""
    positives = targets > 0.5
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices  # (V, k)
    hits = positives.gather(1, top).sum(dim=1).double()
    count = positives.sum(dim=1).double()
    has = count > 0
    return (hits[has] / count[has]).mean()


class MultiLabelMetrics(ClassScoreMean):
    """`update(logits (B, K), targets (B, K) multi-hot, video_id (B,))`; `compute()` ->
    {map, map_classes, recall<k>...} over videos (the module docstring)."""

    def update(self, logits: torch.Tensor, target: torch.Tensor,
               video_id: torch.Tensor | None = None) -> None:
        super().update(logits.float().sigmoid(), target.float(), video_id)

    def compute(self) -> dict[str, torch.Tensor]:
        scores, targets = self.video_means()
        ap = per_class_ap(scores, targets)
        scored = ~torch.isnan(ap)
        # numpy's mean, as scikit-learn's macro average (np.average) rounds it
        mean = float(np.mean(ap[scored].numpy())) if scored.any() else float("nan")
        out = {"map": torch.tensor(mean, dtype=torch.float64),
               "map_classes": torch.tensor(float(scored.sum()))}
        for k in self.top_k:
            out[f"recall{k}"] = top_k_recall(scores, targets, k)
        return out
