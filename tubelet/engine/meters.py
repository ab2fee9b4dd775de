"""Training meters kept on the device, so a step needs no GPU->CPU sync between log lines."""
from __future__ import annotations

import time
from typing import Any

import torch

from tubelet import distributed as dist


class Meters:
    """Loss, step time and data time, summed on the device and read only at log intervals."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.grad_norm: torch.Tensor | None = None
        self._reset()
        self.tick()

    def _reset(self) -> None:
        self.loss_sum = torch.zeros((), device=self.device)
        self.num_losses, self.num_steps, self.step_time, self.data_time = 0, 0, 0.0, 0.0

    def tick(self) -> None:
        self._last = self._step_start = time.perf_counter()

    def data_done(self) -> None:
        """The loader handed over a batch: the wait since the last compute counts as data time."""
        now = time.perf_counter()
        self.data_time += now - self._last
        self._last = now

    def add_loss(self, loss: torch.Tensor) -> None:
        """`loss`: a detached float32 0-dim tensor."""
        self.loss_sum += loss
        self.num_losses += 1

    def compute_done(self, *, stepped: bool) -> None:
        now = self._last = time.perf_counter()
        if stepped:  # step time: wall time per optimizer step, data wait included
            self.step_time += now - self._step_start
            self._step_start = now
            self.num_steps += 1

    def state_dict(self) -> dict[str, Any]:
        """The loss window since the last log line, so a resumed run logs the same means."""
        return {"loss_sum": self.loss_sum.cpu(), "num_losses": self.num_losses}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss_sum = state["loss_sum"].to(self.device)
        self.num_losses = state["num_losses"]

    def read(self) -> dict[str, float]:
        """The means since the last read. A collective: the loss is the mean over all ranks
        (every rank reads at the same step), the times are this rank's."""
        loss_sum = dist.all_reduce_sum(self.loss_sum.clone())
        num_losses = max(1, self.num_losses) * dist.get_world_size()
        fields = {"loss": loss_sum.item() / num_losses,
                  "step_time": self.step_time / max(1, self.num_steps),
                  "data_time": self.data_time / max(1, self.num_steps)}
        if self.grad_norm is not None:
            fields["grad_norm"] = float(self.grad_norm)
        self._reset()
        return fields
