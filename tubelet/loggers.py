"""Run logging behind one small interface: console (rich progress with ETA, or plain lines when
not a TTY), `metrics.jsonl`, TensorBoard and `log.txt`. Only rank 0 writes."""
from __future__ import annotations

import json
import logging
import logging.handlers
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tubelet.redact import RedactingFormatter
from tubelet.rundir import repair_metrics

log = logging.getLogger("tubelet")


def setup_text_log(run_dir: Path | None, *, enabled: bool = True, defer: bool = False) -> None:
    """Send the `tubelet` logger to stderr and, when a run dir is given, to `log.txt`.
    `defer`: hold the records in memory until `open_log_file` (nothing is written to a run
    dir before its checks pass; the early lines still reach log.txt then)."""
    log.setLevel(logging.INFO if enabled else logging.ERROR)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    fmt = RedactingFormatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    log.addHandler(stream)
    if defer and enabled:
        log.addHandler(logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1,
                                                      flushOnClose=False))
    if run_dir is not None and enabled:
        open_log_file(run_dir)


def open_log_file(run_dir: Path) -> None:
    """Append the log to `run_dir/log.txt` from now on, after the lines held by `defer`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    file = logging.FileHandler(run_dir / "log.txt")
    file.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    for h in [h for h in log.handlers if isinstance(h, logging.handlers.MemoryHandler)]:
        h.setTarget(file)
        h.flush()
        log.removeHandler(h)
        h.close()
    log.addHandler(file)


class RunLogger:
    """Writes scalars to metrics.jsonl, TensorBoard and the trackers (`trackers`: a
    tubelet.trackers.TrackerGroup, or None) and drives the console display."""

    TEXT_EVERY_S = 0.5  # the bar's loss/lr text changes at most this often (its redraw period)

    def __init__(self, run_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True,
                 progress: bool | None = None, trackers: Any = None) -> None:
        self.enabled, self.tensorboard = enabled, tensorboard
        self._trackers = trackers if enabled else None  # only rank 0 talks to trackers
        self.run_dir = Path(run_dir)
        self._jsonl = self._tb = None
        use_rich = sys.stderr.isatty() if progress is None else progress
        self._progress = _RichProgress() if (enabled and use_rich) else None
        self._eta = _Eta()
        self._advanced = 0.0  # when the bar last moved (monotonic seconds)
        self._shown_epoch = -1  # the epoch the bar shows (0-based)
        self._texted = -math.inf  # when the bar's loss/lr text last changed (monotonic seconds)
        self._untold: tuple[int, int, dict[str, float]] | None = None  # newer, not yet shown

    def start(self, *, total_steps: int, step: int, repair: bool = True) -> None:
        """Open the sinks at `step`. A resumed run first drops what a killed run logged after
        its checkpoint, so metrics.jsonl and TensorBoard read as one uninterrupted run.
        `repair=False` only appends (`tubelet test` adds rows to a finished run)."""
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / "metrics.jsonl"
        if repair:
            repair_metrics(path, step=step)  # rows past `step`, a torn or foreign line: dropped
        self._jsonl = open(path, "a")
        if self.tensorboard:
            # the rows at `step` itself belong to the checkpoint resumed from: keep them (at
            # step 0, a run killed before its first checkpoint: drop all it wrote, as above)
            self._tb = _TensorBoard(self.run_dir / "tensorboard",
                                    purge_step=step + 1 if repair else None)
        if self._trackers is not None:
            self._trackers.start(step=step)  # off the training thread: returns at once
        self._eta.start(total_steps=total_steps, step=step)
        if self._progress:
            self._progress.start(total_steps=total_steps, step=step)

    def log(self, metrics: dict[str, Any], *, step: int, epoch: float) -> None:
        if self._jsonl is None:
            return
        record = {"step": step, "epoch": epoch, **metrics}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()  # each row at once for a live reader (`tubelet report`, tail -f)
        if self._tb is not None:
            self._tb.scalars({k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                             step=step)
        if self._trackers is not None:
            self._trackers.log(metrics, step=step)

    def log_image(self, tag: str, image: Any, *, step: int) -> None:
        """One picture (an HxWx3 uint8 array: a confusion matrix, MAE reconstructions) to every
        sink that shows pictures. The PNG in the run dir is the caller's; this only mirrors it."""
        if self._tb is not None:
            self._tb.image(tag, image, step=step)
        if self._trackers is not None:
            self._trackers.log_image(tag, image, step=step)

    def sync(self) -> None:
        """Make the rows written so far durable (called when a checkpoint is saved)."""
        if self._jsonl is not None:
            self._jsonl.flush()
            os.fsync(self._jsonl.fileno())

    def advance(self, *, step: int, epoch: int, epochs: int) -> None:
        """Every step: move the bar to `step` (0-based `epoch`, shown 1-based). Host counters
        only, no device sync. rich redraws from its own thread at 2 Hz, so the bar is moved
        at most every 0.1 s (and at the last step and a new epoch): its update takes a lock
        and recomputes the task's speed, tens of microseconds a step on a fast loop."""
        if self._progress:
            now = time.monotonic()
            if (now - self._advanced < 0.1 and step < self._eta.total_steps
                    and epoch == self._shown_epoch):
                return
            self._advanced, self._shown_epoch = now, epoch
            self._progress.advance(step=step, epoch=f"{epoch + 1}/{epochs}")

    def progress(self, *, step: int, epoch: int, fields: dict[str, float],
                 epochs: int | None = None, superseded: bool = False) -> None:
        """Console update at a log interval: the bar's loss/lr/timings, or one plain line with
        the ETA. `epoch` is the 0-based counter; every display shows it 1-based.
        `superseded`: a newer row follows at once (rows written in a burst): the bar skips it,
        a plain line is still printed."""
        if not self.enabled:
            return
        if self._progress:  # rich redraws at 2 Hz: a newer text sooner would not be seen
            if superseded:
                return
            now = time.monotonic()
            self._untold = (step, epoch, fields)
            if now - self._texted >= self.TEXT_EVERY_S:
                self._texted, self._untold = now, None
                self._progress.update(step=step, epoch=epoch, fields=fields)
            return
        text = " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
        share = _data_share(fields)
        log.info("epoch %d%s step %d/%d %s%s eta %s", epoch + 1, f"/{epochs}" if epochs else "",
                 step, self._eta.total_steps, text, f" (data {share})" if share else "",
                 self._eta.remaining(step))

    def close(self) -> None:
        if self._progress:
            if self._untold:  # the run's last figures stay on the screen
                step, epoch, fields = self._untold
                self._progress.update(step=step, epoch=epoch, fields=fields)
            self._progress.stop()
        if self._jsonl:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._trackers is not None:
            self._trackers.close()
            self._trackers = None


