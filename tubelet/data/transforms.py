"""Tensor transforms for clips shaped (C, T, H, W). Pure torch, so they run on CPU or GPU.

Protocol: `t(video, *, generator) -> video`. Random choices come only from `generator` (a CPU
generator from `sample_generator`), so a sample looks the same whatever the worker count;
`generator=None` means eval, where every transform is deterministic.

Sizing transforms (`sets_size = True`: the crops, `resize`, `random_resized_crop`) also take
`size=(H, W)`, which overrides their configured output size for one call: a dynamic batch
(data/dynamic_batch.py) asks every sample of a batch for its shape that way.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

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

    sets_size = True

    def __init__(self, size: int | Sequence[int]) -> None:
        self.height, self.width = _pair(size)

    def __call__(self, video: torch.Tensor, *, generator: torch.Generator | None,
                 size: tuple[int, int] | None = None) -> torch.Tensor:
        h, w = size or (self.height, self.width)
        _check_fits(video, h, w, "random_crop")
        height, width = video.shape[-2:]
        if generator is None:
            top, left = (height - h) // 2, (width - w) // 2
        else:
            top = _randint(height - h + 1, generator)
            left = _randint(width - w + 1, generator)
        return video[..., top:top + h, left:left + w]  # (C,T,H,W) -> (C,T,h,w)


@TRANSFORMS.register("center_crop")
class CenterCrop:
    """The centre `size` crop, whatever the generator."""

    sets_size = True

    def __init__(self, size: int | Sequence[int]) -> None:
        self.height, self.width = _pair(size)

    def __call__(self, video: torch.Tensor, *, generator: torch.Generator | None,
                 size: tuple[int, int] | None = None) -> torch.Tensor:
        h, w = size or (self.height, self.width)
        _check_fits(video, h, w, "center_crop")
        height, width = video.shape[-2:]
        top, left = (height - h) // 2, (width - w) // 2
        return video[..., top:top + h, left:left + w]  # (C,T,H,W) -> (C,T,h,w)


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


def resize(video: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear antialiased resize of a (C,T,H,W) clip. uint8 stays uint8: on the CPU torch
    resizes uint8 directly, which is faster than converting to float first (see
    docs/benchmarks.md); other devices resize in float and round back."""
    if tuple(video.shape[-2:]) == (height, width):
        return video
    frames = video.transpose(0, 1)  # (C,T,H,W) -> (T,C,H,W): frames are the batch
    if video.dtype == torch.uint8 and video.device.type == "cpu":
        out = F.interpolate(frames.contiguous(memory_format=torch.channels_last),
                            size=(height, width), mode="bilinear", antialias=True)
    else:
        out = F.interpolate(frames.float(), size=(height, width), mode="bilinear",
                            antialias=True)
        if video.dtype == torch.uint8:
            out = out.round_().clamp_(0, 255).to(torch.uint8)
    return out.transpose(0, 1)  # (T,C,h,w) -> (C,T,h,w)


