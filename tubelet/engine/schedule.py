"""Learning-rate schedules as pure functions of the optimizer step, so they hold no state to
checkpoint and a resumed run recomputes exactly the lr it would have had.

Every schedule is evaluated per iteration and starts with the same linear warmup from 0 over
`warmup_epochs` (converted to steps). After it:
- cosine     half-cosine from the peak down to `min_lr` over the steps after the warmup (MAE's and
             VideoMAE's `adjust_learning_rate` / `cosine_scheduler`);
- poly       `(peak - min_lr) * (1 - t)^power + min_lr`, t the fraction of the post-warmup steps
             done (MMEngine's `PolyLR`, torch's `PolynomialLR` with an end value);
- step       times `gamma` every `step_size` epochs (torch's `StepLR`);
- multistep  times `gamma` at each epoch in `milestones` (torch's `MultiStepLR`, MMAction2's and
             SlowFast's `steps`).
Step and multistep count their epochs from the start of the run, warmup included, as the
by-epoch schedulers they stand for do; a drop lands on the first step of that epoch.
"""
from __future__ import annotations

import bisect
import logging
import math
from typing import Callable

from tubelet.validate_switches import min_lr_above_peak

log = logging.getLogger("tubelet")
SCHEDULES = ("cosine", "poly", "step", "multistep")
# the keys that only some schedules read: schedule type -> keys it takes
SHAPE_KEYS = {"cosine": ("min_lr",), "poly": ("min_lr", "power"),
              "step": ("step_size", "gamma"), "multistep": ("milestones", "gamma")}


def cosine_lr(step: int, *, base_lr: float, total_steps: int, warmup_steps: int = 0,
              min_lr: float = 0.0) -> float:
    """Per-iteration linear warmup from 0 to `base_lr`, then half-cosine down to `min_lr`
    (the schedule of MAE's and VideoMAE's `adjust_learning_rate`, evaluated every step)."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * step / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def poly_lr(step: int, *, base_lr: float, total_steps: int, warmup_steps: int = 0,
            min_lr: float = 0.0, power: float = 1.0) -> float:
    """Linear warmup, then `(base_lr - min_lr) * (1 - progress) ** power + min_lr`."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + (base_lr - min_lr) * (1.0 - progress) ** power


def multistep_lr(step: int, *, base_lr: float, milestone_steps: list[int], gamma: float,
                 warmup_steps: int = 0) -> float:
    """`base_lr * gamma ** (milestones passed)`, times the linear warmup factor while it lasts.
    A milestone at step s applies from step s on (torch's MultiStepLR)."""
    lr = base_lr * gamma ** bisect.bisect_right(milestone_steps, step)
    if warmup_steps > 0 and step < warmup_steps:
        return lr * step / warmup_steps
    return lr


def epochs_to_steps(epochs: float, *, total_steps: int, num_epochs: int) -> int:
    """An epoch count as optimizer steps (the warmup and the milestones use the same rule)."""
    return round(epochs * total_steps / max(num_epochs, 1))


def lr_schedule(*, base_lr: float, total_steps: int, epochs: int, type: str = "cosine",
                warmup_epochs: float = 0.0, min_lr: float | None = 0.0,
                milestones: list[float] | None = None, step_size: float | None = None,
                gamma: float = 0.1, power: float = 1.0) -> Callable[[int], float]:
    """The lr as a function of the optimizer step, for a `schedule:` section (`type` and the
    keys that type reads; `tubelet.validate_switches` refuses the others before a run starts).
    `milestones` and `step_size` are in epochs, like `warmup_epochs`."""
    assert type in SCHEDULES, type  # validated with the recipe
    min_lr = min_lr or 0.0  # null: unset, e.g. a step schedule over a base recipe's cosine
    if min_lr > base_lr and type in ("cosine", "poly"):
        # An explicit optimizer.lr below min_lr is refused with the recipe. With blr the peak
        # follows the total batch, and a paper's absolute min_lr can top it on a small one
        # (VideoMAE's HMDB51 finetune: 5e-4 x 4 / 256 < 1e-5); its code then ramps the lr up,
        # and so does this one, but not silently.
        log.warning("%s", min_lr_above_peak(min_lr, base_lr, kind=type,
                                            peak="blr x total batch / 256"))
    warmup_steps = epochs_to_steps(warmup_epochs, total_steps=total_steps, num_epochs=epochs)
    if warmup_steps >= total_steps > 0:  # warn: shortened smoke runs are legitimate
        log.warning("schedule.warmup_epochs: %g epochs (%d steps) is not shorter than the run "
                    "(%d epochs, %d steps); the lr stops at %.3g, %.0f%% of its peak %.3g",
                    warmup_epochs, warmup_steps, epochs, total_steps,
                    base_lr * max(total_steps - 1, 0) / warmup_steps,
                    100 * max(total_steps - 1, 0) / warmup_steps, base_lr)
    if type == "cosine":
        return lambda step: cosine_lr(step, base_lr=base_lr, total_steps=total_steps,
                                      warmup_steps=warmup_steps, min_lr=min_lr)
    if type == "poly":
        return lambda step: poly_lr(step, base_lr=base_lr, total_steps=total_steps,
                                    warmup_steps=warmup_steps, min_lr=min_lr, power=power)
    if type == "step":
        assert step_size is not None and step_size > 0, "validated with the recipe"
        milestones = [step_size * k for k in range(1, int(epochs / step_size) + 1)]
    assert milestones is not None, "validated with the recipe"
    steps = [epochs_to_steps(m, total_steps=total_steps, num_epochs=epochs) for m in milestones]
    late = [m for m, s in zip(milestones, steps) if s >= total_steps]
    if late and type == "multistep":
        log.warning("schedule.milestones: %s at or after the end of the run (%d epochs); the "
                    "lr never drops there", late, epochs)
    return lambda step: multistep_lr(step, base_lr=base_lr, milestone_steps=steps, gamma=gamma,
                                     warmup_steps=warmup_steps)


def scaled_lr(*, lr: float | None, blr: float | None, total_batch_size: int) -> float:
    """`lr`, or `blr * total_batch_size / 256` (MAE's linear scaling rule) when `blr` is given."""
    if (lr is None) == (blr is None):
        raise ValueError("optimizer: give exactly one of 'lr' and 'blr'")
    return float(lr) if lr is not None else float(blr) * total_batch_size / 256
