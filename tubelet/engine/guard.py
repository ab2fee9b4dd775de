"""Preemption, Ctrl-C and the NaN/inf guard: decisions every rank must take together, at the
same step.

A signal handler only sets a flag (saving from inside a handler can deadlock in a collective or
in the allocator). Before each `optimizer.step()` every rank contributes its facts to ONE
all-reduce: "was I asked to stop, and how?", "is my loss / gradient norm finite?" and "did my
data cross the bad-file limit?". So a SIGTERM that reached only rank 0, or a NaN on rank 1 only,
is known to all ranks at the same step: they skip or stop together instead of hanging in the
next collective until the backend's timeout. Evaluation polls the stop flag between batches
(`poll_stop`), so a signal during a long eval is honoured within one eval batch.

Stop signals: SIGTERM and SIGUSR1 (schedulers; exit 75, requeue) and SIGINT (Ctrl-C; exit 130).
Each saves one checkpoint at the agreed step. A second Ctrl-C raises KeyboardInterrupt at once
(no save). Under torchrun the agent forwards the signal it gets to every worker, and after one
worker exits it sends SIGTERM to the others: a rank that is already leaving after the agreed
save ignores that, so every rank reports the same exit code.
"""
from __future__ import annotations

import logging
import os
import signal
from typing import Any

import torch

from tubelet import distributed as dist
from tubelet.registry import ConfigError

log = logging.getLogger("tubelet")
NAN_POLICIES = ("stop", "skip", "off")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
EXIT_PREEMPTED, EXIT_INTERRUPTED = 75, 130
# the stop flag's value: the highest over ranks wins, so Ctrl-C anywhere means "interrupted"
_STOP_LEVEL = {"SIGTERM": 1.0, "SIGUSR1": 1.0, "SIGINT": 2.0}


class Preempted(Exception):
    """All ranks saved a checkpoint at `step` after a stop signal; the process should exit
    with `exit_code`: 75 (requeue) after SIGTERM/SIGUSR1, 130 after Ctrl-C."""

    def __init__(self, step: int, signame: str, *, interrupted: bool = False) -> None:
        what = "interrupted" if interrupted else "preempted"
        super().__init__(f"{what} ({signame}): checkpoint saved at step {step}; run the same "
                         "command with resume=auto to continue")
        self.step = step
        self.exit_code = EXIT_INTERRUPTED if interrupted else EXIT_PREEMPTED


class NonFiniteError(Exception):
    """A non-finite loss or gradient norm; no rank applied the update of `step`."""


class StopSignals:
    """SIGTERM / SIGUSR1 / SIGINT handlers that only record the signal; a second SIGINT
    raises KeyboardInterrupt (abort without saving)."""

    def __init__(self) -> None:
        self.received: str | None = None
        self.interrupts = 0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGINT:
            self.interrupts += 1
            if self.interrupts > 1:
                raise KeyboardInterrupt
            if dist.is_main():  # os.write: no logging lock taken inside a handler
                os.write(2, b"\nCtrl-C: saving a checkpoint at the end of this step "
                            b"(press Ctrl-C again to abort without saving)\n")
        # Ctrl-C outranks a scheduler's signal: the user is at the terminal
        if self.received is None or _STOP_LEVEL[name] > _STOP_LEVEL[self.received]:
            self.received = name

    @property
    def level(self) -> float:
        return _STOP_LEVEL[self.received] if self.received else 0.0

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def leaving(self) -> None:
        """The agreed save is done and the process is on its way out: the launcher's own
        SIGTERM (torchrun sends it to the others once one rank has exited) must not turn
        this rank's exit code into -15; a Ctrl-C still aborts at once. A program that goes on
        after the stop (not the CLI) calls `restore()` to get its own handlers back."""
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __enter__(self) -> "StopSignals":
        self.install()
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        # the stops every rank takes together (signal, NaN, bad data, a recipe error found in
        # fit): the others may already be gone, and the launcher's SIGTERM must not change
        # this rank's exit code
        if exc_type is not None and issubclass(exc_type, (Preempted, NonFiniteError, ConfigError)):
            self.leaving()
        else:
            self.restore()


