"""Preemption and the NaN/inf guard: decisions every rank must take together, at the same step.

A signal handler only sets a flag (saving from inside a handler can deadlock in a collective or
in the allocator). Before each `optimizer.step()` every rank contributes two facts to ONE
all-reduce: "was I asked to stop?" and "is my loss / gradient norm finite?". So a SIGTERM that
reached only rank 0, or a NaN on rank 1 only, is known to all ranks at the same step: they skip
or stop together instead of hanging in the next collective until the backend's timeout.
"""
from __future__ import annotations

import logging
import signal
from typing import Any

import torch

from tubelet import distributed as dist

log = logging.getLogger("tubelet")
NAN_POLICIES = ("stop", "skip", "off")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    """All ranks saved a checkpoint at `step` after a stop signal; the process should exit
    with `cli.EXIT_PREEMPTED` so a scheduler requeues it."""

    def __init__(self, step: int, signame: str) -> None:
        super().__init__(f"preempted ({signame}): checkpoint saved at step {step}; run the same "
                         "command with resume=auto to continue")
        self.step = step


class NonFiniteError(Exception):
    """A non-finite loss or gradient norm; no rank applied the update of `step`."""


class StopSignals:
    """SIGTERM / SIGUSR1 handlers that only record the signal."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signal.Signals(signum).name

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __enter__(self) -> "StopSignals":
        self.install()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restore()


class StepGuard:
    """The per-step agreement. `check()` runs before `optimizer.step()` and returns whether
    to apply the update; `stop_requested` then says whether to save and exit after it."""

    def __init__(self, *, policy: str = "stop", skip_limit: int = 3,
                 device: torch.device) -> None:
        assert policy in NAN_POLICIES, policy
        self.policy, self.skip_limit, self.device = policy, skip_limit, device
        self.signals = StopSignals()
        self.stop_requested = False
        self.skipped_in_a_row = 0

    def check(self, *, step: int, loss: torch.Tensor, grad_norm: torch.Tensor | None) -> bool:
        world, rank = dist.get_world_size(), dist.get_rank()
        if world == 1 and self.policy == "off":  # nothing to agree on: no device sync at all
            self.stop_requested = self.signals.received is not None
            return True
        # slot 0: a rank was asked to stop; slot 1 + r: rank r's loss is non-finite (2) or
        # only its gradient norm is (1). DDP averages gradients, so one rank's NaN loss makes
        # every rank's norm NaN: the loss slots say where it started.
        flags = torch.zeros(world + 1, device=self.device)
        flags[0] = float(self.signals.received is not None)
        if self.policy != "off":
            bad = (~torch.isfinite(loss)).float() * 2
            if grad_norm is not None:
                bad = torch.maximum(bad, (~torch.isfinite(grad_norm)).float())
            flags[1 + rank] = bad
        flags = dist.all_reduce_max(flags.to(dist.collective_device())).tolist()  # the one sync
        self.stop_requested = flags[0] > 0
        if not any(flags[1:]):
            self.skipped_in_a_row = 0
            return True
        loss_ranks = [r for r in range(world) if flags[1 + r] == 2]
        what = "loss" if loss_ranks else "gradient norm"
        ranks = loss_ranks or [r for r in range(world) if flags[1 + r] > 0]
        where = f"non-finite {what} at step {step}" + (f" on rank(s) {ranks}" if world > 1 else "")
        if self.policy == "stop":
            raise NonFiniteError(f"train: {where}; no rank applied the update "
                                 "(train.nan_guard=skip skips such steps instead)")
        self.skipped_in_a_row += 1
        if self.skipped_in_a_row > self.skip_limit:
            raise NonFiniteError(f"train: {self.skipped_in_a_row} non-finite steps in a row, more "
                                 f"than train.nan_skip_limit={self.skip_limit}; the last: {where}")
        log.warning("%s: update skipped on all ranks (%d in a row)", where, self.skipped_in_a_row)
        return False
