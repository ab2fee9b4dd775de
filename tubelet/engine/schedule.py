"""Learning-rate schedules as pure functions of the optimizer step, so they hold no state to
checkpoint and a resumed run recomputes exactly the lr it would have had."""
from __future__ import annotations

import math


def cosine_lr(step: int, *, base_lr: float, total_steps: int, warmup_steps: int = 0,
              min_lr: float = 0.0) -> float:
    """Per-iteration linear warmup from 0 to `base_lr`, then half-cosine down to `min_lr`
    (the schedule of MAE's and VideoMAE's `adjust_learning_rate`, evaluated every step)."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * step / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def scaled_lr(*, lr: float | None, blr: float | None, total_batch_size: int) -> float:
    """`lr`, or `blr * total_batch_size / 256` (MAE's linear scaling rule) when `blr` is given."""
    if (lr is None) == (blr is None):
        raise ValueError("optimizer: give exactly one of 'lr' and 'blr'")
    return float(lr) if lr is not None else float(blr) * total_batch_size / 256
