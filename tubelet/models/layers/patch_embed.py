"""Patch embedding: images to 2D patches, videos to tubelets (the same conv, one more dimension)."""
from __future__ import annotations

import torch
from torch import nn


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class PatchEmbed(nn.Module):
    """Cut an image (B,C,H,W) into p x p patches or a video (B,C,T,H,W) into tubelet x p x p
    tubelets, and project each to `embed_dim`.

    The model is a video model when `num_frames > 1`: it then takes (B,C,T,H,W) and uses a
    Conv3d, as VideoMAE; otherwise a Conv2d, as timm. Either way the weight is `proj.weight`.
    `dynamic`: accept any (T,)H,W that the tubelet divides, not only the configured size.
    """

    def __init__(self, *, img_size: int | tuple[int, int] = 224, patch_size: int = 16,
                 in_chans: int = 3, embed_dim: int = 768, num_frames: int = 1,
                 tubelet_size: int = 1, dynamic: bool = False) -> None:
        super().__init__()
        self.dynamic = dynamic
        self.img_size = _pair(img_size)
        self.patch_size = _pair(patch_size)
        self.num_frames = num_frames
        self.tubelet_size = tubelet_size
        self.is_video = num_frames > 1
        if any(s % p for s, p in zip(self.img_size, self.patch_size)):
            raise ValueError(f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}")
        if num_frames % tubelet_size:
            raise ValueError(f"num_frames={num_frames} is not divisible by tubelet_size={tubelet_size}")
        if not self.is_video and tubelet_size != 1:
            raise ValueError(f"tubelet_size={tubelet_size} needs a video model (num_frames > 1)")

        spatial_grid = tuple(s // p for s, p in zip(self.img_size, self.patch_size))
        if self.is_video:
            kernel = (tubelet_size, *self.patch_size)
            self.grid_size: tuple[int, ...] = (num_frames // tubelet_size, *spatial_grid)
            self.proj: nn.Module = nn.Conv3d(in_chans, embed_dim, kernel_size=kernel, stride=kernel)
        else:
            self.grid_size = spatial_grid
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.num_patches = 1
        for n in self.grid_size:
            self.num_patches *= n

    def grid_of(self, x: torch.Tensor) -> tuple[int, ...]:
        """The token grid ((T',)H',W') that input `x` gives."""
        kernel = ((self.tubelet_size,) if self.is_video else ()) + self.patch_size
        return tuple(s // k for s, k in zip(x.shape[-len(kernel):], kernel))

    def check_input(self, x: torch.Tensor) -> None:
        expected = ((self.num_frames,) if self.is_video else ()) + self.img_size
        if self.dynamic and x.ndim == len(expected) + 2:
            kernel = ((self.tubelet_size,) if self.is_video else ()) + self.patch_size
            if all(s % k == 0 for s, k in zip(x.shape[2:], kernel)):
                return
            raise ValueError(f"input (T,)H,W {tuple(x.shape[2:])} is not divisible by the "
                             f"tubelet {kernel}")
        if x.ndim != len(expected) + 2 or tuple(x.shape[2:]) != expected:
            layout = "(B,C,T,H,W)" if self.is_video else "(B,C,H,W)"
            raise ValueError(f"expected input {layout} with (T,)H,W = {expected}, got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.is_video and x.ndim == 5 and x.shape[2] == 1:
            x = x.squeeze(2)  # a 1-frame clip (B,C,1,H,W), as image datasets yield, is an image
        self.check_input(x)
        x = self.proj(x)  # (B,C,[T],H,W) -> (B,D,[T'],H',W')
        return x.flatten(2).transpose(1, 2)  # -> (B,N,D)