@TRANSFORMS.register("short_side_resize")
class ShortSideResize:
    """Resize so the shorter side is `size`, keeping the aspect ratio."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"short_side_resize: size must be >= 1, got {size}")
        self.size = size

    def __call__(self, video: torch.Tensor, *, generator: torch.Generator | None) -> torch.Tensor:
        height, width = video.shape[-2:]
        scale = self.size / min(height, width)
        return resize(video, max(1, round(height * scale)), max(1, round(width * scale)))


@TRANSFORMS.register("resize")
class Resize:
    """Resize every frame to exactly `size` ([height, width] or an int for a square)."""

    sets_size = True

    def __init__(self, size: int | Sequence[int]) -> None:
        self.height, self.width = _pair(size)

    def __call__(self, video: torch.Tensor, *, generator: torch.Generator | None,
                 size: tuple[int, int] | None = None) -> torch.Tensor:
        return resize(video, *(size or (self.height, self.width)))


@TRANSFORMS.register("random_resized_crop")
class RandomResizedCrop:
    """Inception-style crop: area fraction in `scale`, aspect ratio (w/h) in `ratio` (log-uniform),
    the same box for every frame, resized to `size`. In eval (generator None) the centre crop of
    the largest in-range box, resized. With a `size` override of another aspect, `ratio` is
    taken relative to it: the box's aspect range moves with the output's."""

    sets_size = True

    def __init__(self, size: int | Sequence[int], *, scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), max_tries: int = 10) -> None:
        self.height, self.width = _pair(size)
        if not (0 < scale[0] <= scale[1] <= 1) or not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"random_resized_crop: need 0 < scale[0] <= scale[1] <= 1 and "
                             f"0 < ratio[0] <= ratio[1], got {list(scale)}, {list(ratio)}")
        self.scale, self.ratio, self.max_tries = tuple(scale), tuple(ratio), max_tries

    def box(self, height: int, width: int, generator: torch.Generator | None, *,
            fallback: bool = True, ratio: tuple[float, float] | None = None
            ) -> tuple[int, int, int, int] | None:
        """(top, left, h, w) of the crop; None when no draw fits and `fallback` is False."""
        ratio = ratio or self.ratio
        area = height * width
        log_ratio = torch.log(torch.tensor(ratio))
        # Always make max_tries draws, so the stream after this transform has a fixed length.
        draws = torch.rand((self.max_tries, 4), generator=generator) if generator else None
        for k in range(self.max_tries if generator else 0):
            u = draws[k]
            target = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * float(u[0]))
            aspect = float(torch.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1]))
            w, h = round((target * aspect) ** 0.5), round((target / aspect) ** 0.5)
            if 0 < w <= width and 0 < h <= height:
                return int(u[2] * (height - h + 1)), int(u[3] * (width - w + 1)), h, w
        if not fallback:
            return None
        # Fallback (and eval): the whole frame clipped to the ratio range, centred.
        aspect = min(max(width / height, ratio[0]), ratio[1])
        w, h = (width, round(width / aspect)) if width / height < aspect else \
            (round(height * aspect), height)
        h, w = min(h, height), min(w, width)
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, video: torch.Tensor, *, generator: torch.Generator | None,
                 size: tuple[int, int] | None = None) -> torch.Tensor:
        out_h, out_w = size or (self.height, self.width)
        ratio = None
        if size is not None:  # keep the ratio range relative to the output's aspect
            k = (out_w / out_h) / (self.width / self.height)
            ratio = (self.ratio[0] * k, self.ratio[1] * k)
        box = self.box(video.shape[-2], video.shape[-1], generator, ratio=ratio)
        assert box is not None  # with fallback, box() always returns one
        top, left, h, w = box
        return resize(video[..., top:top + h, left:left + w], out_h, out_w)


def spatial_crop(video: torch.Tensor, *, index: int, num_crops: int) -> torch.Tensor:
    """Crop `index` of `num_crops` squares of the short side, spread evenly along the long side
    (num_crops=3: left/centre/right, or top/centre/bottom): the multi-view test crops."""
    height, width = video.shape[-2:]
    side = min(height, width)
    offset = 0 if num_crops == 1 else round((max(height, width) - side) * index / (num_crops - 1))
    if width >= height:
        return video[..., :, offset:offset + side]
    return video[..., offset:offset + side, :]


@TRANSFORMS.register("random_erasing")
class RandomErasing:
    """With probability `p`, replace one box (area fraction in `scale`, aspect in `ratio`) with
    per-pixel normal noise, the same box on every frame (as VideoMAE erases whole tubes). Put it
    after `normalize`: the noise is drawn in normalized units."""

    def __init__(self, p: float = 0.25, *, scale: Sequence[float] = (0.02, 1 / 3),
                 ratio: Sequence[float] = (0.3, 3.3)) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"random_erasing: p must be in [0, 1], got {p}")
        self.p, self.crop = p, RandomResizedCrop(1, scale=scale, ratio=ratio)

    def __call__(self, video: torch.Tensor, *, generator: torch.Generator | None) -> torch.Tensor:
        if generator is None:
            return video
        if video.dtype == torch.uint8:
            raise ValueError("random_erasing: expects a float clip; put it after normalize")
        erase = float(torch.rand((1,), generator=generator)) < self.p
        box = self.crop.box(video.shape[-2], video.shape[-1], generator, fallback=False)
        if not erase or box is None:
            return video
        top, left, h, w = box
        noise = torch.randn((video.shape[0], 1, h, w), generator=generator)  # (C,1,h,w)
        video = video.clone()
        video[..., top:top + h, left:left + w] = noise.to(video.device, video.dtype)
        return video


class Compose:
    """Apply transforms in order, all drawing from the one per-sample generator. A `size`
    goes to every sizing transform (see the module docstring)."""

    def __init__(self, transforms: list[Transform]) -> None:
        self.transforms = list(transforms)

    @property
    def sets_size(self) -> bool:
        return any(getattr(t, "sets_size", False) for t in self.transforms)

    def __call__(self, video: torch.Tensor, *, generator: torch.Generator | None,
                 size: tuple[int, int] | None = None) -> torch.Tensor:
        for transform in self.transforms:
            if size is not None and getattr(transform, "sets_size", False):
                video = transform(video, generator=generator, size=size)
            else:
                video = transform(video, generator=generator)
        return video

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


# RandAugment lives in its own module; importing it here registers it with the others.
from tubelet.data import randaugment  # noqa: E402,F401
# So do the colour transforms (color_jitter, random_grayscale, gaussian_blur, random_solarize).
from tubelet.data import color  # noqa: E402,F401
