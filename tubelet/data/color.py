"""Colour transforms for clips, as SimCLR and MoCo v3 augment: `color_jitter`, `random_grayscale`,
`gaussian_blur`, `random_solarize`.

Each draws its parameters ONCE per clip from the per-sample generator and applies them to every
frame (as rhoMoCo and MoCo v3's video practice; a per-frame draw would make the clip flicker,
and would hand the model a motion cue no real video has). Every call makes the same number of
draws whether or not the transform applies, so later transforms see the same random stream and
a resumed run draws what an uninterrupted one does. `generator=None` (eval) is the identity.

Where they run: in `transforms`, on the decoded clip, BEFORE `normalize`. They take a uint8 clip
(what the decoder and the crops give) or a float clip in [0, 1], and return the same dtype; a
uint8 clip is computed in float and rounded back. A float clip outside [0, 1] (a normalized one)
is refused: the luma weights, the hue circle and the solarize threshold mean nothing there.

Semantics follow torchvision's tensor ops (the ones SimCLR and MoCo v3 use through PIL/torchvision):
- color_jitter: brightness, contrast, saturation factors drawn uniformly in [max(0, 1 - x), 1 + x]
  (or a given [lo, hi]), hue shift in [-h, h] (h <= 0.5) as a rotation of the HSV hue circle,
  applied in a random order; the whole jitter with probability `p` (MoCo v3: RandomApply 0.8).
  Contrast blends with the mean luma of the whole clip (torchvision: of the one image), so
  every frame gets the very same operation.
- random_grayscale: luma 0.299 R + 0.587 G + 0.114 B (ITU-R 601) in all three channels.
- gaussian_blur: sigma drawn uniformly in `sigma` (pixels, as PIL's GaussianBlur radius that
  MoCo v3 uses), a separable kernel of radius ceil(3 sigma), reflect padding, every frame.
- random_solarize: pixels at or above `threshold` (a fraction of the range: 0.5 is PIL's 128
  on uint8) are inverted.
"""
from __future__ import annotations

import math
from typing import Annotated, Sequence

import torch
import torch.nn.functional as F

from tubelet.registry import TRANSFORMS, ConfigError, Gt, Min, Range  # noqa: F401 - annotations

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L") and torchvision
_SLACK = 1e-3  # float clips may overshoot [0, 1] by rounding


def _to_float(video: torch.Tensor, name: str, *, rgb: bool = True) -> torch.Tensor:
    """(C,T,H,W) uint8 or float in [0, 1] -> float in [0, 1]; `rgb`: C must be 3."""
    if rgb and video.shape[0] != 3:
        raise ValueError(f"{name}: expected 3 channels first (C,T,H,W), got {tuple(video.shape)}")
    if video.dtype == torch.uint8:
        return video.float() / 255
    low, high = torch.aminmax(video)
    if float(low) < -_SLACK or float(high) > 1 + _SLACK:
        raise ValueError(f"{name}: expects a uint8 clip or a float clip in [0, 1], got values in "
                         f"[{float(low):.3g}, {float(high):.3g}]; put it before normalize")
    return video.float()


