"""Contrastive pretraining on two views of each clip: SimCLR's NT-Xent and MoCo v3's InfoNCE.

The batch holds two views of every video (`video`, `video2`: the `two_views` dataset). The
model (`contrastive`, models/contrastive.py) returns embeddings; negatives come from every rank
(tasks/gather.py), so the loss at W ranks x N clips is the loss of one process with W*N clips.

- `simclr` (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
  Representations", NT-Xent): each of the 2N' embeddings (N' = the global batch) has its other
  view as the positive and the other 2N'-2 embeddings as negatives; the loss is the mean over all
  2N' anchors, at temperature `temperature`. Gradients flow into the gathered embeddings.
- `moco` (Chen, Xie, He 2021, "An Empirical Study of Training Self-Supervised Vision
  Transformers", MoCo v3 `moco/builder.py` `contrastive_loss`): queries from the online
  encoder (+ predictor), keys from the momentum encoder over all ranks,
  `CE(q k^T / T, own key) * 2T`, symmetric over the two views. With the model's `queue_size`
  (MoCo v2, Chen et al. 2020 "Improved Baselines with Momentum Contrastive Learning") the queued
  keys are extra negatives, and both views' gathered keys are queued after each step, the same
  on every rank. After each optimizer step the momentum encoder moves with
  `m = 1 - (1 - m0) (1 + cos(pi k / K)) / 2` at step k of K (MoCo v3 `adjust_moco_momentum`,
  per iteration), or a constant m0 (`momentum_schedule: constant`, MoCo v2).

`reversed_negatives: true` (both tasks) adds each clip played backwards as one more video of the
batch: its two views, reversed, are a positive pair, and every other clip, the clip's own forward
views among them, is a negative. A clip and its reversal share every static cue (background,
shapes, colours), so only the order of frames tells them apart, and the encoder has to keep
motion, which plain instance discrimination can solve without ("static bias"). The arrow of time
as a training signal: Jenni, Meishvili, Favaro 2020, "Video Representation Learning by
Recognizing Temporal Transformations"; reversed clips as negatives: Jenni & Jin 2021,
"Time-Equivariant Contrastive Video Representation Learning". It doubles the encoder's work.

Evaluation reports `val/loss` with this rank's batch as the only negatives (no collective may
run inside an eval batch: ranks hold different numbers of them) and no queue: a comparison
between evaluations, not the training loss. Features are judged by a linear probe
(configs/debug/contrastive_linprobe_tiny.yaml).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from tubelet import distributed as dist
from tubelet.registry import TASKS, ConfigError
from tubelet.tasks.base import Task
from tubelet.tasks.gather import gather_no_grad, gather_with_grad
from tubelet.tasks.mae_pretrain import unwrap

MOMENTUM_SCHEDULES = ("cosine", "constant")


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, *, temperature: float,
            gather: bool = True) -> torch.Tensor:
    """SimCLR's loss for this rank's anchors: (N, D) x 2 views -> scalar, the mean over the 2N
    local anchors, each against all 2N' embeddings of the global batch but itself."""
    z1, z2 = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    all1, all2 = (gather_with_grad(z1), gather_with_grad(z2)) if gather else (z1, z2)
    n = z1.shape[0]
    own = torch.arange(n, device=z1.device) + n * (dist.get_rank() if gather else 0)
    loss = 0.0
    for q, other, same in ((z1, all2, all1), (z2, all1, all2)):
        cross = q @ other.T / temperature  # (N, N'): the positive sits at `own`
        within = (q @ same.T / temperature).index_put((torch.arange(n, device=q.device), own),
                                                      torch.tensor(float("-inf"), device=q.device))
        loss = loss + F.cross_entropy(torch.cat([cross, within], dim=1), own)
    return loss / 2


def moco_infonce(q: torch.Tensor, k: torch.Tensor, *, temperature: float,
                 queue: torch.Tensor | None = None, rank: int = 0) -> torch.Tensor:
    """MoCo v3's `contrastive_loss`: q (N, D) against all keys k (N', D) of the global batch
    (this rank's own at rows rank*N ...) [and the queue (Q, D)], times 2T as MoCo v3."""
    q, k = F.normalize(q.float(), dim=1), F.normalize(k.float(), dim=1)
    logits = q @ k.T
    if queue is not None:  # a copy: the queue changes in place before the backward reads it
        logits = torch.cat([logits, q @ queue.float().clone().T], dim=1)
    n = q.shape[0]
    labels = torch.arange(n, device=q.device) + n * rank
    return F.cross_entropy(logits / temperature, labels) * (2 * temperature)


def cosine_momentum(step: int, total_steps: int, base: float) -> float:
    """MoCo v3's momentum at step `step` of `total_steps`: from `base` up to 1."""
    return 1.0 - 0.5 * (1.0 + math.cos(math.pi * step / max(total_steps, 1))) * (1.0 - base)


