"""Training meters kept on the device, so a step needs no GPU->CPU sync between log lines."""
from __future__ import annotations

import math
import struct
import time
from typing import Any

import torch

from tubelet import distributed as dist

MAX_KEPT = 1024  # losses held between reads; then folded into one (a host read)
_FLOAT32 = struct.Struct("f")


def _to_float32(x: float) -> float:
    """`x` rounded to float32. A float32 sum computed in float64 and rounded so is the float32
    sum exactly: 53 bits >= 2 * 24 + 2 makes the double rounding innocuous (Figueroa, 1995)."""
    try:
        return _FLOAT32.unpack(_FLOAT32.pack(x))[0]
    except OverflowError:  # beyond float32's range: what float32 arithmetic gives
        return math.copysign(math.inf, x)


def _sum_float32(losses: list[torch.Tensor]) -> float:
    """`losses` summed in order in float32, as a running `+=` on the device gives, so the
    logged mean is the same to the bit however often it is read or resumed. One host read (a
    device sync on a GPU). Plain Python, not numpy: between the model's kernels numpy's first
    calls cost ~20 us each (cold caches)."""
    total = 0.0
    if losses:
        for value in torch.stack(losses).tolist():
            total = _to_float32(total + value)
    return total


class Window:
    """One log interval's figures, taken by `Meters.snapshot`. The losses stay on the device
    until `read`, so a snapshot costs no sync and may be read later (engine/train_log.py)."""

    __slots__ = ("device", "losses", "num_losses", "num_steps", "step_time", "data_time",
                 "grad_norm")

    def __init__(self, device: torch.device, losses: list[torch.Tensor], num_losses: int,
                 num_steps: int, step_time: float, data_time: float,
                 grad_norm: torch.Tensor | None) -> None:
        self.device, self.losses, self.num_losses = device, losses, num_losses
        self.num_steps = num_steps
        self.step_time, self.data_time, self.grad_norm = step_time, data_time, grad_norm

    def read(self) -> dict[str, float]:
        """The interval's means. A collective: the loss is the mean over all ranks (every rank
        reads the same interval), the times are this rank's."""
        loss_sum, world = _sum_float32(self.losses), dist.get_world_size()
        if world > 1:  # the sum over ranks, in float32 as each rank's
            loss_sum = dist.all_reduce_sum(torch.tensor(loss_sum, dtype=torch.float32,
                                                        device=self.device)).item()
        fields = {"loss": loss_sum / (max(1, self.num_losses) * world),
                  "step_time": self.step_time / max(1, self.num_steps),
                  "data_time": self.data_time / max(1, self.num_steps)}
        if self.grad_norm is not None:
            fields["grad_norm"] = float(self.grad_norm)
        return fields


class Meters:
    """Loss, step time and data time, kept on the device and read only at log intervals."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.grad_norm: torch.Tensor | None = None
        self._reset()
        self.tick()

    def _reset(self) -> None:
        # the window's losses, summed only when read: a list append per step instead of an
        # add kernel per step (a ~10 us dispatch between the model's kernels on one CPU core)
        self._losses: list[torch.Tensor] = []
        self.num_losses, self.num_steps, self.step_time, self.data_time = 0, 0, 0.0, 0.0

    def tick(self) -> None:
        self._last = self._step_start = time.perf_counter()

    def data_done(self) -> None:
        """The loader handed over a batch: the wait since the last compute counts as data time."""
        now = time.perf_counter()
        self.data_time += now - self._last
        self._last = now

    def add_loss(self, loss: torch.Tensor) -> None:
        """`loss`: a detached float32 0-dim tensor (kept until the window is read)."""
        self._losses.append(loss)
        self.num_losses += 1
        if len(self._losses) >= MAX_KEPT:  # a long log interval: fold, keeping the order
            self._losses = [torch.tensor(_sum_float32(self._losses), dtype=torch.float32,
                                         device=self.device)]

    def compute_done(self, *, stepped: bool) -> None:
        now = self._last = time.perf_counter()
        if stepped:  # step time: wall time per optimizer step, data wait included
            self.step_time += now - self._step_start
            self._step_start = now
            self.num_steps += 1

    def state_dict(self) -> dict[str, Any]:
        """The loss window since the last log line, so a resumed run logs the same means."""
        return {"loss_sum": torch.tensor(_sum_float32(self._losses), dtype=torch.float32),
                "num_losses": self.num_losses}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._losses = [state["loss_sum"].to(self.device)]
        self.num_losses = state["num_losses"]

    def snapshot(self) -> Window:
        """The interval since the last snapshot, unread; a new interval starts."""
        window = Window(self.device, self._losses, self.num_losses, self.num_steps,
                        self.step_time, self.data_time, self.grad_norm)
        self._reset()
        return window

    def read(self) -> dict[str, float]:
        """The means since the last read (a collective: see `Window.read`)."""
        return self.snapshot().read()
