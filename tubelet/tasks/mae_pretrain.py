"""Masked-autoencoder pretraining: mean squared error on the hidden patches only.

The normalised-pixel target ("norm_pix_loss") is defined differently by the two references, and
`norm_pix_loss` names whose definition to follow:

- `mae` (facebookresearch/mae `models_mae.py` `forward_loss`): each token's pixels and channels
  together, `(target - mean) / (var + 1.e-6)**.5`, on the input as given (MAE normalises the
  images with ImageNet's mean/std first and does not undo it);
- `videomae` (MCG-NJU/VideoMAE `engine_for_pretraining.py`): each token per channel, over its
  `(p0 p1 p2)` pixels, `(x - mean) / (var(unbiased=True).sqrt() + 1e-6)`, on pixels in [0, 1]:
  VideoMAE first undoes the data normalisation (`unnorm_videos = videos * std + mean`). The
  epsilon then acts at the pixel scale, not the normalised one: on low-contrast clips the two
  definitions differ by ~1e-4 of the loss;
- `none`: the pixels themselves (after undoing `pixel_mean`/`pixel_std` if given, as VideoMAE's
  `normlize_target=False` branch does).
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from tubelet.models.masking import gather_tubelets, tubelet_view
from tubelet.registry import TASKS, ConfigError
from tubelet.tasks.base import Task
from tubelet.tasks.mae_vis import picture, reconstruct

log = logging.getLogger("tubelet")

NORM_PIX = ("mae", "videomae", "none")
EPS = 1.0e-6  # both references'


def unwrap(model: nn.Module) -> nn.Module:
    """The model under DDP (`.module`) or torch.compile (`._orig_mod`)."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def mae_targets(video: torch.Tensor, *, patch_size: int, tubelet_size: int, norm_pix: str,
                mask: torch.Tensor | None = None, pixel_mean: torch.Tensor | None = None,
                pixel_std: torch.Tensor | None = None) -> torch.Tensor:
    """Pixels -> (B, N, t*p*p*C) regression targets; with a (B, N) `mask`, those of the hidden
    tokens only, (B, N_masked, t*p*p*C), so the visible tokens are never normalised.

    `norm_pix`: "mae", "videomae" or "none" (the module docstring). `pixel_mean`/`pixel_std`,
    (C,) tensors: the data normalisation to undo first, `x * std + mean`, as VideoMAE does.
    """
    assert norm_pix in NORM_PIX, norm_pix
    video = video.float()
    if mask is None:
        grid = tubelet_view(video, patch_size=patch_size, tubelet_size=tubelet_size)
        mask = torch.ones(grid.shape[:4], dtype=torch.bool, device=video.device).flatten(1)
    # gathered as (C, t*p*p), so each normalisation group is contiguous
    patches = gather_tubelets(video, mask, patch_size=patch_size,
                              tubelet_size=tubelet_size)  # (B, M, C, tpp), a copy
    if pixel_std is not None:  # VideoMAE's `videos * std + mean`, on the gathered tokens only
        if pixel_std.numel() != patches.shape[2]:
            raise ValueError(f"pixel_mean/pixel_std have {pixel_std.numel()} values for "
                             f"{patches.shape[2]} channels")
        std, mean = pixel_std.to(patches.device), pixel_mean.to(patches.device)
        # in place on the gathered copy; mul then add, as VideoMAE rounds (no fused addcmul)
        patches = patches.mul_(std[:, None]).add_(mean[:, None])  # (C, 1) over (B, M, C, tpp)
    if norm_pix != "none":
        B, M, C, K = patches.shape
        per_channel = norm_pix == "videomae"
        groups = patches if per_channel else patches.view(B, M, 1, C * K)  # (B, M, G, n)
        centred = groups - groups.mean(dim=-1, keepdim=True)
        # torch.var's unbiased variance in two vectorised passes (mean, then the centred sum of
        # squares); torch.var's one-pass Welford loop took ~2.5x as long on a CPU
        sum_sq = torch.linalg.vector_norm(centred, dim=-1, keepdim=True).square_()  # (B, M, G, 1)
        var = sum_sq / (groups.shape[-1] - 1)
        # VideoMAE: std + eps; MAE: sqrt(var + eps)
        scale = var.sqrt_().add_(EPS) if per_channel else var.add_(EPS).sqrt_()
        patches = centred.div_(scale).view(B, M, C, K)
    return patches.transpose(-1, -2).flatten(2)  # (B, M, tpp, C) -> (B, M, P), the head's order