class _TwoViewTask(Task):
    def __init__(self, *, temperature: float, view_keys: tuple[str, str],
                 reversed_negatives: bool) -> None:
        super().__init__()
        if not temperature > 0:
            raise ConfigError(f"temperature: must be > 0, got {temperature}")
        if len(view_keys) != 2:
            raise ConfigError(f"view_keys: expected two batch keys, got {view_keys!r}")
        if not isinstance(reversed_negatives, bool):
            raise ConfigError(f"reversed_negatives: expected true or false, "
                              f"got {reversed_negatives!r}")
        self.temperature, self.view_keys = temperature, tuple(view_keys)
        self.reversed_negatives = reversed_negatives
        self.val_loss = MeanMetric()

    def views(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The two views, (N, C, T, H, W) each; with `reversed_negatives` (2N, C, T, H, W):
        the N clips, then the same N played backwards (the module docstring)."""
        missing = [k for k in self.view_keys if k not in batch]
        if missing:
            raise ConfigError(f"task.view_keys: the batch has no {missing[0]!r} (keys: "
                              f"{sorted(batch)}); use a two_views dataset (docs/datasets.md)")
        v1, v2 = batch[self.view_keys[0]], batch[self.view_keys[1]]
        if not self.reversed_negatives:
            return v1, v2
        if v1.ndim != 5 or v1.shape[2] < 2:  # one frame reads the same backwards
            raise ConfigError(f"task.reversed_negatives: needs video clips (N, C, T, H, W) "
                              f"of 2 or more frames, got a batch of shape {tuple(v1.shape)}")
        return torch.cat([v1, v1.flip(2)]), torch.cat([v2, v2.flip(2)])  # (2N,C,T,H,W)

    def compute_metrics(self) -> dict[str, float]:
        return {"loss": float(self.val_loss.compute())}

    def reset_metrics(self) -> None:
        self.val_loss.reset()


@TASKS.register("simclr")
class SimCLRTask(_TwoViewTask):
    """NT-Xent over two views with negatives from all ranks (the module docstring).
    `temperature`: SimCLR's tau (0.1 at large batches, 0.5 at small ones in its paper).
    `reversed_negatives`: add each clip played backwards as another video."""

    def __init__(self, *, temperature: float = 0.1,
                 view_keys: tuple[str, str] = ("video", "video2"),
                 reversed_negatives: bool = False) -> None:
        super().__init__(temperature=temperature, view_keys=view_keys,
                         reversed_negatives=reversed_negatives)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        v1, v2 = self.views(batch)
        return nt_xent(model(v1), model(v2), temperature=self.temperature)

    @torch.no_grad()
    def eval_step(self, model: nn.Module, batch: dict[str, Any]) -> None:
        v1, v2 = self.views(batch)
        loss = nt_xent(model(v1), model(v2), temperature=self.temperature, gather=False)
        self.val_loss.update(loss, weight=v1.shape[0])


@TASKS.register("moco")
class MoCoTask(_TwoViewTask):
    """MoCo v3 (and v2 with the model's queue): the module docstring. `temperature`: MoCo v3's
    0.2 for ViT (0.1 for ResNet; MoCo v2: 0.2). `momentum`: the momentum at step 0 (MoCo v3:
    0.99 for ViT-B, 0.996 for ResNet-50 at batch 4096), raised to 1 by `momentum_schedule`
    cosine; constant keeps it (MoCo v2: 0.999). The model needs `momentum_encoder: true`.
    `reversed_negatives`: add each clip played backwards as another video (its keys are
    queued too; measured to help SimCLR, not MoCo: docs/benchmarks.md)."""

    def __init__(self, *, temperature: float = 0.2, momentum: float = 0.99,
                 momentum_schedule: str = "cosine",
                 view_keys: tuple[str, str] = ("video", "video2"),
                 reversed_negatives: bool = False) -> None:
        super().__init__(temperature=temperature, view_keys=view_keys,
                         reversed_negatives=reversed_negatives)
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"momentum: must be in [0, 1), got {momentum}")
        if momentum_schedule not in MOMENTUM_SCHEDULES:
            raise ConfigError(f"momentum_schedule: expected one of {list(MOMENTUM_SCHEDULES)}, "
                              f"got {momentum_schedule!r}")
        self.momentum, self.momentum_schedule = momentum, momentum_schedule

    def _inner(self, model: nn.Module) -> nn.Module:
        inner = unwrap(model)
        if getattr(inner, "momentum", None) is None:
            raise ConfigError("task: moco needs a model with a momentum encoder (model.type: "
                              "contrastive, momentum_encoder: true)")
        return inner

    def _loss(self, model: nn.Module, v1: torch.Tensor, v2: torch.Tensor, *,
              train: bool) -> torch.Tensor:
        inner = self._inner(model)
        q1, q2 = model(v1), model(v2)
        k1, k2 = inner.momentum_forward(v1), inner.momentum_forward(v2)
        if train:
            k1, k2 = gather_no_grad(k1), gather_no_grad(k2)
        queue = getattr(inner, "queue", None) if train else None
        rank = dist.get_rank() if train else 0
        loss = (moco_infonce(q1, k2, temperature=self.temperature, queue=queue, rank=rank)
                + moco_infonce(q2, k1, temperature=self.temperature, queue=queue, rank=rank))
        if queue is not None:
            inner.enqueue(F.normalize(torch.cat([k1, k2]).float(), dim=1))
        return loss

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return self._loss(model, *self.views(batch), train=True)

    def after_step(self, model: nn.Module, *, step: int, total_steps: int) -> None:
        """Move the momentum encoder towards the online one: MoCo v3 does this before the
        forward of iteration `step`, which is right after optimizer step `step` - 1."""
        m = (cosine_momentum(step, total_steps, self.momentum)
             if self.momentum_schedule == "cosine" else self.momentum)
        self._inner(model).momentum_update(m)

    @torch.no_grad()
    def eval_step(self, model: nn.Module, batch: dict[str, Any]) -> None:
        v1, v2 = self.views(batch)
        self.val_loss.update(self._loss(model, v1, v2, train=False), weight=v1.shape[0])
