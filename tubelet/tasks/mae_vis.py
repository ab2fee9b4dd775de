"""MAE/VideoMAE reconstructions as pictures: the original clip, the masked input the encoder
saw, and the reconstruction, frame by frame.

The decoder predicts the hidden tokens in the task's target space (`norm_pix_loss`), so its
output is taken back to pixels the way VideoMAE's `run_videomae_vis.py` does: per token (and
per channel for "videomae"), `prediction * std + mean` of the original token's pixels. As there,
the visible tokens of the reconstruction are the original's; the hidden ones are predicted.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from tubelet.models.masking import tubelet_view

EPS = 1.0e-6  # the targets' (tasks/mae_pretrain.py)
ROWS = ("original", "masked input", "reconstruction")


def _to_video(grid: torch.Tensor) -> torch.Tensor:
    """The inverse of `tubelet_view`: (B, T', H', W', C, t, p, p) -> (B, C, T, H, W)."""
    B, nt, nh, nw, C, t, p, _ = grid.shape
    return grid.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(B, C, nt * t, nh * p, nw * p)


@torch.no_grad()
def reconstruct(video: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor, *, patch_size: int,
                tubelet_size: int, norm_pix: str, pixel_mean: torch.Tensor | None = None,
                pixel_std: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(original, masked, reconstruction), each (B, C, T, H, W) float (the masked input NaN
    where hidden), in the targets' base
    space: pixels when `pixel_mean`/`pixel_std` (the data normalisation the task undoes) are
    given, the model's input otherwise. `video` (B,C,[T],H,W) is the model input, `pred`
    (B, N_masked, t*p*p*C) the decoder output for the hidden tokens of the (B, N) `mask`."""
    if video.ndim == 4:
        video = video.unsqueeze(2)
    video = video.float()
    if pixel_std is not None:  # as the task does: x * std + mean, per channel
        shape = (1, -1, 1, 1, 1)
        video = video * pixel_std.view(shape).to(video) + pixel_mean.view(shape).to(video)
    grid = tubelet_view(video, patch_size=patch_size, tubelet_size=tubelet_size).clone()
    B, C, t, p = grid.shape[0], grid.shape[4], grid.shape[5], grid.shape[6]
    hidden = mask.reshape(grid.shape[:4])
    tokens = grid[hidden].reshape(-1, C, t * p * p)  # (B*M, C, tpp) of the original
    out = pred.float().reshape(-1, t * p * p, C).transpose(1, 2)  # the head's (tpp, C) order
    if norm_pix == "videomae":  # per token and channel: std (unbiased) + eps
        mean, std = tokens.mean(-1, keepdim=True), tokens.std(-1, keepdim=True)
        out = out * (std + EPS) + mean
    elif norm_pix == "mae":  # per token over its channels and pixels: sqrt(var + eps)
        flat = tokens.reshape(tokens.shape[0], -1)
        mean, var = flat.mean(-1), flat.var(-1)
        out = out * (var + EPS).sqrt()[:, None, None] + mean[:, None, None]
    else:
        assert norm_pix == "none", norm_pix
    recon = grid.clone()
    recon[hidden] = out.reshape(-1, C, t, p, p).to(recon.dtype)
    masked = grid.clone()
    masked[hidden] = float("nan")  # no value: shown black whatever the normalisation (to_pixels)
    return _to_video(grid), _to_video(masked), _to_video(recon)


def to_pixels(video: torch.Tensor, *, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None) -> np.ndarray:
    """(C, T, H, W) float -> (T, H, W, 3) uint8; `mean`/`std` undo a data normalisation first.
    One-channel clips are shown grey."""
    video = video.detach().float().cpu()
    if std is not None:
        shape = (-1, 1, 1, 1)
        video = video * torch.tensor(std).view(shape) + torch.tensor(mean).view(shape)
    video = video.nan_to_num(0.0)  # hidden tokens of the masked input: black, as VideoMAE shows them
    if video.shape[0] == 1:
        video = video.expand(3, -1, -1, -1)
    return (video[:3].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()


def grid_image(rows: Sequence[np.ndarray], *, scale: int | None = None, gap: int = 2) -> np.ndarray:
    """(T, H, W, 3) uint8 rows -> one (H', W', 3) uint8 picture: a row per clip, a column per
    frame, white gaps; small frames enlarged (nearest) to at least 96 pixels high."""
    T, H, W, _ = rows[0].shape
    scale = scale or max(1, -(-96 // H))
    h, w = H * scale, W * scale
    out = np.full((len(rows) * (h + gap) - gap, T * (w + gap) - gap, 3), 255, np.uint8)
    for r, frames in enumerate(rows):
        big = frames.repeat(scale, axis=1).repeat(scale, axis=2)
        for i in range(T):
            out[r * (h + gap):r * (h + gap) + h, i * (w + gap):i * (w + gap) + w] = big[i]
    return out


def picture(rows: Sequence[torch.Tensor], *, pixels: bool) -> np.ndarray:
    """One uint8 picture of (original, masked, reconstruction) (C, T, H, W) clips. `pixels`:
    they are pixels in [0, 1]; otherwise (a normalised input whose statistics the task does not
    know) all three are shown on the original's range stretched to [0, 1]."""
    if not pixels:
        lo, hi = rows[0].min(), rows[0].max()
        rows = [(r - lo) / (hi - lo).clamp_min(1e-12) for r in rows]
    return grid_image([to_pixels(r) for r in rows])
