"""Say once when a run waits on its data loader for a large share of each step.

VideoMAE's own Kinetics pretraining keeps its GPUs busy ~5% of the time: decoding, not the model,
sets the pace, and nothing says so. The Trainer already measures, per step and on the host, the
wait for the next batch (`data_time`) and the whole step (`step_time`); they are read at log
intervals only, so this check adds no device sync.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger("tubelet")

THRESHOLD = 0.30  # loader wait above this share of step time: the data sets the pace
WINDOW_STEPS = 20  # judged over at least this many steps, not one noisy log interval


class DataBoundCheck:
    """Fed the timing fields of each log interval (`update`); warns once, the first time a
    window of at least `window` steps spent more than `threshold` of its step time waiting for
    data. The first interval after the start is left out: it holds the workers' start-up."""

    def __init__(self, *, num_workers: int, threshold: float = THRESHOLD,
                 window: int = WINDOW_STEPS) -> None:
        self.num_workers, self.threshold, self.window = num_workers, threshold, window
        self.warned, self._skipped = False, False
        self._data = self._step = 0.0
        self._steps, self._first_step = 0, 0

    def update(self, *, step: int, num_steps: int, data_time: float, step_time: float) -> bool:
        """`num_steps` steps ending at `step` took `step_time` each, `data_time` of it waiting
        (means, as `Meters.read` gives them). Returns whether it warned now."""
        if self.warned or num_steps <= 0:
            return False
        if not self._skipped:
            self._skipped = True
            return False
        if self._steps == 0:
            self._first_step = step - num_steps
        self._data += data_time * num_steps
        self._step += step_time * num_steps
        self._steps += num_steps
        if self._steps < self.window:
            return False
        share = self._data / self._step if self._step > 0 else 0.0
        data, total, steps, first = self._data, self._step, self._steps, self._first_step
        self._data = self._step = 0.0
        self._steps = 0
        if share <= self.threshold:
            return False
        self.warned = True
        log.warning(
            "data-bound: over steps %d-%d the loader wait was %.0f%% of step time (%.3g s of "
            "%.3g s per step; the model computed for %.3g s). The model waits for its data. "
            "Try: more data.num_workers (now %d, %s CPUs here), a faster decode backend "
            "(data.<split>.backend), fewer or smaller decoded frames, and measure the decode "
            "speed with `tubelet data check RECIPE.yaml`.", first + 1, step, 100 * share,
            data / steps, total / steps, (total - data) / steps, self.num_workers,
            os.cpu_count() or "?")
        return True
