"""Masked-autoencoder pretraining: mean squared error on the hidden patches only."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics import MeanMetric

from tubelet.models.masking import patchify
from tubelet.registry import TASKS
from tubelet.tasks.base import Task


def unwrap(model: nn.Module) -> nn.Module:
    """The model under DDP (`.module`) or torch.compile (`._orig_mod`)."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def mae_targets(video: torch.Tensor, *, patch_size: int, tubelet_size: int,
                norm_pix_loss: bool, per_channel: bool) -> torch.Tensor:
    """Pixels -> (B, N, t*p*p*C) regression targets.

    With `norm_pix_loss` each token is normalised to zero mean and unit variance: `per_channel`
    over the tubelet (VideoMAE, for video), or over all its pixels and channels (MAE, images). Either
    normalisation cancels the dataset's mean/std normalisation, so the targets need no undoing.
    """
    patches = patchify(video.float(), patch_size=patch_size, tubelet_size=tubelet_size)  # (B,N,tpp,C)
    if norm_pix_loss:
        dims = (-2,) if per_channel else (-2, -1)
        mean = patches.mean(dim=dims, keepdim=True)
        var = patches.var(dim=dims, keepdim=True, unbiased=True)
        patches = (patches - mean) / (var + 1.0e-6).sqrt()
    return patches.flatten(2)


@TASKS.register("mae_pretrain")
class MAEPretrainTask(Task):
    """Loss = MSE between predicted and true pixels of the hidden tokens. Eval reports the same
    loss on the validation set (`val/loss`; set `train.best_metric: val/loss, best_mode: min`)."""

    def __init__(self, *, norm_pix_loss: bool = True, input_key: str = "video") -> None:
        super().__init__()
        self.norm_pix_loss, self.input_key = norm_pix_loss, input_key
        self.val_loss = MeanMetric()
        self._eval_batches = 0

    def _loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        video = batch[self.input_key]
        out = model(video)  # {"pred": (B, N_masked, P), "mask": (B, N)}
        inner = unwrap(model)
        target = mae_targets(video, patch_size=inner.patch_size, tubelet_size=inner.tubelet_size,
                             norm_pix_loss=self.norm_pix_loss,
                             per_channel=inner.encoder.patch_embed.is_video)  # (B, N, P)
        mask = out["mask"]
        target = target[mask].reshape(video.shape[0], -1, target.shape[-1])  # (B, N_masked, P)
        return torch.mean((out["pred"].float() - target) ** 2)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return self._loss(model, batch)

    @torch.no_grad()
    def eval_step(self, model: nn.Module, batch: dict[str, Any]) -> None:
        video = batch[self.input_key]
        # eval masks come from a forked RNG seeded by the batch number: the same masks every
        # evaluation, and the training RNG stream (checkpointed for resume) is left untouched
        devices = [video.device] if video.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self._eval_batches)
            loss = self._loss(model, batch)
        self._eval_batches += 1
        self.val_loss.update(loss, weight=video.shape[0])

    def compute_metrics(self) -> dict[str, float]:
        return {"loss": float(self.val_loss.compute())}

    def reset_metrics(self) -> None:
        self.val_loss.reset()
        self._eval_batches = 0
