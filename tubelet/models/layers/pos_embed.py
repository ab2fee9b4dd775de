"""Fixed sin-cos position tables and the resize of a learned position embedding.

Two conventions exist and checkpoints depend on each exactly:
- 1D, interleaved (sin at even channels, cos at odd), from "Attention is all you need": VideoMAE
  uses it over the flattened token index of a video and does not store it in its checkpoints.
- 2D, MAE's: half the channels encode the column, half the row, each as [sin..., cos...].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def sincos_1d(num_positions: int, dim: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """VideoMAE's `get_sinusoid_encoding_table`: (num_positions, dim), float32."""
    pos = torch.arange(num_positions, dtype=torch.float64, device=device)
    channel = torch.arange(dim, device=device)
    # channels 2i and 2i+1 share one frequency; the even one takes the sin, the odd one the cos
    inv_freq = 10000.0 ** (-(2 * (channel // 2)).to(torch.float64) / dim)
    angles = pos[:, None] * inv_freq[None, :]  # (N, D)
    return torch.where(channel % 2 == 0, angles.sin(), angles.cos()).float()


def _sincos_halves(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """MAE's 1D embedding of arbitrary positions: (M,) -> (M, dim) as [sin..., cos...]."""
    if dim % 2:
        raise ValueError(f"a sin-cos embedding needs an even dimension, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2.0)
    angles = pos.to(torch.float64)[:, None] / 10000.0 ** omega[None, :]  # (M, D/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(grid_size: tuple[int, int], dim: int, *,
              device: torch.device | str | None = None) -> torch.Tensor:
    """MAE's `get_2d_sincos_pos_embed` for a (rows, cols) grid: (rows*cols, dim), row-major, float32."""
    if dim % 4:
        raise ValueError(f"a 2D sin-cos embedding needs dim divisible by 4, got {dim}")
    rows, cols = grid_size
    row = torch.arange(rows, device=device).repeat_interleave(cols)  # (rows*cols,)
    col = torch.arange(cols, device=device).repeat(rows)
    # MAE's meshgrid puts the column first, so the first half of the channels encodes the column
    return torch.cat([_sincos_halves(col, dim // 2), _sincos_halves(row, dim // 2)], dim=1).float()


def sincos_3d(grid_size: tuple[int, int, int], dim: int, *,
              device: torch.device | str | None = None) -> torch.Tensor:
    """A (T, rows, cols) grid: (T*rows*cols, dim), time-major, float32. A quarter of the channels
    encode time and three quarters space (MAE's 2D table), in that order, as in diffusers'
    `get_3d_sincos_pos_embed`; no official video checkpoint depends on this table."""
    if dim % 16:
        raise ValueError(f"a 3D sin-cos embedding needs dim divisible by 16, got {dim}")
    num_t, rows, cols = grid_size
    temporal = _sincos_halves(torch.arange(num_t, device=device), dim // 4).float()  # (T, D/4)
    spatial = sincos_2d((rows, cols), dim - dim // 4, device=device)  # (rows*cols, 3D/4)
    return torch.cat([temporal.repeat_interleave(rows * cols, dim=0), spatial.repeat(num_t, 1)], dim=1)


def resize_pos_embed(pos_embed: torch.Tensor, *, old_grid: tuple[int, ...], new_grid: tuple[int, ...],
                     num_prefix_tokens: int = 0) -> torch.Tensor:
    """Resize a learned (1, prefix + prod(old_grid), D) embedding to `new_grid`.

    The grid is (rows, cols) or (T, rows, cols). Space is resized bicubically frame by frame (what
    timm and VideoMAE's finetuning do), time linearly. Prefix (class) tokens are kept as they are.
    """
    if len(old_grid) != len(new_grid) or len(old_grid) not in (2, 3):
        raise ValueError(f"grids must both be (rows, cols) or (T, rows, cols), got {old_grid} -> {new_grid}")
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    old_t, new_t = (old_grid[0], new_grid[0]) if len(old_grid) == 3 else (1, 1)
    # interpolate in float32: bicubic is not implemented for half precision on every device
    grid = grid.float().reshape(old_t, *old_grid[-2:], dim).permute(0, 3, 1, 2)  # (T,D,H,W)
    if tuple(old_grid[-2:]) != tuple(new_grid[-2:]):
        grid = F.interpolate(grid, size=tuple(new_grid[-2:]), mode="bicubic", align_corners=False)
    if old_t != new_t:
        rows, cols = new_grid[-2:]
        grid = grid.permute(1, 2, 3, 0).reshape(1, dim * rows * cols, old_t)  # (1, D*H*W, T)
        grid = F.interpolate(grid, size=new_t, mode="linear", align_corners=False)
        grid = grid.reshape(dim, rows, cols, new_t).permute(3, 0, 1, 2)  # (T',D,H,W)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos_embed.dtype)  # (1, T'*H'*W', D)
    return torch.cat([prefix, grid], dim=1)
