"""One evaluation pass, shared by `Trainer.evaluate` and `tubelet eval`."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from tubelet.tasks.base import Task


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    nb = device.type == "cuda"  # pairs with pin_memory in the loader
    return {k: v.to(device, non_blocking=nb) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def run_eval(model: nn.Module, task: Task, loader: DataLoader, *, device: torch.device,
             amp_dtype: torch.dtype | None = None) -> dict[str, float]:
    """One pass over `loader`; the task's metrics, reduced across ranks, keyed `val/...`."""
    was_training = model.training
    model.eval()
    task.reset_metrics()
    for batch in loader:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            task.eval_step(model, to_device(batch, device))
    model.train(was_training)
    return {f"val/{k}": v for k, v in task.compute_metrics().items()}
