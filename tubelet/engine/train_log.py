"""The train rows (metrics.jsonl, TensorBoard, trackers, the console, the data-bound check):
taken at every log interval, written at most every `FLUSH_S` seconds.

A log row costs ~140 us of Python hot, and 250-450 us between the model's kernels on one CPU
core (cold caches; benchmarks/step_floor.py): +25 to +45 us a step on a 0.75 ms step logged
every 10 steps, more than everything else the loop adds with the NaN guard off. So a row is
only *taken* at its log interval: the interval's figures (losses still on the device, host
timings, the lr) go into a list, and the rows are read and written together once `FLUSH_S`
has passed since the last write. A loop whose log interval takes longer than that (every
real recipe) writes each row at once, as before; a fast one writes in bursts, each row in
order and unchanged to the bit, at most `FLUSH_S` and one log interval late. Rows are always
written before a checkpoint (its commit fsyncs metrics.jsonl, and a resume keeps the rows up
to its step), before an evaluation's row, and when the run ends, however it ends. On several
ranks the loss read is an all-reduce, so there every row is written at its interval (no rank
may decide by its own clock).
"""
from __future__ import annotations

import math
import time
from typing import Any

from tubelet.engine.databound import DataBoundCheck
from tubelet.engine.meters import Window

# Long enough to share one burst's cold start among ~100 fast steps, short enough that a reader
# of metrics.jsonl (tail -f, a script waiting for a step) sees no lag that matters
FLUSH_S = 0.1


class TrainLog:
    """The rows taken (`add`) and not yet written (`flush`)."""

    def __init__(self, *, num_workers: int, world_size: int) -> None:
        self._data_bound = DataBoundCheck(num_workers=num_workers)
        self._at_once = world_size > 1
        self._rows: list[tuple[Window, dict[str, Any]]] = []
        self._flushed = -math.inf  # the first row is written at once

    def add(self, window: Window, *, logger: Any, step: int, epoch: int, epochs: int,
            progress: float, lr: float, overflow_steps: int | None = None) -> None:
        """One log interval ending at `step` (`epoch` 0-based; `progress`: epochs completed,
        fractional). `logger`: the loggers.RunLogger written to. `overflow_steps`: fp16's
        count of skipped updates, else None."""
        extra: dict[str, Any] = {"lr": lr}
        if overflow_steps is not None:
            extra["overflow_steps"] = overflow_steps
        self._rows.append((window, {"step": step, "epoch": epoch, "epochs": epochs,
                                    "progress": progress, "extra": extra}))
        if self._at_once or time.monotonic() - self._flushed >= FLUSH_S:
            self.flush(logger)

    def flush(self, logger: Any) -> None:
        """Read and write every row taken so far, in order (a device sync on a GPU)."""
        self._flushed = time.monotonic()
        rows, self._rows = self._rows, []
        for i, (window, row) in enumerate(rows):
            fields = {**window.read(), **row["extra"]}
            step = row["step"]
            logger.log({f"train/{k}": v for k, v in fields.items()}, step=step,
                       epoch=row["progress"])
            logger.progress(step=step, epoch=row["epoch"], fields=fields, epochs=row["epochs"],
                            superseded=i < len(rows) - 1)
            self._data_bound.update(step=step, num_steps=window.num_steps,
                                    data_time=fields["data_time"], step_time=fields["step_time"])
