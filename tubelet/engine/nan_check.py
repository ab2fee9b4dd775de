"""The NaN/inf guard decided on the device, so a training step needs no device sync for it.

Every step, one kernel (`torch._amp_foreach_non_finite_check_and_unscale_`, the GradScaler's
own check, with a scale of 1) sets a 0-dim flag when the loss or any gradient (the gradient
norm when clipping computed it) is non-finite. The optimizer takes that flag as its
`found_inf` and skips the update on the device (torch's fused AdamW/SGD kernels and our LARS
honour it; a fused Adam also leaves its step count alone). One process on the CPU has no
device to sync with, so there the trainer reads the flag at once (`check_now`), skips the
`step()` call instead (the same outcome, without the kernels' found_inf bookkeeping) and applies
the policy at that step. So no update is ever applied from a non-finite gradient. Elsewhere the
host only learns about it when it next reads: at the next log line, checkpoint, evaluation or
the end of the run (`settle`). There the steps are replayed in order through `StepGuard`'s
policy, with its messages: `stop` raises NonFiniteError (exit 3) naming the first bad step,
`skip` warns per skipped step and raises after more than `nan_skip_limit` in a row. Steps after
a non-finite one run on until that read (their finite updates apply) but nothing of them is
saved or evaluated under `stop`, which raises first.

On several ranks every rank's verdict (2: its loss, 1: only its gradients) goes into the
guard's one per-step all-reduce, and the agreed flag (any rank) is what every optimizer sees:
ranks skip together. That all-reduce also carries the stop signals and the bad-file flag; the
host reads them one step late (`StepGuard.agree`), when the all-reduce has long finished, so a
GPU run waits for no step's backward there: ranks stop together one step after the signal.
"""
from __future__ import annotations

from typing import Any

import torch

from tubelet.engine.guard import StepGuard


def _local(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's shard (FSDP2): the check is per rank and the verdicts are all-reduced."""
    to_local = getattr(t, "to_local", None)
    return to_local() if to_local is not None else t


class DeviceNanCheck:
    """Per-step non-finite flags kept on the device; `settle()` reads them in one go."""

    def __init__(self, guard: StepGuard, *, device: torch.device, world_size: int) -> None:
        self.guard, self.device, self.world_size = guard, device, world_size
        # one process on the CPU: the flag is host memory, so the trainer may read it per step
        # (no device to sync with) and skip the step() call instead of passing found_inf
        self.host_readable = device.type == "cpu" and world_size == 1
        self._one = torch.ones((), device=device)
        self._found = torch.zeros((), device=device)  # check_now's flag: zero between steps
        self._free: list[torch.Tensor] = []  # zeroed flags for reuse: no allocation per step
        # since the last settle: (step, flag, loss) on one rank, (step, per-rank codes) on more
        self._pending: list[tuple[Any, ...]] = []

    def _flag(self) -> torch.Tensor:
        return self._free.pop() if self._free else torch.zeros((), device=self.device)

    def check_now(self, *, step: int, loss: torch.Tensor, grads: list[torch.Tensor]) -> bool:
        """One CPU process (`host_readable`): whether to apply this update, decided now. A
        non-finite step goes through the guard's policy at once (may raise NonFiniteError).
        Also agrees on stop signals and bad data. Per step: the check's one kernel and one
        read of host memory, nothing kept."""
        found = self._found
        torch._amp_foreach_non_finite_check_and_unscale_([*grads, loss], found, self._one)
        self.guard.check_host_only()
        if not found.item():
            if self.guard.skipped_in_a_row:  # a finite step ends a run of skipped ones
                self.guard.verdict(step, [0.0])
            return True
        found.zero_()
        return self.guard.verdict(step, [1.0 if torch.isfinite(loss).item() else 2.0])

    def check(self, *, step: int, loss: torch.Tensor, grads: list[torch.Tensor]) -> torch.Tensor:
        """The flag (0-dim float, 1.0 = skip this update) for `optimizer.found_inf`. `grads`:
        the gradients, or `[grad_norm]` when clipping computed it. Also agrees on stop
        signals and bad data, as `StepGuard.check` does."""
        if self.world_size == 1:  # one GPU
            found = self._flag()
            torch._amp_foreach_non_finite_check_and_unscale_([*grads, loss], found, self._one)
            self._pending.append((step, found, loss))
            self.guard.check_host_only()
            return found
        loss_bad, grad_bad = self._flag(), self._flag()
        torch._amp_foreach_non_finite_check_and_unscale_([loss], loss_bad, self._one)
        torch._amp_foreach_non_finite_check_and_unscale_([_local(g) for g in grads], grad_bad,
                                                         self._one)
        code = torch.maximum(loss_bad * 2, grad_bad)
        loss_bad.zero_(), grad_bad.zero_()
        self._free += [loss_bad, grad_bad]
        codes = self.guard.agree(code)  # the one all-reduce: agreed on every rank
        self._pending.append((step, codes))
        return (codes.amax() > 0).float()

    def settle(self) -> None:
        """Replay the steps since the last read through the guard's policy (raises
        NonFiniteError under `stop`, or past the skip limit). One host read."""
        self.guard.drain()  # the stop/bad-file flags of the last step (several ranks)
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if self.world_size == 1:
            flags = torch.stack([f for _, f, _ in pending]).tolist()
            finite = torch.isfinite(torch.stack([loss.float() for _, _, loss in pending])).tolist()
            codes = [[0.0 if not bad else 1.0 if ok else 2.0] for bad, ok in zip(flags, finite)]
            founds = [f for _, f, _ in pending]
            torch._foreach_zero_(founds)
            self._free += founds
        else:
            codes = torch.stack([c for _, c in pending]).tolist()
        for (step, *_), step_codes in zip(pending, codes):
            self.guard.verdict(step, step_codes)