class StepGuard:
    """The per-step agreement. `check()` runs before `optimizer.step()` and returns whether
    to apply the update; `stop_requested` then says whether to save and exit after it, and
    `interrupted` whether the stop came from Ctrl-C (exit 130) rather than a scheduler (75)."""

    def __init__(self, *, policy: str = "stop", skip_limit: int = 3,
                 device: torch.device) -> None:
        assert policy in NAN_POLICIES, policy
        self.policy, self.skip_limit, self.device = policy, skip_limit, device
        self.signals = StopSignals()
        self.stop_requested = self.interrupted = False
        self.skipped_in_a_row = 0
        self.overflow = False  # the last check's agreed fp16 overflow
        # the loaders' bad-file lists (data.batches.BadData, `deferred`): their limit is agreed here
        self.bad_data: list[Any] = []
        self._lagged: list[_OnTheWay] = []  # `agree`'s stop/bad-file flags not yet read

    def _agree_stop(self, level: float) -> None:
        self.stop_requested, self.interrupted = level > 0, level >= _STOP_LEVEL["SIGINT"]

    def poll_stop(self) -> bool:
        """Between eval batches: has any rank been asked to stop? Also agrees on the bad-file
        limit. A collective, so every rank calls it equally often (see `run_eval`)."""
        if dist.get_world_size() == 1:
            self._agree_stop(self.signals.level)
            self.agree_bad_data(self._bad_data_flag())
            return self.stop_requested
        flags = torch.tensor([self.signals.level, self._bad_data_flag()],
                             device=dist.collective_device())
        level, bad = dist.all_reduce_max(flags).tolist()
        self._agree_stop(level)
        self.agree_bad_data(bad)
        return self.stop_requested

    def _bad_data_flag(self) -> float:
        return float(any(b.changed for b in self.bad_data))

    def agree_bad_data(self, flag: float) -> None:
        """Some rank found new bad files: every rank checks the union of all ranks' lists
        against the limit (a collective, here at the same step on every rank) and raises
        `BadDataError` (exit 2) together."""
        if flag:
            for bad in self.bad_data:
                bad.agree()

    def check(self, *, step: int, loss: torch.Tensor, grad_norm: torch.Tensor | None,
              overflow: torch.Tensor | None = None) -> bool:
        """Whether to apply the update (False: a non-finite step skipped under `skip`).
        `grad_norm` is None under fp16 loss scaling: an inf there is the scaler's business, and
        `overflow` (this rank's GradScaler found inf) is agreed instead, into `self.overflow`."""
        world, rank = dist.get_world_size(), dist.get_rank()
        self.overflow = False
        if world == 1 and self.policy == "off" and overflow is None:  # no device sync at all
            self._agree_stop(self.signals.level)
            self.agree_bad_data(self._bad_data_flag())
            return True
        # slot 0: a rank was asked to stop (2: by Ctrl-C); slot 1: a rank found new bad files;
        # slot 2: a rank's fp16 gradients overflowed; slot 3 + r: rank r's loss is non-finite
        # (2) or only its gradient norm is (1). DDP averages gradients, so one rank's NaN loss
        # makes every rank's norm NaN: the loss slots say where it started.
        flags = torch.zeros(world + 3, device=self.device)
        flags[0] = self.signals.level
        flags[1] = self._bad_data_flag()
        if overflow is not None:
            flags[2] = overflow.to(self.device)
        if self.policy != "off":
            bad = (~torch.isfinite(loss)).float() * 2
            if grad_norm is not None:
                bad = torch.maximum(bad, (~torch.isfinite(grad_norm)).float())
            flags[3 + rank] = bad
        flags = dist.all_reduce_max(flags.to(dist.collective_device())).tolist()  # the one sync
        self._agree_stop(flags[0])
        self.agree_bad_data(flags[1])
        self.overflow = flags[2] > 0
        return self._nonfinite(step, flags[3:])

    def check_host_only(self) -> None:
        """One process, NaN check on the device (engine/nan_check.py): agree on the stop
        signal and the bad-file limit without touching the device. Per step: two reads when
        neither happened."""
        if self.signals.received is not None:  # once received, a signal is never withdrawn
            self._agree_stop(self.signals.level)
        if self.bad_data and self._bad_data_flag():
            self.agree_bad_data(1.0)

    def agree(self, code: torch.Tensor) -> torch.Tensor:
        """Several ranks, NaN check on the device: this rank's verdict `code` (0-dim: 2 its
        loss, 1 only its gradients are non-finite) goes into the one per-step all-reduce with
        the stop and bad-file flags; returns every rank's code (on the device, unread)."""
        world, rank = dist.get_world_size(), dist.get_rank()
        flags = torch.zeros(world + 2, device=self.device)
        flags[0] = self.signals.level
        flags[1] = self._bad_data_flag()
        flags[2 + rank] = code
        flags = dist.all_reduce_max(flags.to(dist.collective_device()))
        # The stop/bad-file flags are read one step late: by then their all-reduce has long
        # finished, so on a GPU the host waits for it alone, not for this step's backward
        # (a `.tolist()` here would be a device sync per step). Every rank reads the same
        # step's flags at the same step, so they still stop together, one step later.
        self._lagged.append(_OnTheWay(flags[:2]))
        if len(self._lagged) > 1:
            self._read_lagged(self._lagged.pop(0))
        return flags[2:].to(self.device)

    def drain(self) -> None:
        """Read the stop/bad-file flags `agree` has not read yet: at every point where the
        ranks sync anyway (log line, checkpoint, evaluation), so none is left behind."""
        while self._lagged:
            self._read_lagged(self._lagged.pop(0))

    def _read_lagged(self, flags: _OnTheWay) -> None:
        level, bad = flags.read()
        if not self.stop_requested:  # a stop, once agreed, stays agreed
            self._agree_stop(level)
        self.agree_bad_data(bad)

    def verdict(self, step: int, codes: list[float]) -> bool:
        """The policy for one step's per-rank codes (see `_nonfinite`)."""
        return self._nonfinite(step, codes)

    def _nonfinite(self, step: int, flags: list[float]) -> bool:
        world = len(flags)
        if not any(flags):
            self.skipped_in_a_row = 0
            return True
        loss_ranks = [r for r in range(world) if flags[r] == 2]
        what = "loss" if loss_ranks else "gradient norm"
        ranks = loss_ranks or [r for r in range(world) if flags[r] > 0]
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


class _OnTheWay:
    """A small device tensor on its way to the host: on CUDA a non-blocking copy (into pinned
    memory) and an event, waited for only when read; elsewhere the tensor itself."""

    def __init__(self, t: torch.Tensor) -> None:
        self.host, self.event = t, None
        if t.is_cuda:
            self.host = t.to("cpu", non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()

    def read(self) -> list[float]:
        if self.event is not None:
            self.event.synchronize()
        return self.host.tolist()