def _pixel_stats(mean: Sequence[float] | None, std: Sequence[float] | None
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if (mean is None) != (std is None):
        missing = "pixel_std" if std is None else "pixel_mean"
        raise ConfigError(f"{missing}: give pixel_mean and pixel_std together (the data's "
                          f"normalize mean/std, undone before the targets)")
    if mean is None:
        return None, None
    for key, values in (("pixel_mean", mean), ("pixel_std", std)):
        if not isinstance(values, (list, tuple)) or not all(
                isinstance(v, (int, float)) for v in values):
            raise ConfigError(f"{key}: expected a list of numbers, one per channel, got {values!r}")
    if len(mean) != len(std) or not len(mean):
        raise ConfigError(f"pixel_std: expected one value per channel like pixel_mean "
                          f"{list(mean)}, got {list(std)}")
    if any(s <= 0 for s in std):
        raise ConfigError(f"pixel_std: must be positive, got {list(std)}")
    return (torch.tensor(list(mean), dtype=torch.float32),
            torch.tensor(list(std), dtype=torch.float32))


@TASKS.register("mae_pretrain")
class MAEPretrainTask(Task):
    """Loss = MSE between predicted and true pixels of the hidden tokens. Eval reports the same
    loss on the validation set (`val/loss`; set `train.best_metric: val/loss, best_mode: min`)."""

    def __init__(self, *, norm_pix_loss: bool | str = True,
                 pixel_mean: Sequence[float] | None = None,
                 pixel_std: Sequence[float] | None = None, input_key: str = "video") -> None:
        """`norm_pix_loss`: "mae", "videomae" or "none" (whose normalised-pixel target, the
        module docstring); `true` picks the model's paper (VideoMAE for a video model, MAE for
        an image model), `false` is "none". `pixel_mean`/`pixel_std`: the mean/std of the
        data's `normalize` transform, undone before the targets are made, as VideoMAE does;
        "videomae" requires them."""
        super().__init__()
        if norm_pix_loss is True or norm_pix_loss is False:
            norm_pix_loss = {True: "auto", False: "none"}[norm_pix_loss]
        elif norm_pix_loss not in NORM_PIX:
            raise ConfigError(f"norm_pix_loss: expected one of {', '.join(NORM_PIX)} (or "
                              f"true/false), got {norm_pix_loss!r}")
        mean, std = _pixel_stats(pixel_mean, pixel_std)
        if norm_pix_loss == "videomae" and std is None:
            raise ConfigError("pixel_mean: norm_pix_loss 'videomae' normalises pixels in [0, 1] "
                              "as VideoMAE does; give the data's normalize mean/std as "
                              "pixel_mean/pixel_std ([0, 0, 0]/[1, 1, 1] for unnormalised input)")
        self.norm_pix_loss, self.input_key = norm_pix_loss, input_key
        # not persistent: recipe values, not state, so checkpoints stay as they were
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)
        self.val_loss = MeanMetric()
        self._eval_batches = 0
        self._warned = False
        self._picture: tuple | None = None  # the first eval clip, its prediction and mask

    def target_norm(self, model: nn.Module) -> str:
        """The normalisation in use for `model`: "mae", "videomae" or "none"."""
        if self.norm_pix_loss != "auto":
            return self.norm_pix_loss
        norm = "videomae" if model.encoder.patch_embed.is_video else "mae"
        if norm == "videomae" and self.pixel_std is None and not self._warned:
            self._warned = True  # say it once, not every step
            log.warning("task.norm_pix_loss: true on a video model is VideoMAE's target, which "
                        "VideoMAE computes on unnormalised pixels; without task.pixel_mean/"
                        "pixel_std the input is taken as the pixels")
        return norm

    def _loss(self, model: nn.Module, batch: dict[str, Any], *, keep: bool = False) -> torch.Tensor:
        video = batch[self.input_key]
        out = model(video)  # {"pred": (B, N_masked, P), "mask": (B, N)}
        inner = unwrap(model)
        if keep:  # one clip for `eval_images`, to the CPU once per evaluation
            self._picture = (video[:1].detach().float().cpu(), out["pred"][:1].detach().float().cpu(),
                             out["mask"][:1].cpu(), inner.patch_size, inner.tubelet_size,
                             self.target_norm(inner))
        target = mae_targets(video, patch_size=inner.patch_size, tubelet_size=inner.tubelet_size,
                             norm_pix=self.target_norm(inner), mask=out["mask"],
                             pixel_mean=self.pixel_mean, pixel_std=self.pixel_std)
        # the mean of the squared errors in one kernel and one backward kernel, not sub, pow, mean
        return F.mse_loss(out["pred"].float(), target)  # target: (B, N_masked, P)

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
            loss = self._loss(model, batch, keep=self._eval_batches == 0)
        self._eval_batches += 1
        self.val_loss.update(loss, weight=video.shape[0])

    def compute_metrics(self) -> dict[str, float]:
        return {"loss": float(self.val_loss.compute())}

    def reset_metrics(self) -> None:
        self.val_loss.reset()
        self._eval_batches = 0
        self._picture = None

    def eval_images(self) -> dict[str, Any]:
        """The first clip of the last evaluation: original, masked input and reconstruction,
        a column per frame (tasks/mae_vis.py)."""
        if self._picture is None:
            return {}
        video, pred, mask, patch_size, tubelet_size, norm = self._picture
        stats = {} if self.pixel_std is None else {"pixel_mean": self.pixel_mean.cpu(),
                                                   "pixel_std": self.pixel_std.cpu()}
        rows = reconstruct(video, pred, mask, patch_size=patch_size, tubelet_size=tubelet_size,
                           norm_pix=norm, **stats)
        return {"val/reconstruction": picture([r[0] for r in rows], pixels=bool(stats))}
