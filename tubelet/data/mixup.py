"""Mixup and CutMix on a batch, with label smoothing, producing soft targets (timm's `Mixup`
in batch mode: one mixing weight per batch, each sample mixed with the batch flipped).

Randomness comes from the global torch RNG (on the CPU), which checkpoints restore, so a resumed
run mixes exactly as an uninterrupted one.
"""
from __future__ import annotations

import torch


def smooth_one_hot(target: torch.Tensor, num_classes: int, *, smoothing: float = 0.0) -> torch.Tensor:
    """(B,) class ids -> (B, K) targets: 1 - smoothing + smoothing/K on the class, smoothing/K elsewhere."""
    off = smoothing / num_classes
    out = torch.full((target.shape[0], num_classes), off, device=target.device)
    return out.scatter_(1, target.long()[:, None], 1.0 - smoothing + off)


def _beta(alpha: float) -> float:
    return float(torch.distributions.Beta(torch.tensor(alpha), torch.tensor(alpha)).sample())


class Mixup:
    """`mixup_alpha`/`cutmix_alpha`: Beta parameters (0 disables that one); `prob`: chance a
    batch is mixed at all; `switch_prob`: chance of CutMix when both are on. VideoMAE's and
    MAE's finetuning use mixup 0.8, cutmix 1.0, prob 1.0, switch 0.5, smoothing 0.1."""

    def __init__(self, *, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
                 prob: float = 1.0, switch_prob: float = 0.5, label_smoothing: float = 0.1) -> None:
        if mixup_alpha < 0 or cutmix_alpha < 0 or not 0 <= prob <= 1 or not 0 <= switch_prob <= 1:
            raise ValueError("mixup: alphas must be >= 0 and probabilities in [0, 1]")
        self.num_classes = num_classes
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob, self.label_smoothing = prob, switch_prob, label_smoothing

    def _draw(self) -> tuple[float, bool]:
        """(lambda, use_cutmix) for one batch."""
        if float(torch.rand(())) >= self.prob or (self.mixup_alpha == 0 and self.cutmix_alpha == 0):
            return 1.0, False
        use_cutmix = self.cutmix_alpha > 0 and (
            self.mixup_alpha == 0 or float(torch.rand(())) < self.switch_prob)
        return _beta(self.cutmix_alpha if use_cutmix else self.mixup_alpha), use_cutmix

    def _box(self, lam: float, height: int, width: int) -> tuple[int, int, int, int]:
        """A box covering about 1 - lam of the frame, centred uniformly at random."""
        ratio = (1.0 - lam) ** 0.5
        cut_h, cut_w = int(height * ratio), int(width * ratio)
        cy, cx = int(torch.randint(height, ())), int(torch.randint(width, ()))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
        return y0, y1, x0, x1

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,C,[T],H,W) inputs and (B,) labels -> mixed inputs and (B, K) soft targets."""
        lam, use_cutmix = self._draw()
        if lam < 1.0:
            if use_cutmix:
                y0, y1, x0, x1 = self._box(lam, x.shape[-2], x.shape[-1])
                x = x.clone()
                # the same box in every frame: CutMix of videos pastes a tube
                x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
                lam = 1.0 - (y1 - y0) * (x1 - x0) / (x.shape[-2] * x.shape[-1])
            else:
                x = x * lam + x.flip(0) * (1.0 - lam)
        y = smooth_one_hot(target, self.num_classes, smoothing=self.label_smoothing)
        return x, y * lam + y.flip(0) * (1.0 - lam)
