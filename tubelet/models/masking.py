"""Masks for masked autoencoding, and the patchify and gather that turn pixels into per-token
inputs and targets.

A mask is a bool tensor (B, N) over the patch tokens, True where a token is hidden from the
encoder. Every sample hides the same number of tokens, so the visible tokens of a batch stack into
one (B, N_visible, D) tensor. The counts are the references' own, which differ:

- `random` (MAE, facebookresearch/mae `models_mae.py` `random_masking`): keep
  `int(L * (1 - mask_ratio))` tokens, hide the rest (196 tokens at 0.9: keep 19, hide 177);
- `tube` (VideoMAE, MCG-NJU/VideoMAE `masking_generator.py` `TubeMaskingGenerator`): hide
  `int(mask_ratio * num_patches_per_frame)` positions of one temporal slot and repeat them over
  every slot (8x7x7 at 0.75: 36 per slot, 288 in all).

Masks are drawn from the global torch RNG on the model's device: a checkpoint restores that RNG,
so a resumed run draws the same masks.
"""
from __future__ import annotations

import torch


def _check_ratio(mask_ratio: float) -> None:
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")


def num_kept_random(num_tokens: int, mask_ratio: float) -> int:
    """MAE's `len_keep = int(L * (1 - mask_ratio))`, the same float expression (so the same
    rounding: 0.9 of 196 keeps int(19.599...) = 19)."""
    _check_ratio(mask_ratio)
    return int(num_tokens * (1 - mask_ratio))


def num_hidden_tube(num_positions: int, mask_ratio: float) -> int:
    """VideoMAE's `num_masks_per_frame = int(mask_ratio * num_patches_per_frame)`: hidden
    positions per temporal slot (the tube mask hides them in every slot)."""
    _check_ratio(mask_ratio)
    return int(mask_ratio * num_positions)


def num_hidden(mask_type: str, grid_size: tuple[int, ...], mask_ratio: float) -> int:
    """Tokens a `mask_type` mask hides per sample on a (T', H', W') or (H', W') token grid."""
    num_tokens = 1
    for n in grid_size:
        num_tokens *= n
    if mask_type == "tube":
        num_t, rows, cols = grid_size
        return num_t * num_hidden_tube(rows * cols, mask_ratio)
    assert mask_type == "random", mask_type
    return num_tokens - num_kept_random(num_tokens, mask_ratio)


def _mask_from_noise(noise: torch.Tensor, num_keep: int) -> torch.Tensor:
    """(B, M) uniform noise -> (B, M) bool: the `num_keep` smallest draws stay visible, the rest
    are hidden (MAE's `ids_shuffle = torch.argsort(noise, dim=1)`, "small is keep, large is
    remove": a uniform random subset of fixed size per row, and from the same noise the same
    mask as MAE's `random_masking`)."""
    order = noise.argsort(dim=1)
    mask = torch.ones_like(noise, dtype=torch.bool)
    return mask.scatter_(1, order[:, :num_keep], False)


def random_mask(batch_size: int, num_tokens: int, *, mask_ratio: float,
                device: torch.device | str | None = None) -> torch.Tensor:
    """MAE's per-token random mask: (B, N) bool, `N - int(N * (1 - mask_ratio))` hidden."""
    noise = torch.rand(batch_size, num_tokens, device=device)  # as MAE draws it
    return _mask_from_noise(noise, num_kept_random(num_tokens, mask_ratio))


def tube_mask(batch_size: int, grid_size: tuple[int, int, int], *, mask_ratio: float,
              device: torch.device | str | None = None) -> torch.Tensor:
    """VideoMAE's tube mask: one spatial mask shared by every temporal slot, (B, T'*H'*W') bool
    in the patch embedding's (t, h, w) token order, `T' * int(mask_ratio * H'*W')` hidden. Hiding
    whole tubes stops the model from copying a patch from its neighbour in time."""
    num_t, rows, cols = grid_size
    num_keep = rows * cols - num_hidden_tube(rows * cols, mask_ratio)
    spatial = _mask_from_noise(torch.rand(batch_size, rows * cols, device=device), num_keep)
    return spatial.repeat(1, num_t)  # (B, H'W') -> (B, T'H'W'), time-major like the tokens


def tubelet_view(x: torch.Tensor, *, patch_size: int, tubelet_size: int = 1) -> torch.Tensor:
    """Pixels as a grid of tubelets, without a copy: (B,C,T,H,W) or (B,C,H,W) ->
    (B, T', H', W', C, t, p, p), a view of `x`.

    Indexing its grid with a (B, T', H', W') mask gathers tokens in one pass, in the patch
    conv's weight layout (C, t, p, p), whose innermost run is a row of p contiguous pixels. A
    (t, p, p, C) layout would read with the channel innermost, a stride of T*H*W per element.
    """
    if x.ndim == 4:
        x = x.unsqueeze(2)  # an image is a one-frame video
    B, C, T, H, W = x.shape
    t, p = tubelet_size, patch_size
    if T % t or H % p or W % p:
        raise ValueError(f"input {tuple(x.shape)} is not divisible into {t}x{p}x{p} tubelets")
    x = x.reshape(B, C, T // t, t, H // p, p, W // p, p)
    return x.permute(0, 2, 4, 6, 1, 3, 5, 7)  # (B, T', H', W', C, t, p, p)


def gather_tubelets(x: torch.Tensor, mask: torch.Tensor, *, patch_size: int,
                    tubelet_size: int = 1) -> torch.Tensor:
    """The tubelets of the tokens where `mask` is True, each as (C, t, p, p), the conv weight's
    order: (B,C,[T],H,W) and a (B, N) mask with the same count per row -> (B, M, C, t*p*p)."""
    grid = tubelet_view(x, patch_size=patch_size, tubelet_size=tubelet_size)  # (B,T',H',W',C,t,p,p)
    B, C, t, p = grid.shape[0], grid.shape[4], grid.shape[5], grid.shape[6]
    picked = grid[mask.reshape(grid.shape[:4])]  # (B*M, C, t, p, p), one strided gather
    return picked.view(B, picked.shape[0] // B, C, t * p * p)


def patchify(x: torch.Tensor, *, patch_size: int, tubelet_size: int = 1) -> torch.Tensor:
    """Pixels -> per-token pixel groups, (B,C,T,H,W) or (B,C,H,W) -> (B, N, t*p*p, C).

    Tokens come in the patch embedding's order (t, h, w); inside a token, pixels are ordered
    (t, p, p) with the channel last, the layout of MAE's `patchify` and VideoMAE's
    `rearrange(... -> b (t h w) (p0 p1 p2) c)`, which the decoder heads of their checkpoints
    predict. `tubelet_size` is the model's, not a constant.
    """
    grid = tubelet_view(x, patch_size=patch_size, tubelet_size=tubelet_size)  # (B,T',H',W',C,t,p,p)
    B, num_t, rows, cols, C, t, p, _ = grid.shape
    grid = grid.permute(0, 1, 2, 3, 5, 6, 7, 4)  # (B, T', H', W', t, p, p, C)
    return grid.reshape(B, num_t * rows * cols, t * p * p, C)
