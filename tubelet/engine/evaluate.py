"""One evaluation pass, shared by `Trainer.evaluate` and `tubelet eval`."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from tubelet import distributed as dist
from tubelet.tasks.base import Task


class EvalAbandoned(Exception):
    """Every rank agreed to stop (a stop signal) in the middle of an evaluation."""


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    nb = device.type == "cuda"  # pairs with pin_memory in the loader
    return {k: v.to(device, non_blocking=nb) if torch.is_tensor(v) else v for k, v in batch.items()}


def _num_polls(loader: DataLoader) -> int:
    """How often every rank polls: the most batches any rank holds. Ranks hold different
    numbers of eval batches (no padding duplicates), and a poll is a collective."""
    n = torch.tensor([float(len(loader))], device=dist.collective_device())
    return int(dist.all_reduce_max(n).item())


@torch.no_grad()
def run_eval(model: nn.Module, task: Task, loader: DataLoader, *, device: torch.device,
             amp_dtype: torch.dtype | None = None,
             should_stop: Callable[[], bool] | None = None,
             prefix: str = "val") -> dict[str, float]:
    """One pass over `loader`; the task's metrics, reduced across ranks, keyed `<prefix>/...`
    (`val/acc1`; the test stage's `test/acc1`).
    `should_stop` (an agreement across ranks, e.g. `StepGuard.poll_stop`) is called before
    every batch, and as often on a rank that ran out of batches, then once more, so all ranks
    call it equally often; when it says stop, `EvalAbandoned` is raised on every rank."""
    was_training = model.training
    model.eval()
    task.reset_metrics()
    polls = _num_polls(loader) if should_stop is not None else 0
    try:
        done = 0
        for batch in loader:
            if should_stop is not None:
                done += 1
                if should_stop():
                    raise EvalAbandoned
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                task.eval_step(model, to_device(batch, device))
        # this rank is out of batches, the others may not be; the last poll, after every
        # rank's last batch, agrees on bad files that batch found
        for _ in range(done, polls + 1 if should_stop is not None else 0):
            if should_stop():
                raise EvalAbandoned
    finally:
        model.train(was_training)
    return {f"{prefix}/{k}": v for k, v in task.compute_metrics().items()}
