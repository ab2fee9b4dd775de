"""Masked-autoencoder pretraining: mean squared error on the hidden patches only."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from tubelet.models.masking import gather_tubelets, tubelet_view
from tubelet.registry import TASKS
from tubelet.tasks.base import Task


def unwrap(model: nn.Module) -> nn.Module:
    """The model under DDP (`.module`) or torch.compile (`._orig_mod`)."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def mae_targets(video: torch.Tensor, *, patch_size: int, tubelet_size: int,
                norm_pix_loss: bool, per_channel: bool, mask: torch.Tensor | None = None
                ) -> torch.Tensor:
    """Pixels -> (B, N, t*p*p*C) regression targets; with a (B, N) `mask`, those of the hidden
    tokens only, (B, N_masked, t*p*p*C), so the visible tenth is never normalised.

    With `norm_pix_loss` each token is normalised to zero mean and unit variance: `per_channel`
    over the tubelet (VideoMAE, for video), or over all its pixels and channels (MAE, images). Either
    normalisation cancels the dataset's mean/std normalisation, so the targets need no undoing.
    """
    video = video.float()
    if mask is None:
        grid = tubelet_view(video, patch_size=patch_size, tubelet_size=tubelet_size)
        mask = torch.ones(grid.shape[:4], dtype=torch.bool, device=video.device).flatten(1)
    # gathered as (C, t*p*p), so each normalisation group is contiguous
    patches = gather_tubelets(video, mask, patch_size=patch_size,
                              tubelet_size=tubelet_size)  # (B, M, C, tpp), a copy
    if norm_pix_loss:
        B, M, C, K = patches.shape
        groups = patches if per_channel else patches.view(B, M, 1, C * K)  # (B, M, G, n)
        centred = groups - groups.mean(dim=-1, keepdim=True)
        # torch.var's unbiased variance in two vectorised passes (mean, then the centred sum of
        # squares); torch.var's one-pass Welford loop took ~2.5x as long on a CPU
        sum_sq = torch.linalg.vector_norm(centred, dim=-1, keepdim=True).square_()  # (B, M, G, 1)
        var = sum_sq / (groups.shape[-1] - 1)
        patches = centred.div_((var + 1.0e-6).sqrt_()).view(B, M, C, K)
    return patches.transpose(-1, -2).flatten(2)  # (B, M, tpp, C) -> (B, M, P), the head's order


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
                             norm_pix_loss=self.norm_pix_loss, mask=out["mask"],
                             per_channel=inner.encoder.patch_embed.is_video)  # (B, N_masked, P)
        # the mean of the squared errors in one kernel and one backward kernel, not sub, pow, mean
        return F.mse_loss(out["pred"].float(), target)

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
