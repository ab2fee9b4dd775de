"""fp16 loss scaling agreed across ranks.

An fp16 overflow (inf/NaN gradients under `torch.amp.GradScaler`) is not a failure: the
scaler skips the update and lowers the scale. With FSDP2 each rank unscales only its own
gradient shard, so ranks may disagree on whether there was an overflow; the Trainer puts this
rank's flag into its one per-step all-reduce and, when any rank overflowed, marks the overflow
on every rank, so `scaler.step` skips and `scaler.update` lowers the scale on all ranks alike
(what torch's ShardedGradScaler does for FSDP1 with a separate all-reduce). The same code runs
on CUDA and, for tests, on CPU.
"""
from __future__ import annotations

import torch


def _found_inf(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer
               ) -> list[torch.Tensor]:
    # the scaler's record of this step's unscale_ (a private field; ShardedGradScaler and
    # tests/engine/test_trainer.py rely on it too, so a torch upgrade that renames it fails loudly)
    return list(scaler._per_optimizer_states[id(optimizer)]["found_inf_per_device"].values())


def unscale(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer
            ) -> torch.Tensor | None:
    """Unscale the gradients in place; a 0-dim tensor, 1 when this rank's overflowed.
    None when the scaler is disabled (no fp16)."""
    if not scaler.is_enabled():
        return None
    scaler.unscale_(optimizer)
    found = _found_inf(scaler, optimizer)
    device = found[0].device if found else torch.device("cpu")
    return torch.stack([f.to(device) for f in found]).amax() if found else torch.zeros(())


def mark_overflow(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> None:
    """Another rank overflowed: make this rank's scaler skip the step and back off too."""
    for found in _found_inf(scaler, optimizer):
        found.fill_(1.0)