def _back(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if dtype == torch.uint8:
        return (x * 255).round_().clamp_(0, 255).to(torch.uint8)
    return x.clamp(0, 1).to(dtype)


def luma(x: torch.Tensor) -> torch.Tensor:
    """(3, ...) -> (1, ...): ITU-R 601 luma."""
    return LUMA[0] * x[0:1] + LUMA[1] * x[1:2] + LUMA[2] * x[2:3]


def adjust_brightness(x: torch.Tensor, factor: float) -> torch.Tensor:
    return (x * factor).clamp(0, 1)


def adjust_contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    mean = luma(x).mean()  # one mean for the whole clip: the same operation on every frame
    return (mean + factor * (x - mean)).clamp(0, 1)


def adjust_saturation(x: torch.Tensor, factor: float) -> torch.Tensor:
    grey = luma(x)
    return (grey + factor * (x - grey)).clamp(0, 1)


def rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(3, ...) RGB in [0, 1] -> hue in [0, 1), saturation, value, each (...)."""
    r, g, b = x[0], x[1], x[2]
    value, low = x.max(dim=0).values, x.min(dim=0).values
    delta = value - low
    saturation = torch.where(value > 0, delta / value.clamp(min=1e-12), torch.zeros_like(value))
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (value - r) / safe, (value - g) / safe, (value - b) / safe
    hue = torch.where(value == r, bc - gc, torch.where(value == g, 2 + rc - bc, 4 + gc - rc))
    hue = torch.where(delta > 0, (hue / 6) % 1.0, torch.zeros_like(hue))
    return hue, saturation, value


def hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The inverse of `rgb_to_hsv`: channel n of (R, G, B) = v - v s clamp(min(k, 4 - k), 0, 1)
    with k = (n + 6 h) mod 6 for n = 5, 3, 1."""
    out = []
    for n in (5.0, 3.0, 1.0):
        k = (n + hue * 6) % 6
        out.append(value - value * saturation * torch.minimum(k, 4 - k).clamp(0, 1))
    return torch.stack(out)


def adjust_hue(x: torch.Tensor, shift: float) -> torch.Tensor:
    """Rotate the hue by `shift` turns (1/3: red -> green)."""
    hue, saturation, value = rgb_to_hsv(x)
    return hsv_to_rgb((hue + shift) % 1.0, saturation, value).clamp(0, 1)


def _prob(p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"p: must be in [0, 1], got {p}")
    return float(p)


def _span(value: float | Sequence[float] | None, name: str, *, centre: float,
          bound: tuple[float, float]) -> tuple[float, float] | None:
    """torchvision's ColorJitter._check_input: a number x means [centre - x, centre + x]
    clipped to `bound`, a pair is taken as is; None when it leaves the clip unchanged."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        if value < 0:
            raise ConfigError(f"{name}: must be >= 0, got {value}")
        lo, hi = max(centre - value, bound[0]), min(centre + value, bound[1])
        if centre == 0 and value > bound[1]:
            raise ConfigError(f"{name}: must be in [0, {bound[1]}], got {value}")
    else:
        if len(value) != 2 or not bound[0] <= value[0] <= value[1] <= bound[1]:
            raise ConfigError(f"{name}: a range needs [lo, hi] with {bound[0]} <= lo <= hi <= "
                              f"{bound[1]}, got {list(value)}")
        lo, hi = float(value[0]), float(value[1])
    return None if lo == hi == centre else (lo, hi)


@TRANSFORMS.register("color_jitter")
class ColorJitter:
    """torchvision's ColorJitter with probability `p`, one draw per clip (module docstring).
    MoCo v3: 0.4, 0.4, 0.2, 0.1 with p 0.8; SimCLR (strength 1): 0.8, 0.8, 0.8, 0.2 with p 0.8."""

    def __init__(self, brightness: Annotated[float | list[float], Min(0)] = 0.0,
                 contrast: Annotated[float | list[float], Min(0)] = 0.0,
                 saturation: Annotated[float | list[float], Min(0)] = 0.0,
                 hue: Annotated[float | list[float], Range(-0.5, 0.5)] = 0.0,
                 p: float = 1.0) -> None:
        inf = math.inf
        self.spans = [_span(brightness, "brightness", centre=1.0, bound=(0.0, inf)),
                      _span(contrast, "contrast", centre=1.0, bound=(0.0, inf)),
                      _span(saturation, "saturation", centre=1.0, bound=(0.0, inf)),
                      _span(hue, "hue", centre=0.0, bound=(-0.5, 0.5))]
        self.p = _prob(p)

    def __call__(self, video: torch.Tensor, *, generator: torch.Generator | None) -> torch.Tensor:
        if generator is None:
            return video
        # A fixed number of draws per clip (1 + a permutation of 4 + 4), whatever applies.
        apply = float(torch.rand((1,), generator=generator)) < self.p
        order = torch.randperm(4, generator=generator).tolist()
        u = torch.rand((4,), generator=generator).tolist()
        if not apply or all(s is None for s in self.spans):
            return video
        x = _to_float(video, "color_jitter")
        ops = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
        for k in order:
            if self.spans[k] is not None:
                lo, hi = self.spans[k]
                x = ops[k](x, lo + (hi - lo) * u[k])
        return _back(x, video.dtype)

    def __repr__(self) -> str:
        return f"ColorJitter(spans={self.spans}, p={self.p})"


@TRANSFORMS.register("random_grayscale")
class RandomGrayscale:
    """With probability `p`, the whole clip in grey (ITU-R 601 luma in all three channels).
    MoCo v3 / SimCLR: p 0.2."""

    def __init__(self, p: float = 0.1) -> None:
        self.p = _prob(p)

    def __call__(self, video: torch.Tensor, *, generator: torch.Generator | None) -> torch.Tensor:
        if generator is None:
            return video
        if float(torch.rand((1,), generator=generator)) >= self.p:
            return video
        x = _to_float(video, "random_grayscale")
        return _back(luma(x).expand_as(x), video.dtype)


def gaussian_kernel(sigma: float, radius: int) -> torch.Tensor:
    """(2 radius + 1,) normalized Gaussian weights."""
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    weights = torch.exp(-x * x / (2 * sigma * sigma))
    return weights / weights.sum()


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of every frame of a float (C,T,H,W) clip, reflect padding."""
    c, t, h, w = x.shape
    radius = min(math.ceil(3 * sigma), h - 1, w - 1)  # reflect padding needs radius < size
    if radius < 1:
        return x
    kernel = gaussian_kernel(sigma, radius).to(x.device, x.dtype)
    frames = x.reshape(c * t, 1, h, w)  # every frame of every channel blurs alike
    frames = F.conv2d(F.pad(frames, (radius, radius, 0, 0), mode="reflect"),
                      kernel.view(1, 1, 1, -1))
    frames = F.conv2d(F.pad(frames, (0, 0, radius, radius), mode="reflect"),
                      kernel.view(1, 1, -1, 1))
    return frames.reshape(c, t, h, w)


def _sigma_span(sigma: float | Sequence[float]) -> tuple[float, float]:
    if isinstance(sigma, (int, float)):
        sigma = (sigma, sigma)
    if len(sigma) != 2 or not 0 < sigma[0] <= sigma[1]:
        raise ConfigError(f"sigma: needs a positive number or [lo, hi] with 0 < lo <= hi, "
                          f"got {sigma!r}")
    return float(sigma[0]), float(sigma[1])


@TRANSFORMS.register("gaussian_blur")
class GaussianBlur:
    """With probability `p`, blur every frame with one sigma drawn uniformly in `sigma` (pixels).
    MoCo v3: sigma [0.1, 2.0] at 224 px, p 1.0 (first view) / 0.1 (second); SimCLR: p 0.5."""

    def __init__(self, sigma: Annotated[float | list[float], Gt(0)] = (0.1, 2.0),
                 p: float = 0.5) -> None:
        self.sigma = _sigma_span(sigma)
        self.p = _prob(p)

    def __call__(self, video: torch.Tensor, *, generator: torch.Generator | None) -> torch.Tensor:
        if generator is None:
            return video
        u = torch.rand((2,), generator=generator).tolist()  # apply?, sigma: always both
        if u[0] >= self.p:
            return video
        lo, hi = self.sigma
        x = _to_float(video, "gaussian_blur", rgb=False)
        return _back(blur(x, lo + (hi - lo) * u[1]), video.dtype)


@TRANSFORMS.register("random_solarize")
class RandomSolarize:
    """With probability `p`, invert every pixel at or above `threshold` (a fraction of the value
    range; 0.5 is PIL's ImageOps.solarize default 128 on uint8). MoCo v3: p 0 / 0.2."""

    def __init__(self, threshold: Annotated[float, Range(0, 1)] = 0.5, p: float = 0.5) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold: must be in [0, 1], got {threshold}")
        self.threshold, self.p = float(threshold), _prob(p)

    def __call__(self, video: torch.Tensor, *, generator: torch.Generator | None) -> torch.Tensor:
        if generator is None:
            return video
        if float(torch.rand((1,), generator=generator)) >= self.p:
            return video
        if video.dtype == torch.uint8:  # exact on integers: x / 255 >= threshold
            return torch.where(video.float() >= self.threshold * 255, 255 - video, video)
        x = _to_float(video, "random_solarize", rgb=False)  # per pixel: any channels
        return torch.where(x >= self.threshold, 1 - x, x).to(video.dtype)
