"""Tensor transforms for clips shaped (C, T, H, W). Pure torch, so they run on CPU or GPU.

Protocol: `t(video, *, generator) -> video`. Random choices come only from `generator` (a CPU
generator from `sample_generator`), so a sample looks the same whatever the worker count;
`generator=None` means eval, where every transform is deterministic.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from tubelet.registry import TRANSFORMS

Transform = Callable[..., torch.Tensor]


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if len(size) != 2:
        raise ValueError(f"size must be an int or [height, width], got {size!r}")
    return int(size[0]), int(size[1])


def _check_fits(video: torch.Tensor, height: int, width: int, name: str) -> None:
    if video.shape[-2] < height or video.shape[-1] < width:
        raise ValueError(f"{name}: crop {height}x{width} is larger than the clip "
                         f"{video.shape[-2]}x{video.shape[-1]}")


def _randint(high: int, generator: torch.Generator) -> int:
    """An int in [0, high), drawn on the CPU so the video's device does not matter."""
    return int(torch.randint(0, high, (1,), generator=generator))


@TRANSFORMS.register("random_crop")
class RandomCrop:
    """The same random `size` crop for every frame; a centre crop when `generator` is None."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.height, self.width = _pair(size)

    def __call__(self, video: torch.Tensor, *, generator: torch.Generator | None) -> torch.Tensor:
        _check_fits(video, self.height, self.width, "random_crop")
        height, width = video.shape[-2:]
        if generator is None:
            top, left = (height - self.height) // 2, (width - self.width) // 2
        else:
            top = _randint(height - self.height + 1, generator)
            left = _randint(width - self.width + 1, generator)
        return video[..., top:top + self.height, left:left + self.width]  # (C,T,H,W) -> (C,T,h,w)


@TRANSFORMS.register("center_crop")
class CenterCrop:
    """The centre `size` crop, whatever the generator."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.height, self.width = _pair(size)

    def __call__(self, video: torch.Tensor, *, generator: torch.Generator | None) -> torch.Tensor:
        _check_fits(video, self.height, self.width, "center_crop")
        height, width = video.shape[-2:]
        top, left = (height - self.height) // 2, (width - self.width) // 2
        return video[..., top:top + self.height, left:left + self.width]  # (C,T,H,W) -> (C,T,h,w)


@TRANSFORMS.register("normalize")
class Normalize:
    """uint8 -> float in [0, 1] (a float clip is taken to be in [0, 1] already), then
    per-channel (x - mean) / std."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"normalize: mean and std need 3 values, "
                             f"got {list(mean)} and {list(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"normalize: std must be positive, got {list(std)}")
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1, 1)

    def __call__(self, video: torch.Tensor, *, generator: torch.Generator | None) -> torch.Tensor:
        if video.shape[0] != 3:
            raise ValueError(f"normalize: expected 3 channels first (C,T,H,W), "
                             f"got shape {tuple(video.shape)}")
        if video.dtype == torch.uint8:
            video = video.float() / 255
        mean, std = self.mean.to(video.device), self.std.to(video.device)
        return (video - mean) / std  # (C,T,H,W)


@TRANSFORMS.register("random_horizontal_flip")
class RandomHorizontalFlip:
    """Mirror the whole clip with probability `p`; never when `generator` is None."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"random_horizontal_flip: p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, video: torch.Tensor, *, generator: torch.Generator | None) -> torch.Tensor:
        if generator is None:
            return video
        # Always draw, even for p in {0, 1}, so later transforms see the same random stream.
        if float(torch.rand((1,), generator=generator)) < self.p:
            return video.flip(-1)  # (C,T,H,W), W reversed
        return video


class Compose:
    """Apply transforms in order, all drawing from the one per-sample generator."""

    def __init__(self, transforms: list[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, video: torch.Tensor, *, generator: torch.Generator | None) -> torch.Tensor:
        for transform in self.transforms:
            video = transform(video, generator=generator)
        return video

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"