class _TensorBoard:
    """TensorBoard's SummaryWriter driven from one background thread, in order. Its writing is
    pure Python (protobufs, and a CRC32C per record in a Python loop, ~100 us a record), and
    every handover wakes that thread to compete for the GIL with the training thread. So each
    row is one event holding all its scalars (not one event per scalar), and rows are held
    here until a row is logged `HANDOVER_S` seconds or more after the last handover (that row
    goes with them), an image is logged, or the logger closes: a run that logs less often than
    that hands over every row at once; a fast one shows its rows 2 s late, and the last rows
    before a long evaluation wait for its result row. The rows' durability is metrics.jsonl's
    (synced with each checkpoint); TensorBoard is rebuilt from `purge_step` on resume."""

    HANDOVER_S = 2.0

    def __init__(self, folder: Path, *, purge_step: int | None) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tubelet-tensorboard")
        self._writer: Any = None
        self._failed = False
        self._rows: list[tuple[dict[str, float], int]] = []
        self._handed = time.monotonic()
        self._submit(self._open, folder, purge_step)

    def _open(self, folder: Path, purge_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # slow import: only when used
        self._writer = SummaryWriter(str(folder), purge_step=purge_step, max_queue=1000)

    def _submit(self, fn: Any, *args: Any) -> None:
        self._pool.submit(fn, *args).add_done_callback(self._warn_once)

    def _warn_once(self, done: Any) -> None:
        if done.exception() is not None and not self._failed:
            self._failed = True  # a TensorBoard failure never stops training
            log.warning("tensorboard: %s (metrics.jsonl has every row)", done.exception())

    def scalars(self, values: dict[str, float], *, step: int) -> None:
        self._rows.append((values, step))
        if time.monotonic() - self._handed >= self.HANDOVER_S:
            self.hand_over()

    def hand_over(self) -> None:
        """Give the held rows to the writer thread (in order, after everything before)."""
        self._handed = time.monotonic()
        if self._rows:
            rows, self._rows = self._rows, []
            self._submit(self._write_rows, rows)

    def _write_rows(self, rows: list[tuple[dict[str, float], int]]) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary
        for values, step in rows:
            summary = Summary(value=[Summary.Value(tag=k, simple_value=float(v))
                                     for k, v in values.items()])
            self._writer.file_writer.add_summary(summary, step)

    def image(self, tag: str, image: Any, *, step: int) -> None:
        self.hand_over()  # the rows before it first
        self._submit(lambda: self._writer.add_image(tag, image, step, dataformats="HWC"))

    def close(self) -> None:
        """Every held and queued write done, then the event file closed."""
        self.hand_over()
        self._pool.shutdown(wait=True)
        if self._writer is not None:
            self._writer.close()


def _fmt(v: float) -> str:
    return f"{v:.3e}" if abs(v) < 1e-2 and v != 0 else f"{v:.4f}"


def _data_share(fields: dict[str, float]) -> str:
    """The share of a step spent waiting for the loader: high means the data is the bottleneck."""
    if fields.get("step_time", 0) <= 0 or "data_time" not in fields:
        return ""
    return f"{min(1.0, fields['data_time'] / fields['step_time']):.0%}"


class _Eta:
    """Time left from the mean step time since this process started training (a resumed run
    measures its own steps), as H:MM:SS."""

    def __init__(self) -> None:
        self.total_steps, self._step0, self._t0 = 0, 0, time.monotonic()

    def start(self, *, total_steps: int, step: int) -> None:
        self.total_steps, self._step0, self._t0 = total_steps, step, time.monotonic()

    def remaining(self, step: int) -> str:
        done = step - self._step0
        if done <= 0:
            return "-:--:--"
        seconds = round((self.total_steps - step) * (time.monotonic() - self._t0) / done)
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _ConsoleHandler(logging.Handler):
    """Prints log records through the progress bar's console, so they scroll above the bar
    instead of tearing it."""

    def __init__(self, console: Any) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(self.format(record), markup=False, highlight=False, soft_wrap=True)


class _RichProgress:
    """One bar for the whole run: epoch, steps, elapsed, ETA, then loss, lr, step time and the
    share of it spent waiting for data. The step counter moves every step (`advance`); loss and
    lr change at log intervals (`update`), the only moments the Trainer reads the device."""

    # (field, format): short enough that an 80-column terminal keeps the counts and the ETA
    FIELDS = (("loss", "loss {:.4g}"), ("lr", "lr {:.2e}"))

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)
        from rich.table import Column
        # The loss/lr text takes the space left and is cut first, so a narrow terminal keeps
        # the epoch, the counts and the ETA. The speed is over the last 5 min (at most 1000
        # steps, rich's window): steady, and two samples even when a step takes over 30 s.
        text = TextColumn("{task.fields[text]}",
                          table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1))
        self._bar = Progress(TextColumn("ep {task.fields[epoch]}"), BarColumn(bar_width=10),
                             MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"),
                             TimeRemainingColumn(), text, console=Console(stderr=True),
                             refresh_per_second=2, speed_estimate_period=300, expand=True)
        self._task = None
        self._handler = _ConsoleHandler(self._bar.console)
        self._moved: list[logging.Handler] = []

    def start(self, *, total_steps: int, step: int) -> None:
        # Route console log lines through the bar; the log.txt handler stays as it is.
        self._moved = [h for h in log.handlers if type(h) is logging.StreamHandler]
        for h in self._moved:
            log.removeHandler(h)
            self._handler.setFormatter(h.formatter)
        log.addHandler(self._handler)
        self._bar.start()
        self._task = self._bar.add_task("train", total=total_steps, completed=step, epoch="",
                                        text="")

    def advance(self, *, step: int, epoch: str) -> None:
        self._bar.update(self._task, completed=step, epoch=epoch)

    def update(self, *, step: int, epoch: int, fields: dict[str, float]) -> None:
        text = [form.format(fields[k]) for k, form in self.FIELDS if k in fields]
        if share := _data_share(fields):
            text.append(f"data {share}")
        if "step_time" in fields:
            text.append(f"{fields['step_time']:.3g} s/step")
        self._bar.update(self._task, completed=step, text=" ".join(text))

    def stop(self) -> None:
        self._bar.stop()
        log.removeHandler(self._handler)
        for h in self._moved:
            log.addHandler(h)
