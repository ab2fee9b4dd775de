"""RandAugment for clips: `num_ops` operations drawn once per clip and applied identically to
every frame (a per-frame draw would make the clip flicker, which no real video does).

Operations and magnitude scale follow timm's `rand-m9-n2` (magnitude in [0, 10]); Equalize is
left out. Works on uint8 or float-in-[0, 1] (C, T, H, W) clips on any device; all draws come
from the per-sample CPU generator. Use before `normalize`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tubelet.registry import TRANSFORMS

FILL = 128.0  # grey, in [0, 255], for pixels a geometric op uncovers


def _grey(x: torch.Tensor) -> torch.Tensor:
    """(T,C,H,W) in [0,255] -> (T,1,H,W) luma."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def _blend(x: torch.Tensor, other: torch.Tensor, factor: float) -> torch.Tensor:
    return (other + factor * (x - other)).clamp(0, 255)


def _affine(x: torch.Tensor, matrix: list[list[float]]) -> torch.Tensor:
    """Apply a 2x3 affine map in normalized coordinates to all frames; uncovered pixels FILL."""
    theta = torch.tensor(matrix, dtype=x.dtype, device=x.device).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Shift by FILL so grid_sample's zero padding becomes grey.
    return F.grid_sample(x - FILL, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False) + FILL


def _sharpness(x: torch.Tensor, factor: float) -> torch.Tensor:
    kernel = torch.tensor([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=x.dtype, device=x.device) / 13
    smooth = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"),
                      kernel.expand(x.shape[1], 1, 3, 3), groups=x.shape[1])
    return _blend(x, smooth, factor)


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    low = x.amin(dim=(0, 2, 3), keepdim=True)  # per channel, over the whole clip
    high = x.amax(dim=(0, 2, 3), keepdim=True)
    scale = torch.where(high > low, 255 / (high - low).clamp(min=1e-6), torch.ones_like(high))
    return torch.where(high > low, (x - low) * scale, x)


def _apply(op: str, x: torch.Tensor, m: float, sign: float) -> torch.Tensor:
    """One operation at magnitude m in [0, 1] (already divided by 10); x is (T,C,H,W) in [0,255]."""
    if op == "identity":
        return x
    if op == "auto_contrast":
        return _autocontrast(x)
    if op == "brightness":
        return _blend(x, torch.zeros_like(x), 1 + sign * 0.9 * m)
    if op == "color":
        return _blend(x, _grey(x).expand_as(x), 1 + sign * 0.9 * m)
    if op == "contrast":
        return _blend(x, _grey(x).mean().expand_as(x), 1 + sign * 0.9 * m)
    if op == "sharpness":
        return _sharpness(x, 1 + sign * 0.9 * m)
    if op == "posterize":
        bits = 8 - int(4 * m)
        return (x.round().to(torch.uint8) & (0xFF << (8 - bits) & 0xFF)).to(x.dtype)
    if op == "solarize":
        return torch.where(x >= 256 - 256 * m, 255 - x, x)
    if op == "rotate":
        a = math.radians(30 * m * sign)
        return _affine(x, [[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0]])
    if op == "shear_x":
        return _affine(x, [[1, 0.3 * m * sign, 0], [0, 1, 0]])
    if op == "shear_y":
        return _affine(x, [[1, 0, 0], [0.3 * m * sign, 1, 0]])
    if op == "translate_x":  # 0.45 of the width at m = 1; normalized coordinates span 2
        return _affine(x, [[1, 0, 0.9 * m * sign], [0, 1, 0]])
    if op == "translate_y":
        return _affine(x, [[1, 0, 0], [0, 1, 0.9 * m * sign]])
    raise AssertionError(op)


OPS = ("identity", "auto_contrast", "brightness", "color", "contrast", "sharpness", "posterize",
       "solarize", "rotate", "shear_x", "shear_y", "translate_x", "translate_y")


@TRANSFORMS.register("rand_augment")
class RandAugment:
    """`num_ops` ops at `magnitude` (0-10; with `magnitude_std`, drawn per clip around it), each
    applied with probability `p`, the same for all frames of the clip. Eval: identity."""

    def __init__(self, num_ops: int = 2, magnitude: float = 9, *, magnitude_std: float = 0.5,
                 p: float = 0.5, ops: list[str] | None = None) -> None:
        unknown = sorted(set(ops or ()) - set(OPS))
        if unknown:
            raise ValueError(f"rand_augment: unknown ops {unknown}; choose from {list(OPS)}")
        if num_ops < 0 or not 0 <= magnitude <= 10:
            raise ValueError(f"rand_augment: need num_ops >= 0 and magnitude in [0, 10], "
                             f"got {num_ops}, {magnitude}")
        self.num_ops, self.magnitude, self.magnitude_std = num_ops, magnitude, magnitude_std
        self.p = p
        self.ops = tuple(ops or OPS)

    def __call__(self, video: torch.Tensor, *, generator: torch.Generator | None) -> torch.Tensor:
        if generator is None or self.num_ops == 0:
            return video
        # A fixed number of draws per clip, whatever is applied.
        choice = torch.randint(0, len(self.ops), (self.num_ops,), generator=generator).tolist()
        u = torch.rand((self.num_ops, 3), generator=generator)
        noise = torch.randn((self.num_ops,), generator=generator)
        dtype = video.dtype
        x = video.transpose(0, 1).float()  # (C,T,H,W) -> (T,C,H,W)
        if dtype != torch.uint8:
            x = x * 255
        for k, op in enumerate(self.ops[c] for c in choice):
            if float(u[k, 0]) >= self.p:
                continue
            m = self.magnitude + self.magnitude_std * float(noise[k])
            m = min(max(m, 0.0), 10.0) / 10
            x = _apply(op, x, m, 1.0 if float(u[k, 1]) < 0.5 else -1.0).clamp(0, 255)
        x = x.transpose(0, 1)  # (T,C,H,W) -> (C,T,H,W)
        return x.round().to(torch.uint8) if dtype == torch.uint8 else x / 255
