"""Masks for masked autoencoding, and the patchify that turns pixels into per-token targets.

A mask is a bool tensor (B, N) over the patch tokens, True where a token is hidden from the
encoder. Every sample hides exactly `round(N * mask_ratio)` tokens, so the visible tokens of a
batch stack into one (B, N_visible, D) tensor. Masks are drawn from the global torch RNG on the
model's device: a checkpoint restores that RNG, so a resumed run draws the same masks.
"""
from __future__ import annotations

import torch


def num_masked(num_tokens: int, mask_ratio: float) -> int:
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    return int(round(num_tokens * mask_ratio))


def _mask_from_noise(noise: torch.Tensor, num_hidden: int) -> torch.Tensor:
    """(B, M) uniform noise -> (B, M) bool: the `num_hidden` largest draws are hidden (MAE's
    argsort trick: a uniform random subset of fixed size per row)."""
    order = noise.argsort(dim=1, descending=True)
    mask = torch.zeros_like(noise, dtype=torch.bool)
    return mask.scatter_(1, order[:, :num_hidden], True)


def random_mask(batch_size: int, num_tokens: int, *, mask_ratio: float,
                device: torch.device | str | None = None) -> torch.Tensor:
    """MAE's per-token random mask: (B, N) bool."""
    noise = torch.rand(batch_size, num_tokens, device=device)
    return _mask_from_noise(noise, num_masked(num_tokens, mask_ratio))


def tube_mask(batch_size: int, grid_size: tuple[int, int, int], *, mask_ratio: float,
              device: torch.device | str | None = None) -> torch.Tensor:
    """VideoMAE's tube mask: one spatial mask shared by every temporal slot, (B, T'*H'*W') bool
    in the patch embedding's (t, h, w) token order. Hiding whole tubes stops the model from
    copying a patch from its neighbour in time."""
    num_t, rows, cols = grid_size
    spatial = _mask_from_noise(torch.rand(batch_size, rows * cols, device=device),
                               num_masked(rows * cols, mask_ratio))
    return spatial.repeat(1, num_t)  # (B, H'W') -> (B, T'H'W'), time-major like the tokens


def patchify(x: torch.Tensor, *, patch_size: int, tubelet_size: int = 1) -> torch.Tensor:
    """Pixels -> per-token pixel groups, (B,C,T,H,W) or (B,C,H,W) -> (B, N, t*p*p, C).

    Tokens come in the patch embedding's order (t, h, w); inside a token, pixels are ordered
    (t, p, p) with the channel last, the layout of MAE's `patchify` and VideoMAE's
    `rearrange(... -> b (t h w) (p0 p1 p2) c)`, which the decoder heads of their checkpoints
    predict. `tubelet_size` is the model's, not a constant.
    """
    if x.ndim == 4:
        x = x.unsqueeze(2)  # an image is a one-frame video
    B, C, T, H, W = x.shape
    t, p = tubelet_size, patch_size
    if T % t or H % p or W % p:
        raise ValueError(f"input {tuple(x.shape)} is not divisible into {t}x{p}x{p} tubelets")
    x = x.reshape(B, C, T // t, t, H // p, p, W // p, p)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # (B, T', H', W', t, p, p, C)
    return x.reshape(B, (T // t) * (H // p) * (W // p), t * p * p, C)
